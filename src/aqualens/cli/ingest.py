"""``aqualens ingest`` (files, folders, archives into a collection) and ``aqualens demo``.

Exit codes of ``ingest``: 0 every file went in (new or duplicate); 2 some files went in and some
were rejected; 1 nothing went in (all rejected, nothing found) or the command failed (bad
sidecar, unknown user, storage error).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import typer

from aqualens.cli.common import (cli_user, console, context, err_console, handle_errors, progress,
                                 write_json)

EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 1, 2
SHOWN_REJECTIONS = 20

# The bundled sample: (collection, folder below demo/, sidecar below demo/, description).
DEMO_SETS = [
    ("uvp6-demo", "uvp6", "stations.csv",
     "UVP6 plankton vignettes, 10 classes (one folder per class). From github.com/ecotaxa/uvpec "
     "img_sample, GPL-3.0. Station metadata invented for the demo."),
    ("deepfish-demo", "deepfish/images", "stations.csv",
     "DeepFish underwater images (Saleh et al. 2020, Roboflow export deepfish-fmyzf v2), "
     "CC BY 4.0. YOLO labels in demo/deepfish/labels. Station metadata invented for the demo."),
    ("ecotaxa-demo", "ecotaxa/m106_mn01_n1_sml", "ecotaxa/m106_mn01_n1_sml/ecotaxa_m106_mn01_n1_sml.tsv",
     "ZooScan vignettes of Meteor cruise m106 with their EcoTaxa import TSV (used as sidecar). "
     "From github.com/ecotaxa/ecotaxa_back QA/py/data, GPL-3.0."),
]


def default_demo_dir() -> Path:
    """``demo/`` at the root of the source tree this package runs from."""
    import aqualens

    return Path(aqualens.__file__).resolve().parents[2] / "demo"


def default_models_dir() -> Path:
    """``models/`` at the root of the source tree: the reference models (``make models``)."""
    import aqualens

    return Path(aqualens.__file__).resolve().parents[2] / "models"


def import_reference_models(ctx, models_dir: Path, owner_id: int) -> list[tuple[str, str]]:
    """Register every ``models_dir/*.aqlmodel`` as a public model, idempotently.

    A package whose artefact sha256 is already registered is skipped without unpacking it (the
    sha256 is read from the package's metadata). Returns ``(file name, outcome)`` pairs, outcome
    ``imported``, ``already registered`` or ``skipped: <reason>`` (a broken or conflicting
    package does not stop the demo).
    """
    import json
    import zipfile

    from sqlalchemy import select

    from aqualens.catalog.tables import Model
    from aqualens.core.errors import AquaLensError
    from aqualens.models.package import META, import_package

    out = []
    for path in sorted(Path(models_dir).glob("*.aqlmodel")) if Path(models_dir).is_dir() else []:
        try:
            with zipfile.ZipFile(path) as zf:
                sha = json.loads(zf.read(META))["artefact"]["sha256"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            out.append((path.name, f"skipped: not a readable model package ({exc})"))
            continue
        with ctx.session() as s:
            if s.scalar(select(Model.id).where(Model.artefact_sha256 == sha).limit(1)):
                out.append((path.name, "already registered"))
                continue
        try:
            model = import_package(ctx, path, owner_id, visibility="public")
        except AquaLensError as exc:
            out.append((path.name, f"skipped: {exc}"))
            continue
        out.append((path.name, f"imported as {model.name}@{model.version}"))
    return out


def run_ingest(ctx, paths: list[Path], *, collection: str, owner_id: int,
               metadata: Path | None, mapping: dict[str, str], visibility: str,
               workers: int | None = None):
    """Run :func:`ingest_paths` behind a rich progress bar; returns the report."""
    from aqualens.ingest.pipeline import ingest_paths

    with progress() as bar:
        task = bar.add_task(f"ingest → {collection}", total=None)
        report = ingest_paths(
            ctx, paths, collection=collection, owner_id=owner_id, metadata_file=metadata,
            mapping=mapping, visibility=visibility, workers=workers,
            on_total=lambda n: bar.update(task, total=n),
            progress=lambda n: bar.advance(task, n))
        bar.update(task, total=bar.tasks[0].completed)
    return report


def print_summary(report, show_unmatched: bool = True) -> None:
    """Counts, then the rejected files with their reasons."""
    s = report.summary()
    console.print(f"[bold]{report.collection}[/] (id {report.collection_id}): "
                  f"{s['accepted']} accepted ({s['new_images']} new, {s['duplicates']} duplicates, "
                  f"{s['added_to_collection']} added to the collection), "
                  f"{s['rejected']} rejected, {s['skipped']} skipped companion files, "
                  f"{s['bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s", highlight=False)
    if report.metadata_unmatched and show_unmatched:
        console.print(f"{report.metadata_unmatched} metadata rows matched no ingested file",
                      highlight=False)
    for rej in report.rejected[:SHOWN_REJECTIONS]:
        err_console.print(f"[red]rejected[/] {rej.name}: {rej.reason}", highlight=False,
                          markup=True)
    if len(report.rejected) > SHOWN_REJECTIONS:
        err_console.print(f"... and {len(report.rejected) - SHOWN_REJECTIONS} more "
                          "(write them all with --report FILE.json)")


def exit_code(report) -> int:
    """0 all in, 2 partly in, 1 nothing in."""
    if not report.accepted:
        return EXIT_NOTHING
    return EXIT_PARTIAL if report.rejected else EXIT_OK


def demo_manifest(root: Path, folder: str, sidecar: str) -> str:
    """A fingerprint of one demo set (names and sizes), to skip it when already ingested."""
    h = hashlib.sha256()
    for path in sorted((root / folder).rglob("*")):
        if path.is_file():
            h.update(f"{path.relative_to(root)}\0{path.stat().st_size}\n".encode())
    h.update(f"{sidecar}\0{(root / sidecar).stat().st_size}".encode())
    return h.hexdigest()


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``demo`` to ``app``."""

    @app.command()
    @handle_errors
    def ingest(
        paths: list[Path] = typer.Argument(..., help="Image files, folders (recursive), zip or "
                                                     "tar archives."),
        collection: str = typer.Option(..., "--collection", "-c",
                                       help="Collection name (created when missing)."),
        metadata: Optional[Path] = typer.Option(
            None, "--metadata", "-m", exists=True, dir_okay=False,
            help="Sidecar CSV/TSV/JSON keyed by file name (see docs/ingest.md)."),
        map_: list[str] = typer.Option(
            [], "--map", help="Sidecar column for a field, e.g. --map lat=Latitude. Fields: file, "
                              "captured_at, time, lat, lon, depth, instrument, station."),
        public: bool = typer.Option(False, "--public", help="Make the collection and the new "
                                                            "images public."),
        report_file: Optional[Path] = typer.Option(None, "--report",
                                                   help="Write the full report as JSON."),
        user: Optional[str] = typer.Option(None, "--user", help="Act as this user (default: "
                                                                "the instance admin)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, max=64,
                                              help="Threads for hashing and thumbnails."),
    ) -> None:
        """Add images to a collection: sha256, size, EXIF time/GPS, thumbnails, sidecar metadata.

        Identical content is stored once; re-running is idempotent. Exit code 0 when every file
        went in, 2 when some were rejected, 1 when none went in.
        """
        from aqualens.ingest.sidecar import parse_mapping

        mapping = parse_mapping(map_)
        ctx = context()
        owner = cli_user(ctx, user)
        report = run_ingest(ctx, paths, collection=collection, owner_id=owner.id,
                            metadata=metadata, mapping=mapping,
                            visibility="public" if public else "private", workers=workers)
        if report_file:
            write_json(report_file, report.to_dict())
        print_summary(report)
        if not report.accepted and not report.rejected:
            err_console.print("no image files found")
        raise typer.Exit(exit_code(report))

    @app.command()
    @handle_errors
    def demo(path: Optional[Path] = typer.Option(None, "--path", envvar="AQUALENS_DEMO_DIR",
                                                 help="Folder of the demo sample "
                                                      "(default: demo/ of the source tree)."),
             models: Optional[Path] = typer.Option(
                 None, "--models", envvar="AQUALENS_MODELS_DIR",
                 help="Folder of reference model packages (*.aqlmodel) to register as public "
                      "models (default: models/ of the source tree)."),
             ) -> None:
        """Initialise the instance, ingest the bundled demo sample into public collections and
        register the reference models (``models/*.aqlmodel``) as public models.

        Idempotent: sets already ingested unchanged and packages whose artefact is already
        registered are skipped (``make run`` calls it each time).
        """
        from sqlalchemy import select

        from aqualens.catalog.instance import init_instance
        from aqualens.catalog.tables import Collection
        from aqualens.core.errors import NotFound

        root = path or default_demo_dir()
        if not (root / "uvp6").is_dir():
            raise NotFound(f"no demo sample in {root}", field="--path",
                           valid="a folder with uvp6/, deepfish/ and ecotaxa/ (the repo's demo/)")
        ctx = context()
        token = init_instance(ctx)
        if token:
            console.print(f"Instance created in {ctx.settings.data_dir}")
            console.print("Admin API token (shown once; also in "
                          f"{ctx.settings.data_dir / 'admin-token'}):")
            typer.echo(token)
        owner = cli_user(ctx)
        for name, folder, sidecar, description in DEMO_SETS:
            fingerprint = demo_manifest(root, folder, sidecar)
            with ctx.session() as s:
                row = s.scalar(select(Collection).where(Collection.owner_id == owner.id,
                                                        Collection.name == name))
                if row is not None and (row.meta or {}).get("demo_manifest") == fingerprint:
                    console.print(f"{name}: already ingested")
                    continue
            report = run_ingest(ctx, [root / folder], collection=name, owner_id=owner.id,
                                metadata=root / sidecar, mapping={}, visibility="public")
            print_summary(report, show_unmatched=False)  # one sidecar serves two sets
            if report.rejected:
                raise typer.Exit(EXIT_PARTIAL)
            from aqualens.cli.interchange import import_demo_annotations

            import_demo_annotations(ctx, root, name, owner)  # labels and boxes of the set
            with ctx.session() as s:
                row = s.get(Collection, report.collection_id)
                row.description = row.description or description
                row.meta = {**(row.meta or {}), "demo_manifest": fingerprint}
        for fname, outcome in import_reference_models(ctx, models or default_models_dir(),
                                                      owner.id):
            console.print(f"{fname}: {outcome}", highlight=False)
        console.print("Demo ready: aqualens serve, then http://127.0.0.1:8000")
