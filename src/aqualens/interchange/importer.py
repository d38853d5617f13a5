"""Import annotation files into the catalogue: validate everything, ingest images, write once.

Order of work, so that a refused import changes nothing:

1. The format plugin reads ``src`` into neutral records (reader problems are collected).
2. Validation, without writing: every image is hashed and decoded; every annotation's image
   reference, geometry (against the real image size; outside -> clip or reject by policy),
   score, status and label (``unknown_labels`` policy) is checked; duplicates (in the file, or
   already stored on the same image) are left out with a warning.
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

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import (Annotation, Collection, CollectionImage, Image, Label,
                                     UsageEvent, User)
from aqualens.core.errors import FormatError, NotFound, ValidationError
from aqualens.formats import get_format
from aqualens.formats.base import (AnnotationRecord, Dataset, ImageRecord, LabelRecord,
                                   opened_source)
from aqualens.formats.geometry import GeometryProblem, check_geometry, geometry_key
from aqualens.interchange.report import ImportReport
from aqualens.interchange.vocabulary import MODES, LabelResolver

Progress = Callable[[str, int, int], None]
OUTSIDE = ("clip", "reject")
STATUSES = ("predicted", "validated", "dubious", "rejected")


@dataclass
class ImportOptions:
    """Policies of one import (CLI flags / REST form fields)."""

    partial: bool = False
    on_outside: str = "clip"            # clip | reject
    unknown_labels: str = "create"      # create | map | reject
    status: str | None = None           # override every annotation's status
    visibility: str = "private"
    format_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.on_outside not in OUTSIDE:
            raise ValidationError(f"unknown outside policy {self.on_outside!r}",
                                  field="on_outside", valid=", ".join(OUTSIDE))
        if self.unknown_labels not in MODES:
            raise ValidationError(f"unknown labels policy {self.unknown_labels!r}",
                                  field="unknown_labels", valid=", ".join(MODES))
        if self.status is not None and self.status not in STATUSES:
            raise ValidationError(f"unknown status {self.status!r}", field="status",
                                  valid=", ".join(STATUSES))


@dataclass
class _Img:
    rec: ImageRecord
    sha: str
    width: int
    height: int
    image_id: int | None = None   # set when the content is already stored


def _check_image(rec: ImageRecord, max_pixels: int) -> tuple[str, int, int] | str:
    """(sha256, width, height), or the reason the file is not a usable image."""
    from PIL import Image as PILImage

    try:
        data = Path(rec.path).read_bytes()  # type: ignore[arg-type]
    except OSError as exc:
        return f"cannot read image file: {exc.strerror or exc}"
    sha = hashlib.sha256(data).hexdigest()
    import io

    try:
        with PILImage.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                return f"image has {w}x{h} pixels, over the limit of {max_pixels}"
            if im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # decode cheaply, still whole
            im.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on damaged files
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return sha, int(w), int(h)


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
        plan = _validate(ctx, ds, options, report, tick)
        if report.errors and not options.partial:
            report.refused = True
            report.annotations_skipped = len(ds.annotations)
        else:
            _store(ctx, plan, owner, collection, options, report, tick)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Plan:
    images: dict[str, _Img] = field(default_factory=dict)
    annotations: list[tuple[AnnotationRecord, _Img]] = field(default_factory=list)
    labels: dict[str, LabelRecord] = field(default_factory=dict)
    annotation_only: list[dict[str, Any]] = field(default_factory=list)


def _validate(ctx: Context, ds: Dataset, options: ImportOptions, report: ImportReport,
              tick: Progress) -> _Plan:
    plan = _Plan()
    max_pixels = ctx.settings.limits.max_image_pixels
    url_only: dict[str, ImageRecord] = {}
    bad_refs: set[str] = set()
    total = len(ds.images)
    for n, rec in enumerate(ds.images, start=1):
        where = rec.source or rec.ref
        if rec.path is None:
            if rec.url:
                url_only[rec.ref] = rec
            else:
                report.add(where, None, f"image {rec.ref!r} resolves to no file")
                bad_refs.add(rec.ref)
            continue
        checked = _check_image(rec, max_pixels)
        if isinstance(checked, str):
            report.add(where, None, f"image {rec.ref}: {checked}")
            bad_refs.add(rec.ref)
            continue
        sha, w, h = checked
        if rec.width and rec.height and (rec.width, rec.height) != (w, h):
            report.add(where, None, f"declared size {rec.width}x{rec.height} differs from the "
                       f"image's {w}x{h}; the real size is used", "warning")
        plan.images[rec.ref] = _Img(rec, sha, w, h)
        if n % 50 == 0 or n == total:
            tick("checking images", n, total)
    # Images already stored: their ids, and their current annotations for duplicate detection.
    stored_keys: set[tuple[str, str, str]] = set()
    with ctx.session() as s:
        shas = {i.sha for i in plan.images.values()}
        by_sha: dict[str, int] = {}
        sha_list = list(shas)
        for i in range(0, len(sha_list), 500):
            for img_id, sha, meta in s.execute(select(Image.id, Image.sha256, Image.meta).where(
                    Image.sha256.in_(sha_list[i:i + 500]))):
                by_sha[sha] = img_id
                for item in plan.images.values():
                    if item.sha == sha:
                        _compare_meta(item.rec, meta or {}, report)
        for item in plan.images.values():
            item.image_id = by_sha.get(item.sha)
        ids = list(set(by_sha.values()))
        for i in range(0, len(ids), 500):
            q = (select(Annotation.image_id, Label.name, Annotation.geometry_type,
                        Annotation.geometry, Annotation.attributes)
                 .join(Label, Label.id == Annotation.label_id)
                 .where(Annotation.image_id.in_(ids[i:i + 500]),
                        Annotation.is_current.is_(True)))
            sha_of = {v: k for k, v in by_sha.items()}
            for img_id, name, gtype, geom, attrs in s.execute(q):
                stored_keys.add((sha_of[img_id], name, geometry_key(gtype, geom)
                                 + _object_key(attrs)))
        resolver = LabelResolver(s, options.unknown_labels)
        label_recs = {lab.name: lab for lab in ds.used_labels()}
        unknown: dict[str, list[str]] = {}
        resolvable: set[str] = set()
        for name, lab in label_recs.items():
            if resolver.resolve(name) is not None or options.unknown_labels == "create":
                resolvable.add(name)
                plan.labels[name] = lab
        s.rollback()
    seen: set[tuple[str, str, str]] = set()
    for ann in ds.annotations:
        where = ann.location
        skip = False
        if ann.image_ref in url_only:
            if ann.label and ann.label in resolvable:
                plan.annotation_only.append(_annotation_dict(ann, url_only[ann.image_ref]))
            continue
        img = plan.images.get(ann.image_ref)
        if img is None:
            if ann.image_ref not in bad_refs:
                report.add(ann.file, where, f"image reference {ann.image_ref!r} resolves to "
                           "no image")
            report.annotations_skipped += 1
            continue
        if not ann.label:
            report.add(ann.file, where, "annotation without a label")
            skip = True
        elif ann.label not in resolvable:
            unknown.setdefault(ann.label, []).append(f"{ann.file}:{where}")
            skip = True
        status = options.status or ann.status
        if status not in STATUSES:
            report.add(ann.file, where, f"status {status!r} is not one of {', '.join(STATUSES)}")
            skip = True
        if ann.score is not None and not (isinstance(ann.score, (int, float))
                                          and 0.0 <= float(ann.score) <= 1.0):
            report.add(ann.file, where, f"score {ann.score!r} must be a number in [0, 1]")
            skip = True
        try:
            geom, note = check_geometry(ann.geometry_type, ann.geometry, img.width, img.height,
                                        options.on_outside)
        except GeometryProblem as exc:
            report.add(ann.file, where, f"{ann.geometry_type}: {exc}")
            skip = True
            geom, note = None, None
        if skip:
            report.annotations_skipped += 1
            continue
        if note:
            report.add(ann.file, where, note, "warning")
        key = (img.sha, ann.label or "", geometry_key(ann.geometry_type, geom)
               + _object_key(ann.attributes))
        if key in seen or key in stored_keys:
            report.add(ann.file, where, "duplicate annotation (same image, label and geometry "
                       + ("in this import" if key in seen else "already stored") + "): skipped",
                       "warning")
            report.annotations_skipped += 1
            continue
        seen.add(key)
        ann.geometry = geom
        ann.status = status
        plan.annotations.append((ann, img))
    for name, wheres in unknown.items():
        more = f" and {len(wheres) - 1} more" if len(wheres) > 1 else ""
        report.add(wheres[0].split(":", 1)[0], wheres[0].split(":", 1)[1],
                   f"unknown label {name!r} ({len(wheres)} annotations: {wheres[0]}{more}); "
                   f"policy --unknown-labels {options.unknown_labels} "
                   "(use create, or add it with 'aqualens labels import-taxa')")
    for ref, rec in url_only.items():
        n = sum(1 for a in plan.annotation_only if a["image"] == ref)
        report.add(rec.source or ref, None, f"image {ref!r} is only a URL ({rec.url}): not "
                   f"fetched; its {n} annotations are kept as annotation-only records",
                   "warning")
    return plan


def _object_key(attrs: Any) -> str:
    """Objects with their own id (EcoTaxa object_id) are distinct even on the same image."""
    oid = attrs.get("object_id") if isinstance(attrs, dict) else None
    return f"|object:{oid}" if oid not in (None, "") else ""


def _compare_meta(rec: ImageRecord, stored: dict[str, Any], report: ImportReport) -> None:
    diff = sorted(k for k, v in rec.metadata.items()
                  if k in stored and v not in (None, "") and stored.get(k) != v)
    if diff:
        report.add(rec.source or rec.ref, None, f"image {rec.ref} is already stored with other "
                   f"values for {', '.join(diff[:6])}: the stored metadata is kept", "warning")


def _annotation_dict(ann: AnnotationRecord, rec: ImageRecord) -> dict[str, Any]:
    return {"image": rec.ref, "url": rec.url, "width": rec.width, "height": rec.height,
            "label": ann.label, "geometry_type": ann.geometry_type, "geometry": ann.geometry,
            "score": ann.score, "status": ann.status, "attributes": ann.attributes,
            "file": ann.file, "location": ann.location}


def _store(ctx: Context, plan: _Plan, owner: User, collection: str, options: ImportOptions,
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


def _write(ctx: Context, kept: list[tuple[AnnotationRecord, _Img]], by_sha: dict[str, int | None],
           plan: _Plan, owner: User, coll_id: int, options: ImportOptions, report: ImportReport,
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
