"""Export a collection or a search query to any format plugin.

Current annotations are exported (``statuses`` filters them; by default everything except
``rejected``). Labels carry their AphiaID, supercategory and rank into the formats that have a
field for them. Geometry a format cannot express (e.g. masks in YOLO) is left out and counted in
the result's warnings. Image files come from the blob store (a local path when the store has one,
else a temporary copy). ``dest`` ending in ``.zip`` gives a zip; anything else a folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import Annotation, CollectionImage, Image, Label, User
from aqualens.core.errors import ValidationError
from aqualens.formats import get_format
from aqualens.formats.base import (AnnotationRecord, Dataset, ImageRecord, LabelRecord,
                                   unique_names, zip_folder)

Progress = Callable[[str, int, int], None]
DEFAULT_STATUSES = ("predicted", "validated", "dubious")


@dataclass
class ExportResult:
    path: Path
    format: str
    images: int = 0
    annotations: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "images": self.images,
                "annotations": self.annotations, "warnings": self.warnings}


def _image_ids(session: Any, user: User | None, collection: str | int | None,
               query: Any) -> tuple[list[int], dict[int, str], str]:
    from aqualens.catalog.collections import find_collection

    names: dict[int, str] = {}
    if collection is not None:
        coll = find_collection(session, collection, user)
        rows = session.execute(select(CollectionImage.image_id, CollectionImage.original_name)
                               .where(CollectionImage.collection_id == coll.id)
                               .order_by(CollectionImage.image_id)).all()
        names = {r[0]: r[1] for r in rows if r[1]}
        return [r[0] for r in rows], names, coll.name
    if query is None:
        raise ValidationError("export needs a collection or a query", field="collection",
                              valid="--collection NAME or --query ...")
    from aqualens.catalog.search import iter_image_ids

    return list(iter_image_ids(session, query, user)), names, "query"


def build_dataset(ctx: Context, user: User | None, *, collection: str | int | None = None,
                  query: Any = None, statuses: tuple[str, ...] | None = None,
                  tmp: Path | None = None) -> Dataset:
    """The neutral dataset for a collection or query (images, current annotations, labels)."""
    statuses = tuple(statuses or DEFAULT_STATUSES)
    store = ctx.store
    ds = Dataset()
    with ctx.session() as s:
        ids, coll_names, title = _image_ids(s, user, collection, query)
        ds.meta["name"] = title
        images: dict[int, Image] = {}
        for i in range(0, len(ids), 500):
            for img in s.scalars(select(Image).where(Image.id.in_(ids[i:i + 500]))):
                images[img.id] = img
        raw_names = [coll_names.get(i) or images[i].original_name or
                     f"{images[i].sha256[:16]}.{(images[i].format or 'jpg').lower()}"
                     for i in ids if i in images]
        refs = unique_names([n.replace("\\", "/").lstrip("/") for n in raw_names])
        ref_of: dict[int, str] = {}
        for img_id, ref in zip([i for i in ids if i in images], refs):
            img = images[img_id]
            path = store.local_path(img.sha256)
            if path is None:
                tmp = tmp or Path(tempfile.mkdtemp(prefix="aqualens-export-"))
                path = tmp / f"{img.sha256}.{(img.format or 'bin').lower()}"
                path.write_bytes(store.get_bytes(img.sha256))
            meta = {k: v for k, v in (img.meta or {}).items() if k != "exif"}
            for key in ("lat", "lon", "depth", "instrument", "station"):
                if getattr(img, key) is not None:
                    meta[key] = getattr(img, key)
            if img.captured_at is not None:
                meta["captured_at"] = img.captured_at.isoformat()
            ds.images.append(ImageRecord(ref=ref, path=Path(path), url=img.source_url,
                                         width=img.width, height=img.height, metadata=meta))
            ref_of[img_id] = ref
        labels: dict[int, Label] = {}
        id_list = list(ref_of)
        for i in range(0, len(id_list), 500):
            q = (select(Annotation, Label).outerjoin(Label, Label.id == Annotation.label_id)
                 .where(Annotation.image_id.in_(id_list[i:i + 500]),
                        Annotation.is_current.is_(True), Annotation.status.in_(statuses))
                 .order_by(Annotation.image_id, Annotation.id))
            for ann, lab in s.execute(q):
                if lab is not None:
                    labels[lab.id] = lab
                ds.annotations.append(AnnotationRecord(
                    image_ref=ref_of[ann.image_id], label=lab.name if lab else None,
                    geometry_type=ann.geometry_type, geometry=ann.geometry, score=ann.score,
                    status=ann.status, attributes=dict(ann.attributes or {}),
                    location=f"annotation {ann.id}"))
        parents = {lab.parent_id for lab in labels.values() if lab.parent_id}
        parent_names = {lab.id: lab.name for lab in s.scalars(
            select(Label).where(Label.id.in_(parents)))} if parents else {}
        for lab in sorted(labels.values(), key=lambda x: x.name):
            ds.labels.append(LabelRecord(name=lab.name, aphia_id=lab.aphia_id,
                                         supercategory=lab.supercategory, rank=lab.rank,
                                         parent=parent_names.get(lab.parent_id or -1)))
    return ds


def export_dataset(ctx: Context, fmt: str, dest: Path, *, user: User | None,
                   collection: str | int | None = None, query: Any = None,
                   statuses: tuple[str, ...] | None = None,
                   options: dict[str, Any] | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """Write a collection or query in format ``fmt`` to ``dest`` (a folder, or ``*.zip``)."""
    plugin = get_format(fmt)
    dest = Path(dest)
    tick = progress or (lambda stage, done, total: None)
    with tempfile.TemporaryDirectory(prefix="aqualens-export-") as tmp:
        ds = build_dataset(ctx, user, collection=collection, query=query, statuses=statuses,
                           tmp=Path(tmp))
        tick("exporting", 0, len(ds.images))
        result = ExportResult(path=dest, format=fmt, images=len(ds.images))
        keep, dropped = [], {}
        for ann in ds.annotations:
            if ann.geometry_type in plugin.geometries:
                keep.append(ann)
            else:
                dropped[ann.geometry_type] = dropped.get(ann.geometry_type, 0) + 1
        for gtype, n in dropped.items():
            result.warnings.append(f"{n} {gtype} annotations left out: {fmt} cannot express "
                                   f"them (it writes {', '.join(plugin.geometries)})")
        ds.annotations = keep
        result.annotations = len(keep)
        if dest.suffix.lower() == ".zip":
            out = Path(tmp) / "out"
            plugin.write(ds, out, dict(options or {}))
            dest.parent.mkdir(parents=True, exist_ok=True)
            zip_folder(out, dest)
        else:
            if dest.exists() and any(dest.iterdir()):
                raise ValidationError(f"{dest} exists and is not empty", field="dest",
                                      valid="a new or empty folder, or a .zip path")
            plugin.write(ds, dest, dict(options or {}))
        tick("exporting", len(ds.images), len(ds.images))
    return result
