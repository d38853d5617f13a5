"""``aqualens datasets freeze|list|show|diff|export``, ``aqualens train`` and ``aqualens evaluate``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Optional

import typer

from aqualens.cli.common import cli_user, console, context, emit, err_console, handle_errors

datasets_app = typer.Typer(help="Frozen, versioned training datasets (name@N) with splits.",
                           no_args_is_help=True)
LIST_COLUMNS = ["ref", "task", "images", "annotations", "labels", "splits", "manifest_sha256"]
EPOCH_RE = re.compile(r"^epoch (\d+)/(\d+) loss (\S+) val (\S+) (\S+) best \S+ eta (\d+)s")


@datasets_app.command("freeze")
@handle_errors
def freeze_cmd(name: str = typer.Argument(..., help="Dataset name; the version number is next."),
               collection: Optional[str] = typer.Option(None, "--collection", "-c",
                                                        help="Collection id or name."),
               query: Optional[str] = typer.Option(None, "--query", help="ImageQuery as JSON, "
                                                   'e.g. \'{"label": "Copepoda"}\'.'),
               status: list[str] = typer.Option(["validated"], "--status",
                                                help="Annotation statuses to include (repeat)."),
               split: str = typer.Option("80/10/10", "--split",
                                         help="train/val/test fractions or train=0.8,test=0.2"),
               seed: int = typer.Option(0, "--seed"),
               group_by: Optional[str] = typer.Option(
                   None, "--group-by", help="Keep groups in one split: station, instrument, "
                   "meta.KEY or name:REGEX (group 1 of the regex names the group)."),
               split_file: list[str] = typer.Option(
                   [], "--split-file", help="SPLIT=FILE with one image name or sha256 a line "
                   "(repeat); replaces the computed split."),
               label: list[str] = typer.Option([], "--label", help="Only these labels (repeat)."),
               description: str = typer.Option("", "--description"),
               public: bool = typer.Option(False, "--public"),
               fmt: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Freeze a collection or query into NAME@N (images, annotations, labels, splits)."""
    from aqualens.catalog.datasets import version_dict
    from aqualens.core.errors import ValidationError
    from aqualens.training.datasets import freeze
    from aqualens.training.splits import parse_fractions

    files = {}
    for entry in split_file:
        key, sep, path = entry.partition("=")
        if not sep or not key or not path:
            raise ValidationError(f"--split-file {entry!r} is not SPLIT=FILE", field="split-file")
        files[key] = Path(path)
    q = None
    if query:
        try:
            q = json.loads(query)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--query is not JSON: {exc}", field="query") from None
    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        dv = freeze(s, user, name, collection=collection, query=q, statuses=status,
                    fractions=None if files else parse_fractions(split), seed=seed,
                    group_by=group_by, split_files=files or None, labels=label or None,
                    description=description, visibility="public" if public else "private")
        out = version_dict(dv, full=True)
    _show(out, fmt)


def _show(d: dict, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    console.print(f"[bold]{d['ref']}[/] ({d['task']}): {d['images']} images, "
                  f"{d['annotations']} annotations, {len(d['labels'])} labels")
    console.print(f"manifest sha256 {d['manifest_sha256']}")
    rows = []
    for split, info in (d.get("split_summary") or {}).items():
        rows.append({"split": split, "images": info["images"],
                     **{k: v for k, v in info["labels"].items()}})
    if rows:
        cols = ["split", "images"] + sorted({k for r in rows for k in r} - {"split", "images"})
        emit(rows, "table", cols)


@datasets_app.command("list")
@handle_errors
def list_cmd(name: Optional[str] = typer.Argument(None, help="Only versions of this name."),
             fmt: str = typer.Option("table", "--format", help="table|json|csv")) -> None:
    """Dataset versions you can read."""
    from aqualens.catalog.datasets import list_versions, version_dict

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        rows = [version_dict(v) for v in list_versions(s, user, name)]
    for r in rows:
        r["labels"] = len(r["labels"])
        r["splits"] = "/".join(f"{k}:{v}" for k, v in r["splits"].items())
    emit(rows, fmt, LIST_COLUMNS)


@datasets_app.command("show")
@handle_errors
def show_cmd(ref: str = typer.Argument(..., help="NAME@N, NAME (latest) or id"),
             fmt: str = typer.Option("table", "--format", help="table|json")) -> None:
    """A version: counts per split and label, split method, checksum (verified)."""
    from aqualens.catalog.datasets import get_version, version_dict

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        d = version_dict(get_version(s, ref, user), full=True)
    _show(d, fmt)
    if fmt != "json":
        console.print(f"split: {d['split_params']}; manifest verified: {d['verified']}")


@datasets_app.command("diff")
@handle_errors
def diff_cmd(a: str = typer.Argument(..., help="NAME@N"), b: str = typer.Argument(..., help="NAME@M"),
             fmt: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Images and labels added, removed or changed from A to B."""
    from aqualens.catalog.datasets import diff_versions, get_version

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        d = diff_versions(get_version(s, a, user), get_version(s, b, user))
    if fmt == "json":
        typer.echo(json.dumps(d, indent=2))
        return
    rows = [{"change": k, "count": len(v) if isinstance(v, list) else v,
             "examples": ", ".join(str(x if not isinstance(x, dict) else x["sha256"][:12])
                                   for x in (v[:3] if isinstance(v, list) else []))}
            for k, v in d.items() if k not in ("from", "to", "summary")]
    emit(rows, "table", ["change", "count", "examples"], title=f"{d['from']} -> {d['to']}")


@datasets_app.command("export")
@handle_errors
def export_cmd(ref: str = typer.Argument(...),
               out: Path = typer.Option(..., "--out", "-o", help="Folder to write."),
               images: bool = typer.Option(False, "--images", help="Also copy the images.")) -> None:
    """Write the manifest (canonical JSON), SHA256SUMS and optionally the images."""
    from aqualens.catalog.datasets import export_version

    ctx = context()
    user = cli_user(ctx)
    r = export_version(ctx, ref, user, out, with_images=images)
    console.print(f"{r['dataset']} -> {r['out']} (manifest sha256 {r['manifest_sha256']}, "
                  f"{r['images_written']} images)")


def follow_training(ctx, job_id: str, user, *, run: bool = True, quiet: bool = False,  # noqa: ANN001
                    poll_s: float = 0.5) -> dict:
    """Follow a train job with a bar: epoch / epochs, loss, validation metric, ETA. With
    ``run`` the job executes in this process unless another runner claims it first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aqualens.processing import jobs

    runner = None
    if run:
        from aqualens.processing.runner import Runner

        runner = Runner(ctx, poll_s=0.1, only={job_id}).start()
    try:
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("epochs  {task.fields[info]}"), TimeElapsedColumn()]
        last_id = 0
        info = ""
        with Progress(*cols, console=err_console, disable=quiet) as bar:
            task = bar.add_task(f"train {job_id[:8]}", total=None, info="")
            while True:
                with ctx.session() as s:
                    job = jobs.job_to_dict(jobs.get_job(s, job_id, user))
                    for line in jobs.get_logs(s, job_id, after_id=last_id):
                        last_id = line.id
                        m = EPOCH_RE.match(line.message)
                        if m:
                            info = (f"loss {float(m[3]):.3f}  val {m[4]} {float(m[5]):.3f}  "
                                    f"ETA {int(m[6]) // 60}:{int(m[6]) % 60:02d}")
                        elif not quiet:
                            err_console.print(f"[dim]{line.message}[/]", highlight=False)
                bar.update(task, total=job["total"] or None, completed=job["done"], info=info,
                           description=f"train {job_id[:8]} {job['state']}")
                if job["state"] in jobs.TERMINAL:
                    return job
                time.sleep(poll_s)
    finally:
        if runner is not None:
            runner.stop()


@handle_errors
def train_cmd(dataset: str = typer.Option(..., "--dataset", "-d", help="NAME@N"),
              task: Optional[str] = typer.Option(None, "--task", help="classify|detect "
                                                 "(default: from the dataset)"),
              base_model: Optional[str] = typer.Option(None, "--base-model",
                                                       help="NAME@VERSION to fine-tune"),
              epochs: Optional[int] = typer.Option(None, "--epochs"),
              device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps"),
              seed: int = typer.Option(0, "--seed"),
              name: Optional[str] = typer.Option(None, "--name", help="Model name"),
              version: Optional[str] = typer.Option(None, "--version", help="Model version"),
              batch_size: Optional[int] = typer.Option(None, "--batch-size"),
              input_size: Optional[int] = typer.Option(None, "--input-size",
                                                       help="square network input, px"),
              max_minutes: Optional[float] = typer.Option(None, "--max-minutes"),
              licence: Optional[str] = typer.Option(None, "--licence"),
              flip_test: Optional[bool] = typer.Option(
                  None, "--flip-test/--no-flip-test",
                  help="Detector: average each image with its mirror in the exported model "
                       "(default on: better AP, twice the inference time)."),
              wait: bool = typer.Option(True, help="Run and follow here (else just queue)."),
              fmt: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Train a classifier or detector on a frozen dataset; registers a new model version."""
    from aqualens.training.service import start_training

    ctx = context()
    user = cli_user(ctx)
    with ctx.session() as s:
        job = start_training(s, user, dataset, task, base_model=base_model, epochs=epochs,
                             device=device, seed=seed, name=name, version=version,
                             batch_size=batch_size, input_size=input_size,
                             max_minutes=max_minutes, licence=licence, flip_test=flip_test)
        job_id = job.id
    if not wait:
        typer.echo(job_id)
        return
    job = follow_training(ctx, job_id, user, quiet=fmt == "json")
    if fmt == "json":
        typer.echo(json.dumps(job, indent=2, default=str))
    if job["state"] != "succeeded":
        err_console.print(f"[bold red]training {job['state']}[/]: {job.get('error') or ''}")
        raise typer.Exit(1)
    if fmt != "json":
        o = job["outputs"]
        console.print(f"model [bold]{o['model']}[/] (id {o['model_id']}) on {o['dataset']}, "
                      f"{o['epochs_run']} epochs; {o['eval_split']}: " +
                      ", ".join(f"{k} {v:.3f}" for k, v in o["metrics"].items()))


@handle_errors
def evaluate_cmd(model: str = typer.Option(..., "--model", "-m", help="id, name or name@version"),
                 dataset: str = typer.Option(..., "--dataset", "-d", help="NAME@N"),
                 split: str = typer.Option("test", "--split"),
                 store: bool = typer.Option(True, help="Keep the metrics on the model."),
                 out: Optional[Path] = typer.Option(None, "--out", help="Write metrics JSON"),
                 fmt: str = typer.Option("table", "--format", help="table|json")) -> None:
    """Evaluate a model on a dataset split: accuracy/F1/confusion or COCO AP/AP50/AP75."""
    from aqualens.training.model_eval import evaluate_model

    ctx = context()
    user = cli_user(ctx)
    m = evaluate_model(ctx, model, dataset, user, split=split, store=store)
    if out:
        from aqualens.cli.common import write_json

        write_json(out, m)
    if fmt == "json":
        typer.echo(json.dumps(m, indent=2, default=str))
        return
    console.print(f"[bold]{m['model']}[/] on {m['dataset']}:{m['split']} ({m['n_images']} images)")
    emit([{"metric": k, "value": f"{v:.4f}"} for k, v in m["overall"].items()], "table",
         ["metric", "value"])
    rows = [{"class": c, **{k: (f"{v:.3f}" if isinstance(v, float) else v)
                            for k, v in pc.items()}} for c, pc in m["per_class"].items()]
    if rows:
        emit(rows, "table", list(rows[0].keys()))


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
