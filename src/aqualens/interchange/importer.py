"""Import annotation files into the catalogue: validate everything, ingest images, write once.

Order of work, so that a refused import changes nothing:

1. The format plugin reads ``src`` into neutral records (reader problems are collected).
2. Validation, without writing (:mod:`aqualens.interchange.plan`): every image is hashed and
   decoded; every annotation's image reference, geometry (against the real image size; outside
   -> clip or reject by policy), score, status and label (``unknown_labels`` policy) is
   checked; duplicates (in the file, or already stored on the same image) are left out with a
   warning.
3. Any error and not ``partial``: the import is refused and the report returned; nothing stored.
4. Images go in through :func:`aqualens.ingest.pipeline.ingest_files` (its own transactions,
   thumbnails, hooks), then labels and annotations in ONE transaction. If that transaction (or
   the ingest) fails, the rows the ingest added (new images, new collection links, a collection
   created by the import) are removed again; blobs left without rows are orphans that
   ``aqualens fsck --repair`` removes.

Images referenced only by URL (COCO ``coco_url``, DwC ``associatedMedia`` URLs) are not fetched:
their annotations are kept as annotation-only records in the collection's metadata
(``Collection.meta["annotation_only"]``) and reported as warnings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import (Annotation, Collection, CollectionImage, Image, UsageEvent, User)
from aqualens.core.errors import FormatError, NotFound, ValidationError
from aqualens.formats import get_format
from aqualens.formats.base import (AnnotationRecord, ImageRecord, opened_source)
from aqualens.interchange.plan import (ImportOptions, ImportPlan, PlannedImage, Progress,
                                       plan_import)
from aqualens.interchange.report import ImportReport
from aqualens.interchange.vocabulary import LabelResolver

def _owner(ctx: Context, user: User | int) -> User:
    with ctx.session() as s:
        row = s.get(User, user if isinstance(user, int) else user.id)
        if row is None:
            raise NotFound("no such user", field="user")
        s.expunge(row)
        return row


def _metadata_for(rec: ImageRecord, report: ImportReport) -> dict[str, Any]:
    """The image's metadata in the form ingest accepts; bad known fields become free keys."""
    from aqualens.ingest.sidecar import FIELDS, normalise_record

    meta = {k: v for k, v in rec.metadata.items() if v is not None and v != ""}
    try:
        normalise_record(meta, rec.ref)
        return meta
    except (FormatError, ValidationError):
        pass
    out: dict[str, Any] = {}
    for key, val in meta.items():
        if key in FIELDS:
            try:
                normalise_record({key: val}, rec.ref)
            except (FormatError, ValidationError):
                report.add(rec.source or rec.ref, None, f"{key} {val!r} is not valid; kept as "
                           f"free metadata '{key}_raw'", "warning")
                out[f"{key}_raw"] = val
                continue
        out[key] = val
    return out


def import_annotations(ctx: Context, fmt: str, src: Path, *, collection: str, user: User | int,
                       options: ImportOptions | None = None,
                       progress: Progress | None = None) -> ImportReport:
    """Import ``src`` in format ``fmt`` into the user's collection ``collection``.

    Returns the report; ``report.refused`` is True when errors stopped an all-or-nothing import
    (nothing stored). Raises :class:`FormatError` when the file cannot be read at all.
    """
    options = options or ImportOptions()
    options.check()
    started = time.perf_counter()
    plugin = get_format(fmt)
    owner = _owner(ctx, user)
    report = ImportReport(format=fmt, source=Path(src).name, collection=collection,
                          partial=options.partial)
    tick = progress or (lambda stage, done, total: None)
    with opened_source(Path(src)) as root:
        ds = plugin.read(root, dict(options.format_options))
        report.problems.extend(ds.problems)
        plan = plan_import(ctx, ds, options, report, tick)
        if report.errors and not options.partial:
            report.refused = True
            report.annotations_skipped = len(ds.annotations)
        else:
            _store(ctx, plan, owner, collection, options, report, tick)
    report.seconds = time.perf_counter() - started
    return report


def _store(ctx: Context, plan: ImportPlan, owner: User, collection: str, options: ImportOptions,
           report: ImportReport, tick: Progress) -> None:
    from aqualens.catalog.collections import check_name
    from aqualens.ingest.pipeline import ingest_files

    check_name(collection)
    with ctx.session() as s:
        existed = s.scalar(select(Collection.id).where(Collection.owner_id == owner.id,
                                                       Collection.name == collection))
    from aqualens.ingest.pipeline import resolve_collection

    coll_id = resolve_collection(ctx, collection, owner.id, options.visibility)
    report.collection_id = coll_id
    with ctx.session() as s:
        before = set(s.scalars(select(CollectionImage.image_id)
                               .where(CollectionImage.collection_id == coll_id)))
    # Ingest each distinct content once, under its first reference.
    files: list[tuple[str, Path]] = []
    metadata: dict[str, dict[str, Any]] = {}
    first_ref: dict[str, str] = {}
    for ref, img in plan.images.items():
        if img.sha in first_ref:
            continue
        first_ref[img.sha] = ref
        files.append((ref, Path(img.rec.path)))  # type: ignore[arg-type]
        if img.image_id is None:  # stored images keep their metadata (and no rollback worry)
            metadata[ref] = _metadata_for(img.rec, report)
    total = len(files)
    done = [0]

    def on_progress(n: int) -> None:
        done[0] += n
        tick("ingesting images", done[0], total)

    ingest = None
    try:
        ingest = ingest_files(ctx, files, collection_id=coll_id, owner_id=owner.id,
                              metadata=metadata or None, progress=on_progress,
                              visibility=options.visibility, expand_archives=False)
        ids = {item.name: item.image_id for item in ingest.accepted}
        rejected = {r.name: r.reason for r in ingest.rejected}
        for name, reason in rejected.items():
            report.add(name, None, f"image not ingested: {reason}")
        by_sha = {sha: ids.get(ref) for sha, ref in first_ref.items()}
        if rejected and not options.partial:
            raise _Refused()
        kept = [(a, i) for a, i in plan.annotations if by_sha.get(i.sha) is not None]
        report.annotations_skipped += len(plan.annotations) - len(kept)
        _write(ctx, kept, by_sha, plan, owner, coll_id, options, report, tick)
    except BaseException as exc:
        _undo(ctx, ingest, coll_id, before, existed is None)
        if isinstance(exc, _Refused):
            report.refused = True
            report.collection_id = None
            return
        raise
    report.images_added = ingest.new_images
    report.images_linked = ingest.linked
    report.images_existing = len(ingest.accepted) - ingest.linked


class _Refused(Exception):
    """Internal: the ingest rejected files in an all-or-nothing import."""


def _write(ctx: Context, kept: list[tuple[AnnotationRecord, PlannedImage]], by_sha: dict[str, int | None],
           plan: ImportPlan, owner: User, coll_id: int, options: ImportOptions, report: ImportReport,
           tick: Progress) -> None:
    with ctx.session() as s:
        resolver = LabelResolver(s, options.unknown_labels)
        label_ids: dict[str, int] = {}
        for name, rec in plan.labels.items():
            lab, created, warning = resolver.label_for(rec)
            if lab is None:
                continue
            label_ids[name] = lab.id
            if created:
                report.labels_created.append(lab.name)
            if warning:
                report.add(report.source, None, warning, "warning")
        rows = []
        for ann, img in kept:
            rows.append({
                "image_id": by_sha[img.sha], "label_id": label_ids[ann.label],  # type: ignore
                "geometry_type": ann.geometry_type, "geometry": ann.geometry,
                "score": None if ann.score is None else float(ann.score), "status": ann.status,
                "source": "import", "author_id": owner.id, "owner_id": owner.id,
                "visibility": options.visibility, "attributes": ann.attributes or {},
                "is_current": True})
        for i in range(0, len(rows), 1000):
            s.execute(insert(Annotation), rows[i:i + 1000])
            tick("writing annotations", min(i + 1000, len(rows)), len(rows))
        report.annotations_added = len(rows)
        if plan.annotation_only:
            coll = s.get(Collection, coll_id)
            meta = dict(coll.meta or {})
            meta["annotation_only"] = list(meta.get("annotation_only", [])) + plan.annotation_only
            coll.meta = meta
            report.annotation_only = len(plan.annotation_only)
        s.add(UsageEvent(user_id=owner.id, kind="import", images=len(by_sha),
                         details={"collection_id": coll_id, "format": report.format,
                                  "annotations": len(rows), "source": report.source}))


def _undo(ctx: Context, ingest: Any, coll_id: int, before: set[int], drop_collection: bool) -> None:
    """Remove the rows an ingest added for a failed import (links, new images, the collection)."""
    with ctx.session() as s:
        if ingest is not None:
            new_links = [i.image_id for i in ingest.accepted if i.linked and
                         i.image_id not in before]
            if new_links:
                s.execute(delete(CollectionImage).where(CollectionImage.collection_id == coll_id,
                                                        CollectionImage.image_id.in_(new_links)))
            new_images = [i.image_id for i in ingest.accepted if not i.duplicate]
            if new_images:
                still = set(s.scalars(select(CollectionImage.image_id).where(
                    CollectionImage.image_id.in_(new_images))))
                gone = [i for i in new_images if i not in still]
                if gone:
                    s.execute(delete(Annotation).where(Annotation.image_id.in_(gone)))
                    s.execute(delete(Image).where(Image.id.in_(gone)))
            # The ingest's usage event counted images that are gone again.
            last = s.scalar(select(UsageEvent.id).where(UsageEvent.kind == "ingest")
                            .order_by(UsageEvent.id.desc()).limit(1))
            if last is not None:
                s.execute(delete(UsageEvent).where(UsageEvent.id == last))
        if drop_collection:
            left = s.scalar(select(CollectionImage.image_id).where(
                CollectionImage.collection_id == coll_id).limit(1))
            if left is None:
                s.execute(delete(Collection).where(Collection.id == coll_id))
