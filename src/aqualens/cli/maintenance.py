"""``aqualens fsck`` and ``aqualens tier``: store/catalogue consistency and storage tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from aqualens.cli.common import (cli_user, console, context, err_console, handle_errors,
                                 progress, write_json)


def register(app: typer.Typer) -> None:
    """Add the maintenance commands to ``app``."""

    @app.command()
    @handle_errors
    def fsck(repair: bool = typer.Option(
                 False, "--repair", help="Delete orphan blobs and leftover temp files "
                                         "(never rows, never referenced blobs)."),
             json_file: Optional[Path] = typer.Option(
                 None, "--json", help="Also write the full report as JSON to this file."),
             quick: bool = typer.Option(
                 False, "--quick", help="Check existence only; do not re-hash blob contents."),
             grace: float = typer.Option(
                 900.0, "--grace", min=0,
                 help="Leave blobs and temp files younger than this many seconds alone "
                      "(a writer may be about to commit the row that references them)."),
             ) -> None:
        """Verify every blob against its hash and every row against its blob; report orphans.

        Exits 1 when problems remain (after --repair, when something could not be repaired).
        """
        from aqualens.catalog.fsck import fsck as run_fsck
        from aqualens.catalog.instance import init_instance

        ctx = context()
        init_instance(ctx)
        with progress() as bar:
            task = bar.add_task("fsck", total=None)
            report = run_fsck(ctx, repair=repair, verify=not quick, grace=grace,
                              progress=lambda done, total: bar.update(task, completed=done,
                                                                      total=total))
        if json_file is not None:
            write_json(json_file, report.to_dict())
        for p in report.problems:
            mark = "[green]repaired[/]" if p.repaired else "[red]problem[/]"
            err_console.print(f"{mark} {p.kind}: {p.message}", highlight=False,
                              soft_wrap=True)
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
        console.print(f"{report.blobs} blobs ({report.verified} re-hashed), {report.rows} rows "
                      f"checked in {report.seconds:.1f} s: "
                      + (counts or "no problems")
                      + (f"; {report.skipped_young} recent item(s) left alone"
                         if report.skipped_young else ""), highlight=False, soft_wrap=True)
        if not report.ok:
            if not repair and {p.kind for p in report.unrepaired} & {"orphan", "temp"}:
                console.print("Run 'aqualens fsck --repair' to delete orphans and temp files.")
            raise typer.Exit(1)

    @app.command()
    @handle_errors
    def tier(to: str = typer.Option(..., "--to", help="Target tier: active or archive."),
             collection: Optional[str] = typer.Option(
                 None, "--collection", help="Move every image of this collection (name or id)."),
             image: Optional[list[int]] = typer.Option(
                 None, "--image", help="Image id; repeat for several."),
             user: Optional[str] = typer.Option(None, "--user", help="Act as this user."),
             ) -> None:
        """Move images' blobs between the active and archive storage tiers."""
        from sqlalchemy import select

        from aqualens.catalog.collections import find_collection
        from aqualens.catalog.fsck import move_images
        from aqualens.catalog.tables import CollectionImage
        from aqualens.core.errors import ValidationError
        from aqualens.storage.base import check_tier

        check_tier(to)
        if bool(collection) == bool(image):
            raise ValidationError("give either --collection or --image", field="--collection",
                                  valid="--collection NAME, or --image ID (repeatable)")
        ctx = context()
        acting = cli_user(ctx, user)
        if collection:
            with ctx.session() as s:
                coll = find_collection(s, collection, acting)
                ids = list(s.scalars(select(CollectionImage.image_id)
                                     .where(CollectionImage.collection_id == coll.id)
                                     .order_by(CollectionImage.image_id)))
        else:
            ids = list(image or [])
        with progress() as bar:
            task = bar.add_task(f"to {to}", total=len(ids))
            report = move_images(ctx, ids, to, user=acting,
                                 progress=lambda n: bar.advance(task, n))
        console.print(f"{len(report.moved)} moved to {to}, {len(report.unchanged)} already there"
                      + (f", {len(report.not_found)} unknown id(s): {report.not_found}"
                         if report.not_found else "")
                      + (f", {len(report.missing)} without a blob: {report.missing}"
                         if report.missing else ""), highlight=False, soft_wrap=True)
        if report.not_found or report.missing:
            raise typer.Exit(1)

