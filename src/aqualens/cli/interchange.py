"""``aqualens import``, ``aqualens export``, ``aqualens formats``, ``aqualens labels import-taxa``.

Exit codes of ``import``: 0 imported (warnings allowed); 2 imported with --partial but some
records were left out; 1 refused (nothing stored) or the file could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from aqualens.cli.common import (cli_user, console, context, emit, err_console, handle_errors,
                                 progress, write_json)

SHOWN = 30


def _options(items: list[str]) -> dict[str, object]:
    """``-o key=value`` pairs; values that parse as JSON (true, 3, [..]) are typed."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"option {item!r} must be key=value")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _bar_callback(bar, tasks: dict):  # noqa: ANN001, ANN202
    def tick(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None)
        bar.update(tasks[stage], completed=done, total=total or None)
    return tick


def print_report(report) -> None:  # noqa: ANN001
    """Problems (file:line/object: reason), then the one-line summary."""
    for p in report.problems[:SHOWN]:
        colour = "red" if p.severity == "error" else "yellow"
        where = f"{p.file}:{p.location}" if p.location else p.file
        err_console.print(f"[{colour}]{p.severity}[/] {where}: {p.reason}", markup=True,
                          highlight=False)
    if len(report.problems) > SHOWN:
        err_console.print(f"... and {len(report.problems) - SHOWN} more (write them all with "
                          "--report FILE.json)")
    (err_console if report.refused else console).print(report.summary(), highlight=False)


def register(app: typer.Typer) -> None:
    """Add the interchange commands to ``app``."""

    @app.command("import")
    @handle_errors
    def import_(
        src: Path = typer.Argument(..., exists=True, help="Annotation file, folder or zip."),
        fmt: str = typer.Option(..., "--format", "-f", help="coco, voc, yolo, masks, folders, "
                                "ecotaxa, dwca, csv (see 'aqualens formats')."),
        collection: str = typer.Option(..., "--collection", "-c",
                                       help="Target collection (created when missing)."),
        partial: bool = typer.Option(False, "--partial", help="Import the valid records and "
                                     "report the rest (default: all or nothing)."),
        on_outside: str = typer.Option("clip", "--on-outside", help="Geometry outside the "
                                       "image: clip or reject."),
        unknown_labels: str = typer.Option("create", "--unknown-labels", help="create, map "
                                           "(synonyms and loose matches only) or reject."),
        status: Optional[str] = typer.Option(None, "--status", help="Set every annotation's "
                                             "status (predicted, validated, dubious)."),
        option: list[str] = typer.Option([], "--option", "-o", help="Format option key=value, "
                                         "e.g. -o suffix=aphia (folders), -o gt=instances.json "
                                         "(coco results)."),
        public: bool = typer.Option(False, "--public", help="Make new images and annotations "
                                    "public."),
        report_file: Optional[Path] = typer.Option(None, "--report", help="Write the report "
                                                   "as JSON."),
        user: Optional[str] = typer.Option(None, "--user", help="Act as this user."),
    ) -> None:
        """Import annotations (and their images) into a collection, validating everything first."""
        from aqualens.interchange.importer import ImportOptions, import_annotations

        ctx = context()
        owner = cli_user(ctx, user)
        opts = ImportOptions(partial=partial, on_outside=on_outside,
                             unknown_labels=unknown_labels, status=status,
                             visibility="public" if public else "private",
                             format_options=_options(option))
        with progress() as bar:
            report = import_annotations(ctx, fmt, src, collection=collection, user=owner,
                                        options=opts, progress=_bar_callback(bar, {}))
        if report_file:
            write_json(report_file, report.to_dict())
        print_report(report)
        if report.refused:
            raise typer.Exit(1)
        if report.errors:
            raise typer.Exit(2)

    @app.command("export")
    @handle_errors
    def export(
        dest: Path = typer.Argument(..., help="Output folder, or a path ending in .zip."),
        fmt: str = typer.Option(..., "--format", "-f", help="Target format."),
        collection: Optional[str] = typer.Option(None, "--collection", "-c",
                                                 help="Collection id or name."),
        query: list[str] = typer.Option([], "--query", "-q", help="Search filter key=value "
                                        "(label, status, instrument, station, text, "
                                        "captured_from, captured_to, depth_min, depth_max, "
                                        "bbox, collection); repeatable."),
        status: list[str] = typer.Option([], "--status", help="Annotation statuses to export "
                                         "(default: predicted, validated, dubious)."),
        option: list[str] = typer.Option([], "--option", "-o", help="Format option key=value, "
                                         "e.g. -o media_base_url=https://... (dwca)."),
        user: Optional[str] = typer.Option(None, "--user", help="Act as this user."),
    ) -> None:
        """Export a collection or a search query to any format (zip when DEST ends in .zip)."""
        from aqualens.interchange.exporter import export_dataset

        if (collection is None) == (not query):
            raise typer.BadParameter("give exactly one of --collection or --query")
        q = None
        if query:
            from aqualens.catalog.search import ImageQuery

            data = {}
            for item in query:
                key, sep, value = item.partition("=")
                if not sep:
                    raise typer.BadParameter(f"--query {item!r} must be key=value")
                data[key.strip()] = value.split(",") if key.strip() == "bbox" else value
            q = ImageQuery.parse(data)
        ctx = context()
        owner = cli_user(ctx, user)
        with progress() as bar:
            result = export_dataset(ctx, fmt, dest, user=owner, collection=collection, query=q,
                                    statuses=tuple(status) or None, options=_options(option),
                                    progress=_bar_callback(bar, {}))
        for w in result.warnings:
            err_console.print(f"[yellow]warning[/] {w}", markup=True, highlight=False)
        console.print(f"exported {result.annotations} annotations on {result.images} images "
                      f"to {result.path} ({fmt})", highlight=False)

    @app.command("formats")
    def formats(fmt: str = typer.Option("table", "--format", help="table, json or csv.")) -> None:
        """List the annotation formats installed (plugins in aqualens.formats)."""
        from aqualens.formats import format_names, get_format

        rows = []
        for name in format_names():
            plugin = get_format(name)
            rows.append({"name": name, "description": plugin.description,
                         "geometries": ", ".join(plugin.geometries),
                         "output": plugin.default_output})
        emit(rows, fmt, title="Annotation formats")

    labels_app = next((g.typer_instance for g in app.registered_groups if g.name == "labels"),
                      None)
    if labels_app is None:
        labels_app = typer.Typer(help="The label vocabulary.", no_args_is_help=True)
        app.add_typer(labels_app, name="labels")

    @labels_app.command("import-taxa")
    @handle_errors
    def import_taxa_cmd(
        file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                    help="CSV: name, aphia_id, rank, parent, synonyms."),
        report_file: Optional[Path] = typer.Option(None, "--report", help="Write the report "
                                                   "as JSON."),
    ) -> None:
        """Import a taxon list into the label vocabulary (all or nothing)."""
        from aqualens.interchange.vocabulary import import_taxa

        ctx = context()
        cli_user(ctx)  # creates the instance on first use
        with ctx.session() as s:
            report = import_taxa(s, file)
        if report_file:
            write_json(report_file, report.to_dict())
        console.print(f"{report.created} labels created, {report.updated} updated, "
                      f"{report.synonyms} synonyms added", highlight=False)


# Annotations of the bundled demo sets (collection -> format, folder below demo/); called by
# ``aqualens demo`` after each set is ingested, so the demo instance has labels and boxes.
DEMO_IMPORTS = {"uvp6-demo": ("folders", "uvp6"), "deepfish-demo": ("yolo", "deepfish"),
                "ecotaxa-demo": ("ecotaxa", "ecotaxa/m106_mn01_n1_sml")}


def import_demo_annotations(ctx, root: Path, collection: str, owner) -> None:  # noqa: ANN001
    """Import the annotations of one demo set (idempotent: duplicates are skipped)."""
    from aqualens.interchange.importer import ImportOptions, import_annotations

    if collection not in DEMO_IMPORTS:
        return
    fmt, folder = DEMO_IMPORTS[collection]
    if not (root / folder).exists():
        return
    with progress() as bar:
        report = import_annotations(ctx, fmt, root / folder, collection=collection, user=owner,
                                    options=ImportOptions(partial=True, visibility="public"),
                                    progress=_bar_callback(bar, {}))
    console.print(f"{collection}: {report.summary()}", highlight=False)
