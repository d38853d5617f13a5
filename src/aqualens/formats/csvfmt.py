"""CSV of annotations: one row per annotation (``annotations.csv`` + ``images/``).

Columns (header required; only ``image`` and ``label`` are mandatory):

``image`` (file name relative to the CSV or images/, or an http(s) URL), ``label``, ``aphia_id``,
``geometry_type`` (none, box, polygon, mask, point), ``geometry`` (JSON in catalogue
conventions), ``score``, ``status``, ``attributes`` (JSON object), plus image metadata columns
``width``, ``height``, ``captured_at``, ``lat``, ``lon``, ``depth``, ``instrument``, ``station``.
A row with an empty label declares an image without annotations. Wrong column types are reported
with the row and column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   find_image, opened_source, read_text, safe_float)

COLUMNS = ["image", "label", "aphia_id", "geometry_type", "geometry", "score", "status",
           "attributes", "width", "height", "captured_at", "lat", "lon", "depth", "instrument",
           "station"]
META_NUM = ("lat", "lon", "depth")
META_TEXT = ("captured_at", "instrument", "station")


class CsvFormat(Format):
    name = "csv"
    description = "CSV, one row per annotation (geometry as JSON)"

    def detect(self, src: Path) -> bool:
        return Path(src).suffix.lower() == ".csv"

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        with opened_source(Path(src)) as root:
            if root.is_dir():
                cands = sorted(root.glob("*.csv")) or sorted(root.rglob("*.csv"))
                if not cands:
                    raise FormatError(f"{Path(src).name}: no .csv file", field=Path(src).name)
                path = next((p for p in cands if p.name == "annotations.csv"), cands[0])
            else:
                path = root
            return self._read(path)

    def _read(self, path: Path) -> Dataset:
        rel = path.name
        text = read_text(path, rel=rel)
        try:
            rows = list(csv.reader(text.splitlines()))
        except csv.Error as exc:
            raise FormatError(f"{rel}: {exc}", field=rel) from None
        if not rows:
            raise FormatError(f"{rel} is empty: expected a header row", field=rel)
        head = [h.strip().lower() for h in rows[0]]
        for need in ("image", "label"):
            if need not in head:
                raise FormatError(f"{rel}: no '{need}' column", field=f"{rel}:1",
                                  valid=", ".join(COLUMNS))
        ds = Dataset()
        images: dict[str, ImageRecord] = {}
        for n, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            where = f"line {n}"
            if len(row) != len(head):
                ds.problem(rel, where, f"row has {len(row)} values, the header {len(head)}")
                continue
            rec = dict(zip(head, (c.strip() for c in row)))
            errs: list[str] = []
            img_name = rec["image"]
            if not img_name:
                ds.problem(rel, where, "column image is empty")
                continue
            if img_name not in images:
                meta: dict[str, Any] = {}
                for key in META_NUM:
                    if rec.get(key):
                        val = safe_float(rec[key])
                        if val is None:
                            errs.append(f"column {key}: {rec[key]!r} is not a number")
                        else:
                            meta[key] = val
                for key in META_TEXT:
                    if rec.get(key):
                        meta[key] = rec[key]
                dims = []
                for key in ("width", "height"):
                    raw = rec.get(key) or ""
                    if raw and not raw.isdigit():
                        errs.append(f"column {key}: {raw!r} is not a positive integer")
                    dims.append(int(raw) if raw.isdigit() and int(raw) > 0 else None)
                is_url = img_name.startswith(("http://", "https://"))
                img_path = None if is_url else find_image(path.parent, img_name)
                if not is_url and img_path is None:
                    errs.append(f"image {img_name!r} resolves to no file beside the CSV or in "
                                "images/")
                if errs:
                    for e in errs:
                        ds.problem(rel, where, e)
                    continue
                images[img_name] = ImageRecord(ref=img_name, path=img_path,
                                               url=img_name if is_url else None, width=dims[0],
                                               height=dims[1], metadata=meta, source=f"{rel}:{n}")
                ds.images.append(images[img_name])
            label = rec.get("label", "")
            if not label:
                continue
            gtype = rec.get("geometry_type") or "none"
            if gtype not in ("none", "box", "polygon", "mask", "point"):
                errs.append(f"column geometry_type: unknown {gtype!r} (valid: none, box, "
                            "polygon, mask, point)")
            geometry = None
            if rec.get("geometry"):
                try:
                    geometry = json.loads(rec["geometry"])
                except (json.JSONDecodeError, RecursionError):
                    errs.append("column geometry: not valid JSON")
            score = None
            if rec.get("score"):
                score = safe_float(rec["score"])
                if score is None:
                    errs.append(f"column score: {rec['score']!r} is not a number")
            status = rec.get("status") or ("predicted" if score is not None else "validated")
            if status not in ("predicted", "validated", "dubious", "rejected"):
                errs.append(f"column status: {status!r} is not one of predicted, validated, "
                            "dubious, rejected")
            attrs: Any = {}
            if rec.get("attributes"):
                try:
                    attrs = json.loads(rec["attributes"])
                except (json.JSONDecodeError, RecursionError):
                    attrs = None
                if not isinstance(attrs, dict):
                    errs.append("column attributes: not a JSON object")
            aphia = rec.get("aphia_id") or ""
            if aphia and not aphia.isdigit():
                errs.append(f"column aphia_id: {aphia!r} is not an integer")
            if errs:
                for e in errs:
                    ds.problem(rel, where, e)
                continue
            ds.ensure_label(label, aphia_id=int(aphia) if aphia else None)
            ds.annotations.append(AnnotationRecord(
                image_ref=img_name, label=label, geometry_type=gtype, geometry=geometry,
                score=score, status=status, attributes=attrs, file=rel, location=where))
        return ds

    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        labels = {lab.name: lab for lab in dataset.used_labels()}
        names = dict(zip([img.ref for img in dataset.images], dataset.file_names()))
        by_image = dataset.annotations_by_image()
        out = dest / "annotations.csv"
        with open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for img in dataset.images:
                name = names[img.ref]
                ref = f"images/{name}" if img.path is not None else (img.url or name)
                meta = img.metadata
                base = {"image": ref, "width": img.width or "", "height": img.height or ""}
                for key in META_NUM + META_TEXT:
                    base[key] = "" if meta.get(key) is None else meta[key]
                for ann in by_image.get(img.ref) or [None]:
                    row = dict(base)
                    if ann is not None and ann.label:
                        lab = labels.get(ann.label)
                        row.update({
                            "label": ann.label,
                            "aphia_id": lab.aphia_id if lab and lab.aphia_id else "",
                            "geometry_type": ann.geometry_type,
                            "geometry": "" if ann.geometry is None else json.dumps(ann.geometry),
                            "score": "" if ann.score is None else repr(float(ann.score)),
                            "status": ann.status,
                            "attributes": json.dumps(ann.attributes, default=str)
                            if ann.attributes else ""})
                    writer.writerow(["" if row.get(c) is None else row.get(c, "") for c in COLUMNS])
                if img.path is not None and options.get("include_images", True):
                    copy_image(img, dest / "images" / name)
        return out
