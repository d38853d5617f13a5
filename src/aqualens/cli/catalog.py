"""``aqualens search``, ``aqualens collections ...``, ``aqualens labels ...``,
``aqualens images ...``: the catalogue from the command line (same functions as the API)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from aqualens.cli.common import cli_user, console, context, emit, handle_errors

FORMATS = "table, json or csv"
SEARCH_COLUMNS = ["id", "original_name", "captured_at", "lat", "lon", "depth", "instrument",
                  "station", "width", "height", "visibility"]


def _check_format(fmt: str) -> str:
    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter(f"unknown format {fmt!r}; valid: {FORMATS}", param_hint="--format")
    return fmt


def _json_default(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def register(app: typer.Typer) -> None:
    """Add the catalogue commands to ``app``."""
    collections = typer.Typer(help="List, create, show and delete collections.",
                              no_args_is_help=True)
    labels = typer.Typer(help="List and add labels (the shared vocabulary).", no_args_is_help=True)
    images = typer.Typer(help="Show and delete images.", no_args_is_help=True)
    app.add_typer(collections, name="collections")
    app.add_typer(labels, name="labels")
    app.add_typer(images, name="images")

    @app.command()
    @handle_errors
    def search(collection: Optional[str] = typer.Option(None, help="Collection id or name."),
               label: Optional[str] = typer.Option(None, help="Label name or synonym."),
               status: Optional[str] = typer.Option(
                   None, help="Annotation status: predicted, validated, dubious, rejected."),
               captured_from: Optional[str] = typer.Option(
                   None, "--from", help="Captured at or after (ISO date/time)."),
               captured_to: Optional[str] = typer.Option(
                   None, "--to", help="Captured at or before (ISO; a bare date = whole day)."),
               bbox: Optional[str] = typer.Option(None, help="min_lon,min_lat,max_lon,max_lat"),
               depth_min: Optional[float] = typer.Option(None, help="Metres."),
               depth_max: Optional[float] = typer.Option(None, help="Metres."),
               instrument: Optional[str] = typer.Option(None, help="Exact instrument name."),
               station: Optional[str] = typer.Option(None, help="Exact station/camera name."),
               text: Optional[str] = typer.Option(None, help="Words in the name or metadata."),
               limit: int = typer.Option(50, help="Page size, 1..1000."),
               cursor: Optional[str] = typer.Option(None, help="next_cursor of a previous page."),
               all_pages: bool = typer.Option(False, "--all", help="Every match, not one page "
                                              "(ids stream in batches)."),
               total: bool = typer.Option(False, "--total", help="Also count all matches."),
               show_facets: bool = typer.Option(False, "--facets", help="Print counts per label, "
                                                "collection and instrument instead."),
               fmt: str = typer.Option("table", "--format", help=FORMATS),
               user: Optional[str] = typer.Option(None, "--user", help="Act as this user.")
               ) -> None:
        """Find images by collection, label, status, time, place, depth, instrument, station or
        text. Prints one page and, on stderr, the cursor of the next one."""
        from aqualens.catalog.images import image_dict
        from aqualens.catalog.search import ImageQuery, facets, iter_image_ids, search_images
        from aqualens.catalog.tables import Image

        from aqualens.catalog.db import get_engine
        from aqualens.catalog.text_index import ensure_text_index

        _check_format(fmt)
        ctx = context()
        who = cli_user(ctx, user)
        ensure_text_index(get_engine(ctx.db_url))
        q = ImageQuery.parse({"collection": collection, "label": label, "status": status,
                              "captured_from": captured_from, "captured_to": captured_to,
                              "bbox": bbox, "depth_min": depth_min, "depth_max": depth_max,
                              "instrument": instrument, "station": station, "text": text,
                              "limit": limit, "cursor": cursor, "with_total": total})
        with ctx.session() as s:
            if show_facets:
                out = facets(s, q, who)
                if fmt == "json":
                    typer.echo(json.dumps(out, indent=2, default=_json_default))
                    return
                rows = [{"facet": k, "value": e["value"], "count": e["count"]}
                        for k, entries in out.items() for e in entries]
                emit(rows, fmt, ["facet", "value", "count"], title="Facets")
                return
            if all_pages:
                rows = []
                ids = list(iter_image_ids(s, q, who))
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    found = {i.id: i for i in s.query(Image).filter(Image.id.in_(chunk))}
                    rows += [image_dict(found[i]) for i in chunk if i in found]
                next_cursor, count = None, len(rows)
            else:
                page = search_images(s, q, who)
                rows = [image_dict(i) for i in page.items]
                next_cursor, count = page.next_cursor, page.total
        if fmt == "json":
            typer.echo(json.dumps({"items": rows, "next_cursor": next_cursor, "total": count},
                                  indent=2, default=_json_default))
        else:
            emit(rows, fmt, SEARCH_COLUMNS, title=f"{len(rows)} image(s)")
        if fmt != "json":
            from aqualens.cli.common import err_console

            if count is not None:
                err_console.print(f"total: {count}")
            if next_cursor:
                err_console.print(f"next page: --cursor {next_cursor}")

    @collections.command("list")
    @handle_errors
    def collections_list(fmt: str = typer.Option("table", "--format", help=FORMATS),
                         user: Optional[str] = typer.Option(None, "--user")) -> None:
        """Collections you can see, with image counts."""
        from aqualens.catalog.collection_crud import collection_dict, list_collections

        _check_format(fmt)
        ctx = context()
        who = cli_user(ctx, user)
        with ctx.session() as s:
            rows = [collection_dict(c, n) for c, n in list_collections(s, who, limit=1000)]
        emit(rows, fmt, ["id", "name", "image_count", "visibility", "owner_id", "description"],
             title="Collections")

    @collections.command("create")
    @handle_errors
    def collections_create(name: str,
                           description: str = typer.Option("", help="Free text."),
                           public: bool = typer.Option(False, "--public",
                                                       help="Visible to everyone."),
                           user: Optional[str] = typer.Option(None, "--user")) -> None:
        """Create an (empty) collection; `aqualens ingest` also creates one when needed."""
        from aqualens.catalog.collection_crud import create_collection

        ctx = context()
        who = cli_user(ctx, user)
        with ctx.session() as s:
            row = create_collection(s, who, name, description=description,
                                    visibility="public" if public else "private")
            console.print(f"created collection {row.id} {row.name!r} ({row.visibility})")

    @collections.command("show")
    @handle_errors
    def collections_show(collection: str,
                         fmt: str = typer.Option("table", "--format", help=FORMATS),
                         user: Optional[str] = typer.Option(None, "--user")) -> None:
        """A collection's details and its facet counts."""
        from aqualens.catalog.collection_crud import collection_dict
        from aqualens.catalog.collections import collection_size, find_collection
        from aqualens.catalog.search import ImageQuery, facets

        _check_format(fmt)
        ctx = context()
        who = cli_user(ctx, user)
        with ctx.session() as s:
            row = find_collection(s, collection, who)
            info = collection_dict(row, collection_size(s, row.id))
            info["facets"] = facets(s, ImageQuery(collection=row.id), who, top=10)
        if fmt == "json":
            typer.echo(json.dumps(info, indent=2, default=_json_default))
            return
        facet_rows = info.pop("facets")
        emit([{"field": k, "value": v} for k, v in info.items()], fmt, ["field", "value"],
             title=f"Collection {row.name}")
        emit([{"facet": k, "value": e["value"], "count": e["count"]}
              for k, entries in facet_rows.items() if k != "collection" for e in entries],
             fmt, ["facet", "value", "count"], title="Contents")

    @collections.command("delete")
    @handle_errors
    def collections_delete(collection: str,
                           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                           user: Optional[str] = typer.Option(None, "--user")) -> None:
        """Delete a collection; images also in other collections stay."""
        from aqualens.catalog.collection_crud import delete_collection

        ctx = context()
        who = cli_user(ctx, user)
        if not yes:
            typer.confirm(f"Delete collection {collection!r} and the images only it holds?",
                          abort=True)
        out = delete_collection(ctx, collection, who)
        console.print(f"deleted collection {out['id']}: {out['images_deleted']} image(s) "
                      f"deleted, {out['images_kept']} kept, {out['blobs_removed']} blob(s) freed")

    @labels.command("list")
    @handle_errors
    def labels_list(prefix: Optional[str] = typer.Option(None, help="Names starting with."),
                    fmt: str = typer.Option("table", "--format", help=FORMATS)) -> None:
        """Labels with their AphiaID and number of current annotations."""
        from aqualens.catalog.labels import list_labels

        _check_format(fmt)
        ctx = context()
        cli_user(ctx)
        with ctx.session() as s:
            rows = [{"id": r.id, "name": r.name, "aphia_id": r.aphia_id, "rank": r.rank,
                     "parent_id": r.parent_id, "annotations": n}
                    for r, n in list_labels(s, prefix=prefix, limit=10000)]
        emit(rows, fmt, ["id", "name", "aphia_id", "rank", "parent_id", "annotations"],
             title="Labels")

    @labels.command("add")
    @handle_errors
    def labels_add(name: str,
                   aphia_id: Optional[int] = typer.Option(None, "--aphia-id",
                                                          help="WoRMS AphiaID."),
                   rank: Optional[str] = typer.Option(None, help="e.g. Species, Genus."),
                   parent: Optional[str] = typer.Option(None, help="Parent label id or name."),
                   synonym: list[str] = typer.Option([], "--synonym",
                                                     help="Another name (repeatable).")) -> None:
        """Add a label to the vocabulary."""
        from aqualens.catalog.labels import create_label

        ctx = context()
        cli_user(ctx)
        with ctx.session() as s:
            row = create_label(s, name, aphia_id=aphia_id, rank=rank, parent=parent,
                               synonyms=synonym)
            console.print(f"added label {row.id} {row.name!r}"
                          + (f" (AphiaID {row.aphia_id})" if row.aphia_id else ""))

    @images.command("show")
    @handle_errors
    def images_show(image: str = typer.Argument(..., help="Image id or sha256:<hex> PID."),
                    history: bool = typer.Option(False, "--history",
                                                 help="Include superseded annotations."),
                    fmt: str = typer.Option("table", "--format", help=FORMATS),
                    user: Optional[str] = typer.Option(None, "--user")) -> None:
        """An image's metadata, collections and annotations."""
        from aqualens.catalog.annotations import annotation_dict, list_annotations
        from aqualens.catalog.images import get_image, image_collections, image_dict

        _check_format(fmt)
        ctx = context()
        who = cli_user(ctx, user)
        with ctx.session() as s:
            row = get_image(s, image, who)
            info = image_dict(row)
            info["collections"] = [c.name for c in image_collections(s, row.id, who)]
            anns = [annotation_dict(a) for a in
                    list_annotations(s, row.id, who, history=history)]
        if fmt == "json":
            info["annotations"] = anns
            typer.echo(json.dumps(info, indent=2, default=_json_default))
            return
        emit([{"field": k, "value": json.dumps(v, default=_json_default)
               if isinstance(v, (dict, list)) else v} for k, v in info.items()], fmt,
             ["field", "value"], title=f"Image {row.id}")
        emit(anns, fmt, ["id", "label", "geometry_type", "score", "status", "source",
                         "is_current", "supersedes_id"], title="Annotations")

    @images.command("delete")
    @handle_errors
    def images_delete(image: str = typer.Argument(..., help="Image id or sha256:<hex> PID."),
                      yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                      user: Optional[str] = typer.Option(None, "--user")) -> None:
        """Delete an image everywhere; its blob goes once nothing references it."""
        from aqualens.catalog.images import delete_image

        ctx = context()
        who = cli_user(ctx, user)
        if not yes:
            typer.confirm(f"Delete image {image} from every collection?", abort=True)
        out = delete_image(ctx, image, who)
        console.print(f"deleted image {out['id']} ({len(out['blobs_removed'])} blob(s) freed)")
