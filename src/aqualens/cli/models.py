"""``aqualens models ...`` (the registry) and ``aqualens predict`` (files, offline or not).

``predict_command`` is kept in its own function so the processing engine can extend
``aqualens predict`` with ``--collection/--query`` (runs as jobs) without touching the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from aqualens.cli.common import (cli_user, console, context, emit, handle_errors, progress)
from aqualens.core.errors import ValidationError

models_app = typer.Typer(help="Register, list, export and import models.", no_args_is_help=True)

LIST_COLUMNS = ["id", "name", "version", "task", "runtime", "labels", "licence", "visibility",
                "pid"]


def _row(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "labels": len(d.get("labels") or []), "pid": d["pid"][:19] + "…"}


@models_app.command("add")
@handle_errors
def add(artefact: Optional[Path] = typer.Argument(
            None, help="ONNX (.onnx) or TorchScript (.pt) file; omit with --deepaas."),
        name: str = typer.Option(..., "--name", help="Model name."),
        version: str = typer.Option(..., "--version", help="Semantic version, e.g. 1.0.0."),
        task: str = typer.Option("classify", "--task", help="classify|detect|segment|embed"),
        labels: Optional[Path] = typer.Option(
            None, "--labels", help="Labels: JSON list of names or {name, aphia_id}, or a text "
                                   "file with one name per line (optionally 'name<TAB>aphia')."),
        input_spec: Optional[str] = typer.Option(
            None, "--input-spec", help='JSON, e.g. {"height": 224, "width": 224, '
                                       '"mean": [0.485, 0.456, 0.406], "std": [...]}'),
        runtime: Optional[str] = typer.Option(None, "--runtime", help="onnx|torchscript|deepaas"),
        deepaas: Optional[str] = typer.Option(
            None, "--deepaas", help="Host a DEEPaaS module (entry point name, e.g. deepaas-test)"),
        card: Optional[Path] = typer.Option(None, "--card", help="Markdown model card."),
        metrics: Optional[Path] = typer.Option(None, "--metrics", help="Metrics JSON file."),
        licence: Optional[str] = typer.Option(None, "--licence"),
        keywords: str = typer.Option("", "--keywords", help="Comma-separated."),
        description: str = typer.Option("", "--description"),
        public: bool = typer.Option(False, "--public", help="Visible to everyone."),
        fmt: str = typer.Option("table", "--format")) -> None:
    """Register a model (artefact stored in the blob store; its sha256 is the PID)."""
    import tempfile

    from aqualens.models.base import ModelInfo
    from aqualens.models.registry import guess_runtime, model_dict, register_model

    ctx = context()
    user = cli_user(ctx)
    meta: dict[str, Any] = {"name": name, "version": version, "task": task,
                            "labels": _read_labels(labels) if labels else [],
                            "input_spec": _json_arg(input_spec, "--input-spec") or {},
                            "licence": licence, "description": description,
                            "keywords": [k.strip() for k in keywords.split(",") if k.strip()],
                            "card": card.read_text() if card else ""}
    with tempfile.TemporaryDirectory() as tmp:
        if deepaas:
            from aqualens.models.deepaas_adapter import info_for_module, write_descriptor

            base = info_for_module(deepaas, name=name, version=version, task=task)
            meta = {**base.to_dict(), **{k: v for k, v in meta.items() if v}}
            meta["runtime"] = "deepaas"
            path = write_descriptor(deepaas, Path(tmp))
        else:
            if artefact is None:
                raise ValidationError("an artefact file is required (or --deepaas MODULE)",
                                      field="ARTEFACT")
            meta["runtime"] = runtime or guess_runtime(artefact)
            path = artefact
        info = ModelInfo.from_dict(meta)
        with ctx.session() as s:
            m = register_model(s, ctx.store, path, info, user.id,
                               metrics=json.loads(metrics.read_text()) if metrics else None,
                               visibility="public" if public else "private")
            d = model_dict(m, owner_name=user.name)
    emit([_row(d)] if fmt != "json" else [d], fmt, LIST_COLUMNS)


def _json_arg(value: str | None, field: str) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValidationError(f"{field} is not valid JSON: {exc}", field=field) from None


def _read_labels(path: Path) -> list[Any]:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = _json_arg(text, str(path))
        if not isinstance(data, list):
            raise ValidationError("labels JSON must be a list", field=str(path))
        return data
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, aphia = line.partition("\t")
        out.append({"name": name.strip(), "aphia_id": int(aphia) if aphia.strip() else None})
    return out


@models_app.command("list")
@handle_errors
def list_(task: Optional[str] = typer.Option(None, "--task"),
          q: Optional[str] = typer.Option(None, "--search"),
          fmt: str = typer.Option("table", "--format")) -> None:
    """Models on this instance."""
    from aqualens.models.registry import list_models, model_dict

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        rows = [model_dict(m) for m in list_models(s, user, task=task, text=q)]
    emit(rows if fmt == "json" else [_row(r) for r in rows], fmt, LIST_COLUMNS, title="Models")


@models_app.command("show")
@handle_errors
def show(ref: str = typer.Argument(..., help="id, name or name@version")) -> None:
    """Everything about one model (JSON)."""
    from aqualens.models.registry import get_model, model_dict

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        typer.echo(json.dumps(model_dict(get_model(s, ref, user)), indent=2, default=str))


@models_app.command("export")
@handle_errors
def export(ref: str = typer.Argument(...),
           out: Path = typer.Option(..., "--out", "-o", help="Package file (.aqlmodel).")) -> None:
    """Write the model as one package file for offline use or another instance."""
    from aqualens.models.package import export_package

    ctx = context()
    path, model = export_package(ctx, ref, cli_user(ctx), out)
    console.print(f"wrote {path} ({path.stat().st_size} bytes) — {model.name} {model.version}, "
                  f"pid sha256:{model.artefact_sha256}")


@models_app.command("import")
@handle_errors
def import_(package: Path = typer.Argument(..., help="A .aqlmodel package."),
            public: bool = typer.Option(False, "--public")) -> None:
    """Register the model in a package (verified member by member first)."""
    from aqualens.models.package import import_package

    ctx = context()
    user = cli_user(ctx)
    m = import_package(ctx, package, user.id, visibility="public" if public else "private")
    console.print(f"imported {m.name} {m.version} as model {m.id}, "
                  f"pid sha256:{m.artefact_sha256}")


@models_app.command("delete")
@handle_errors
def delete(ref: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Delete a model (annotations it produced stay)."""
    from aqualens.models.registry import delete_model

    if not yes:
        typer.confirm(f"delete model {ref}?", abort=True)
    ctx = context()
    d = delete_model(ctx, ref, cli_user(ctx))
    console.print(f"deleted {d['name']} {d['version']}")


def _visibility(ref: str, value: str) -> None:
    from aqualens.models.registry import update_model

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        m = update_model(s, ref, user, visibility=value)
        console.print(f"{m.name} {m.version} is now {m.visibility}")


@models_app.command("publish")
@handle_errors
def publish(ref: str = typer.Argument(...)) -> None:
    """Make a model public."""
    _visibility(ref, "public")


@models_app.command("unpublish")
@handle_errors
def unpublish(ref: str = typer.Argument(...)) -> None:
    """Make a model private again."""
    _visibility(ref, "private")


def predict_command(model: str = typer.Option(..., "--model", "-m",
                                              help="A .aqlmodel package (offline) or a "
                                                   "registered model (id, name, name@version)."),
                    sources: Optional[list[Path]] = typer.Argument(None, help="Image files or folders."),
                    out: Optional[Path] = typer.Option(None, "--out", "-o", help="results.csv or .json"),
                    collection: Optional[str] = typer.Option(
                        None, "--collection", help="Catalogue collection: runs as a job."),
                    query: Optional[str] = typer.Option(
                        None, "--query", help="Search as JSON or k=v,k=v: runs as a job."),
                    detach: bool = typer.Option(False, "--detach", help="Queue the job, don't wait."),
                    top_k: int = typer.Option(5, "--top-k"),
                    threshold: float = typer.Option(0.0, "--threshold"),
                    batch_size: Optional[int] = typer.Option(
                        None, "--batch-size",
                        help="Images per model call (files: 16; a job: 128)."),
                    chunk_size: Optional[int] = typer.Option(
                        None, "--chunk-size", help="Images per Dask task of a job (512)."),
                    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda")) -> None:
    """Run a model on image files. With a package file nothing else is needed: no server, no
    catalogue, no network."""
    from aqualens.models.offline import iter_sources, write_results
    from aqualens.models.package import is_package, open_package
    from aqualens.services.predict import check_options

    top_k, threshold = check_options(top_k, threshold)
    if collection is not None or query is not None:  # catalogue reanalysis: a job (processing)
        from aqualens.cli.jobs import predict_job

        return predict_job(model, collection, query, top_k, threshold, batch_size, detach,
                           chunk_size=chunk_size)
    batch_size = batch_size or 16
    if not sources or out is None:
        raise ValidationError("give image files and --out, or --collection/--query",
                              field="SOURCES", valid="SOURCES... --out results.csv")
    if out.suffix.lower() not in (".csv", ".json"):
        raise ValidationError(f"cannot write results as {out.suffix or 'no suffix'}",
                              field="--out", valid=".csv or .json")
    files = iter_sources(sources)
    if not files:
        raise ValidationError("no image files found", field="SOURCES")
    if is_package(Path(model)):
        with open_package(Path(model)) as pkg:
            from aqualens.models.warm import runtime_from_files

            runtime = runtime_from_files(pkg.artefact, pkg.info, device=device)
            rows = _run(runtime, files, top_k, threshold, batch_size)
            write_results(out, rows, pkg.info, f"sha256:{pkg.artefact_sha256}")
            info = pkg.info
    else:
        from aqualens.models.registry import get_model, model_info
        from aqualens.models.warm import load_runtime

        ctx = context()
        user = cli_user(ctx)
        with ctx.session() as s:
            m = get_model(s, model, user)
            info, mid, pid = model_info(m), m.id, f"sha256:{m.artefact_sha256}"
        runtime = load_runtime(ctx, mid, device=device)
        rows = _run(runtime, files, top_k, threshold, batch_size)
        write_results(out, rows, info, pid)
    bad = sum(1 for r in rows if "error" in r)
    console.print(f"{info.name} {info.version}: {len(rows) - bad} images predicted"
                  + (f", {bad} unreadable" if bad else "") + f" → {out}")


def _run(runtime, files: list[Path], top_k: int, threshold: float,  # noqa: ANN001
         batch_size: int) -> list[dict[str, Any]]:
    from aqualens.models.offline import predict_files

    with progress() as bar:
        task = bar.add_task("predict", total=len(files))
        return predict_files(runtime, files, top_k=top_k, threshold=threshold,
                             batch_size=batch_size, progress=lambda n: bar.advance(task, n))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("predict")(handle_errors(predict_command))
