"""Step 2 of an import (see :mod:`aqualens.interchange.importer`): validate everything and plan
the writes, without writing. Every image is hashed and decoded; every annotation's image
reference, geometry (against the real image size; outside -> clip or reject by policy), score,
status and label is checked; duplicates (in the file, or already stored on the same image) are
left out with a warning. The result is an :class:`ImportPlan` and the problems in the report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import Annotation, Image, Label
from aqualens.core.errors import ValidationError
from aqualens.formats.base import AnnotationRecord, Dataset, ImageRecord, LabelRecord
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
class PlannedImage:
    rec: ImageRecord
    sha: str
    width: int
    height: int
    image_id: int | None = None   # set when the content is already stored


def check_image(rec: ImageRecord, max_pixels: int) -> tuple[str, int, int] | str:
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


@dataclass
class ImportPlan:
    images: dict[str, PlannedImage] = field(default_factory=dict)
    annotations: list[tuple[AnnotationRecord, PlannedImage]] = field(default_factory=list)
    labels: dict[str, LabelRecord] = field(default_factory=dict)
    annotation_only: list[dict[str, Any]] = field(default_factory=list)


def plan_import(ctx: Context, ds: Dataset, options: ImportOptions, report: ImportReport,
              tick: Progress) -> ImportPlan:
    plan = ImportPlan()
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
        checked = check_image(rec, max_pixels)
        if isinstance(checked, str):
            report.add(where, None, f"image {rec.ref}: {checked}")
            bad_refs.add(rec.ref)
            continue
        sha, w, h = checked
        if rec.width and rec.height and (rec.width, rec.height) != (w, h):
            report.add(where, None, f"declared size {rec.width}x{rec.height} differs from the "
                       f"image's {w}x{h}; the real size is used", "warning")
        plan.images[rec.ref] = PlannedImage(rec, sha, w, h)
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
