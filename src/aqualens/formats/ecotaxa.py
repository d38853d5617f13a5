"""EcoTaxa TSV: header row, ``[t]``/``[f]`` type row, then one row per object (vignette).

Reading (``src``: an ``ecotaxa*.tsv|txt`` file, a folder searched recursively, or a zip):
- Encoding: UTF-8 (with or without BOM), else latin-1. Fields may be quoted.
- Columns are grouped by prefix: ``img_``, ``object_``, ``acq_``, ``process_``, ``sample_``;
  other columns are ignored with a warning. ``[f]`` columns must hold numbers.
- Each row is one object: ``img_file_name`` (relative to the TSV) is the image; the category
  (``object_annotation_category``, ``A<B`` hierarchies kept as the label name, ``B`` recorded as
  parent) and status (predicted / validated / dubious) make a whole-image annotation.
- Image metadata: captured_at (object_date + object_time), lat, lon, depth (object_depth_min),
  instrument (acq_instrument), station (sample_station / sample_stationid), and every ``sample_``,
  ``acq_``, ``process_``, ``img_`` value. Per-object values (``object_*`` features, object_id,
  annotator, EcoTaxa category id) go into the annotation's attributes.
- AquaLens extension columns: ``object_score`` [f] (prediction score), ``object_aphia_id`` [f]
  (the label's AphiaID), ``object_bbox_x/_y/_w/_h`` [f] (a box geometry).

Writing: ``ecotaxa_<name>.tsv`` with the type row plus the image files beside it; the exporter
zips the folder (what EcoTaxa's import expects). Predictions go out as ``predicted`` with
``object_score``.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   find_image, opened_source, safe_float)

PREFIXES = ("img_", "object_", "acq_", "process_", "sample_")
STATUSES = {"predicted": "predicted", "validated": "validated", "dubious": "dubious", "p": "predicted",
            "v": "validated", "d": "dubious"}
NAME_RE = re.compile(r"^ecotaxa.*\.(tsv|txt)$", re.IGNORECASE)
# Columns that map onto catalogue fields or annotation fields rather than free metadata.
ANNOTATION_COLS = {"object_annotation_category", "object_annotation_status",
                   "object_annotation_category_id", "object_score", "object_aphia_id",
                   "object_bbox_x", "object_bbox_y", "object_bbox_w", "object_bbox_h"}
IMAGE_COLS = {"object_lat", "object_lon", "object_date", "object_time", "object_depth_min",
              "object_depth_max", "img_file_name"}


def find_tsvs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and NAME_RE.match(p.name))


def decode(data: bytes, rel: str) -> str:
    """UTF-8 (BOM optional) first, then latin-1; NUL bytes mean a binary file."""
    if b"\x00" in data[:65536]:
        off = data.index(b"\x00")
        raise FormatError(f"{rel}: bad encoding: NUL byte at offset {off} (not a text file)",
                          field=rel, valid="latin-1, or UTF-8 (with BOM)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _check_date(v: str) -> str | None:
    if not re.fullmatch(r"\d{8}", v):
        return None
    try:
        return datetime.strptime(v, "%Y%m%d").strftime("%Y-%m-%d")
    except ValueError:
        return None


def _check_time(v: str) -> str | None:
    if not re.fullmatch(r"\d{1,6}", v):
        return None
    v = v.zfill(6)
    h, m, s = int(v[:2]), int(v[2:4]), int(v[4:])
    if h > 23 or m > 59 or s > 59:
        return None
    return f"{h:02d}:{m:02d}:{s:02d}"


class EcoTaxaFormat(Format):
    name = "ecotaxa"
    description = "EcoTaxa TSV with [t]/[f] type row and vignettes (folder or zip)"
    geometries = ("none", "box")
    default_output = "zip"

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return bool(NAME_RE.match(src.name)) or (src.is_dir() and bool(find_tsvs(src)))

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        src = Path(src)
        with opened_source(src) as root:
            files = find_tsvs(root)
            if not files:
                raise FormatError(f"{src.name}: no ecotaxa*.tsv or ecotaxa*.txt file found",
                                  field=src.name, valid="ecotaxa*.tsv|txt in a folder or zip")
            base = root.parent if root.is_file() else root
            ds = Dataset()
            seen_objects: dict[str, tuple[str, int, tuple]] = {}
            image_rows: dict[str, tuple[str, dict]] = {}
            for path in files:
                self._read_file(ds, path, path.relative_to(base).as_posix(), seen_objects,
                                image_rows)
            return ds

    # ------------------------------------------------------------------ reading
    def _read_file(self, ds: Dataset, path: Path, rel: str, seen: dict, image_rows: dict) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FormatError(f"cannot read {rel}: {exc.strerror}", field=rel) from None
        text = decode(data, rel)
        try:
            rows = list(csv.reader(text.splitlines(), delimiter="\t", quotechar='"'))
        except csv.Error as exc:
            raise FormatError(f"{rel}: cannot split into TSV fields: {exc}", field=rel) from None
        while rows and not any(f.strip() for f in rows[-1]):
            rows.pop()
        if not rows:
            raise FormatError(f"{rel} is empty: expected a header row and a [t]/[f] type row",
                              field=rel)
        header = [h.strip().lower() for h in rows[0]]
        if len(rows) < 2:
            raise FormatError(f"{rel}: no [t]/[f] type row (line 2)", field=f"{rel}:2")
        types = [t.strip().lower() for t in rows[1]]
        if len(types) != len(header):
            raise FormatError(f"{rel}: line 2 (type row) has {len(types)} fields but the header "
                              f"has {len(header)}", field=f"{rel}:2")
        bad_types = set()
        for i, (col, typ) in enumerate(zip(header, types)):
            if col and col.startswith(PREFIXES) and typ not in ("[t]", "[f]"):
                bad_types.add(i)
                ds.problem(rel, "line 2", f"column {col}: type {typ or '(empty)'!r} is not [t] "
                           "(text) or [f] (number)")
        dup = sorted({h for h in header if h and header.count(h) > 1})
        if dup:
            raise FormatError(f"{rel}: duplicate columns {', '.join(dup)}", field=f"{rel}:1")
        if "img_file_name" not in header:
            raise FormatError(f"{rel}: no img_file_name column", field=f"{rel}:1")
        cols = []
        for i, (col, typ) in enumerate(zip(header, types)):
            if i in bad_types:
                continue
            if not col.startswith(PREFIXES):
                ds.problem(rel, "line 1", f"column {rows[0][i].strip() or '(empty)'!r} has no "
                           "img_/object_/acq_/process_/sample_ prefix: ignored", "warning")
                continue
            cols.append((i, col, typ == "[f]"))
        # EcoTaxa keeps at most 30 free columns per sample/acq/process and 500 per object.
        for prefix, limit in (("sample_", 30), ("acq_", 30), ("process_", 30), ("object_", 500)):
            free = [c for _, c, _ in cols if c.startswith(prefix) and c != prefix + "id"
                    and c not in ANNOTATION_COLS and c not in IMAGE_COLS
                    and not c.startswith("object_annotation_")]
            if len(free) > limit:
                ds.problem(rel, "line 1", f"{len(free)} free {prefix}* columns: EcoTaxa accepts "
                           f"at most {limit}, so it would refuse this file; AquaLens keeps them "
                           "all", "warning")
        if len(rows) == 2:
            raise FormatError(f"{rel}: no data rows after the type row", field=f"{rel}:3")
        has_cat = "object_annotation_category" in header
        for n, row in enumerate(rows[2:], start=3):
            if not any(f.strip() for f in row):
                continue
            if len(row) > len(header):
                ds.problem(rel, f"line {n}", f"row has {len(row)} values but the header has "
                           f"{len(header)} columns (data without a header)")
                continue
            # Shorter rows: trailing empty values were dropped (EcoTaxa reads them as empty).
            row = row + [""] * (len(header) - len(row))
            self._row(ds, rel, path.parent, n, row, cols, has_cat, seen, image_rows)

    def _row(self, ds: Dataset, rel: str, folder: Path, n: int, row: list[str],
             cols: list[tuple[int, str, bool]], has_cat: bool, seen: dict, image_rows: dict) -> None:
        where = f"line {n}"
        values: dict[str, Any] = {}
        errors = []
        for i, col, numeric in cols:
            raw = row[i].strip()
            if raw == "":
                continue
            if numeric:
                num = safe_float(raw)
                if num is None:
                    if raw.lower() == "nan":
                        continue
                    errors.append(f"column {col}: {raw!r} is not a number ([f] column)")
                    continue
                values[col] = int(num) if num.is_integer() and "." not in raw and "e" not in \
                    raw.lower() else num
            else:
                values[col] = raw
        obj_id = str(values.get("object_id", "")).strip()
        if not obj_id:
            errors.append("object_id is empty")
        lat, lon = values.get("object_lat"), values.get("object_lon")
        if isinstance(lat, str):
            lat = safe_float(lat)
            if lat is None:
                errors.append(f"object_lat {values['object_lat']!r} is not a number")
        if isinstance(lon, str):
            lon = safe_float(lon)
            if lon is None:
                errors.append(f"object_lon {values['object_lon']!r} is not a number")
        if lat is not None and not -90 <= lat <= 90:
            errors.append(f"object_lat {lat:g} is outside [-90, 90]")
        if lon is not None and not -180 <= lon <= 180:
            errors.append(f"object_lon {lon:g} is outside [-180, 180]")
        captured = None
        for dcol, tcol in (("object_date", "object_time"),
                           ("object_annotation_date", "object_annotation_time")):
            d, t = values.get(dcol), values.get(tcol)
            dd = tt = None
            if d is not None:
                dd = _check_date(str(d))
                if dd is None:
                    errors.append(f"{dcol} {d!r} is not a valid date (YYYYMMDD)")
            if t is not None:
                tt = _check_time(str(t))
                if tt is None:
                    errors.append(f"{tcol} {t!r} is not a valid time (HHMMSS)")
            if dcol == "object_date" and dd:
                captured = f"{dd}T{tt or '00:00:00'}"
        status_raw = values.get("object_annotation_status")
        status = None
        if status_raw is not None:
            status = STATUSES.get(str(status_raw).lower())
            if status is None:
                errors.append(f"object_annotation_status {status_raw!r} is not one of "
                              "predicted, validated, dubious")
        category = values.get("object_annotation_category")
        category = str(category).strip() if category is not None else None
        if category is None and status is not None:
            errors.append(f"status {status!r} without object_annotation_category"
                          + ("" if has_cat else " (no such column)"))
        if category is None and values.get("object_annotation_category_id") is not None:
            errors.append("object_annotation_category_id given without "
                          "object_annotation_category: AquaLens matches labels by name")
        score = values.get("object_score")
        if score is not None and (not isinstance(score, (int, float)) or not 0 <= score <= 1):
            errors.append(f"object_score {score!r} must be a number in [0, 1]")
        name = str(values.get("img_file_name", "")).strip()
        img_path = find_image(folder, name, ("",)) if name else None
        if not name:
            errors.append("img_file_name is empty")
        elif img_path is None:
            errors.append(f"img_file_name {name!r} resolves to no file next to {Path(rel).name}")
        if errors:
            for err in errors:
                ds.problem(rel, where + (f" (object {obj_id})" if obj_id else ""), err)
            return
        # Duplicates: an identical row is skipped with a warning, a clash is an error.
        sig = tuple(row)
        if obj_id in seen:
            first_rel, first_n, first_sig = seen[obj_id]
            if first_sig == sig:
                ds.problem(rel, f"{where} (object {obj_id})", f"duplicate of {first_rel} line "
                           f"{first_n}: skipped", "warning")
            else:
                ds.problem(rel, f"{where} (object {obj_id})", f"object_id {obj_id} already used "
                           f"by {first_rel} line {first_n} with different values")
            return
        seen[obj_id] = (rel, n, sig)
        img_meta: dict[str, Any] = {}
        attrs: dict[str, Any] = {"object_id": obj_id}
        for col, val in values.items():
            if col in ANNOTATION_COLS or col in IMAGE_COLS:
                continue
            if col.startswith("object_"):
                attrs[col] = val
            else:
                img_meta[col] = val
        if captured:
            img_meta["captured_at"] = captured
        if lat is not None:
            img_meta["lat"] = lat
        if lon is not None:
            img_meta["lon"] = lon
        for key in ("object_depth_min", "object_depth_max"):
            if isinstance(values.get(key), (int, float)):
                img_meta[key.replace("object_", "")] = float(values[key])
        if "depth_min" in img_meta:
            img_meta["depth"] = img_meta["depth_min"]
        if values.get("acq_instrument"):
            img_meta["instrument"] = str(values["acq_instrument"])
        for key in ("sample_station", "sample_stationid", "sample_station_id"):
            if values.get(key):
                img_meta["station"] = str(values[key])
                break
        ref = (Path(rel).parent / name).as_posix() if "/" in rel else name
        if ref in image_rows:
            first_where, first_meta = image_rows[ref]
            diff = sorted(k for k in set(first_meta) | set(img_meta)
                          if first_meta.get(k) != img_meta.get(k))
            if diff:
                ds.problem(rel, f"{where} (object {obj_id})", f"image {name} is also used by "
                           f"{first_where} with other values for {', '.join(diff[:5])}: the "
                           "image keeps the first row's metadata", "warning")
        else:
            image_rows[ref] = (f"{rel} {where}", img_meta)
            ds.images.append(ImageRecord(ref=ref, path=img_path, metadata=img_meta,
                                         source=f"{rel}:{n}"))
        if category is None:
            return
        parent = category.split("<", 1)[1].strip() if "<" in category else None
        aphia = values.get("object_aphia_id")
        ds.ensure_label(category, parent=parent or None,
                        aphia_id=int(aphia) if isinstance(aphia, (int, float)) and aphia > 0
                        and float(aphia).is_integer() else None)
        if values.get("object_annotation_category_id") is not None:
            attrs["ecotaxa_category_id"] = values["object_annotation_category_id"]
        gtype, geom = "none", None
        box = [values.get(f"object_bbox_{k}") for k in "xywh"]
        if all(isinstance(v, (int, float)) for v in box):
            gtype, geom = "box", [float(v) for v in box]
        ds.annotations.append(AnnotationRecord(
            image_ref=ref, label=category, geometry_type=gtype, geometry=geom,
            score=float(score) if score is not None else None,
            status=status or "predicted",
            attributes=attrs, file=rel, location=f"{where} (object {obj_id})"))

    # ------------------------------------------------------------------ writing
    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        labels = {lab.name: lab for lab in dataset.used_labels()}
        names = dict(zip([img.ref for img in dataset.images], dataset.file_names()))
        by_image = dataset.annotations_by_image(lambda a: a.status != "rejected")
        rows: list[dict[str, Any]] = []
        used_ids: set[str] = set()
        for img in dataset.images:
            name = names[img.ref]
            base = self._image_values(img, name)
            anns = by_image.get(img.ref) or [None]
            for k, ann in enumerate(anns, start=1):
                row = dict(base)
                oid = str(ann.attributes.get("object_id")) if ann and \
                    ann.attributes.get("object_id") else None
                if not oid or oid in used_ids:
                    oid = name.rsplit(".", 1)[0] + ("" if len(anns) == 1 else f"_{k}")
                while oid in used_ids:
                    oid += "_"
                used_ids.add(oid)
                row["object_id"] = oid
                if ann is not None and ann.label:
                    row["object_annotation_category"] = ann.label
                    row["object_annotation_status"] = ann.status if ann.status in \
                        ("predicted", "validated", "dubious") else "predicted"
                    if ann.score is not None:
                        row["object_score"] = ann.score
                    lab = labels.get(ann.label)
                    if lab is not None and lab.aphia_id is not None:
                        row["object_aphia_id"] = lab.aphia_id
                    if ann.geometry_type == "box":
                        for key, val in zip("xywh", ann.geometry):
                            row[f"object_bbox_{key}"] = val
                    for key, val in ann.attributes.items():
                        if key.startswith("object_") and key not in row and \
                                isinstance(val, (str, int, float)) and not isinstance(val, bool):
                            row[key] = val
                rows.append(row)
            if img.path is not None:
                copy_image(img, dest / name)
        fixed = ["img_file_name", "img_rank", "object_id", "object_lat", "object_lon",
                 "object_date", "object_time", "object_depth_min", "object_depth_max",
                 "object_annotation_status", "object_annotation_category", "object_score",
                 "object_aphia_id"]
        extra = sorted({k for r in rows for k in r} - set(fixed),
                       key=lambda c: (PREFIXES.index(c.split("_", 1)[0] + "_"), c))
        columns = fixed + extra
        text_cols = {"img_file_name", "object_id", "object_date", "object_time",
                     "object_annotation_status", "object_annotation_category"}
        types = []
        for col in columns:
            vals = [r[col] for r in rows if r.get(col) not in (None, "")]
            numeric = col not in text_cols and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
            types.append("[f]" if numeric else "[t]")
        stem = options.get("name") or dataset.meta.get("name") or "export"
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(stem))
        out = dest / f"ecotaxa_{stem}.tsv"
        with open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(columns)
            writer.writerow(types)
            for r in rows:
                writer.writerow(["" if r.get(c) is None else
                                 (repr(r[c]) if isinstance(r[c], float) else str(r[c]))
                                 .replace("\t", " ").replace("\n", " ") for c in columns])
        return out

    @staticmethod
    def _image_values(img: ImageRecord, name: str) -> dict[str, Any]:
        meta = img.metadata
        row: dict[str, Any] = {"img_file_name": name, "img_rank": 0}
        if meta.get("lat") is not None:
            row["object_lat"] = meta["lat"]
        if meta.get("lon") is not None:
            row["object_lon"] = meta["lon"]
        cap = meta.get("captured_at")
        if cap:
            try:
                dt = datetime.fromisoformat(str(cap).replace("Z", "+00:00"))
                row["object_date"] = dt.strftime("%Y%m%d")
                row["object_time"] = dt.strftime("%H%M%S")
            except ValueError:
                pass
        dmin = meta.get("depth_min", meta.get("depth"))
        if dmin is not None:
            row["object_depth_min"] = dmin
        dmax = meta.get("depth_max", dmin)
        if dmax is not None:
            row["object_depth_max"] = dmax
        if meta.get("instrument") and "acq_instrument" not in meta:
            row["acq_instrument"] = meta["instrument"]
        for key, val in meta.items():
            if key.startswith(("sample_", "acq_", "process_", "img_")) and key not in row and \
                    isinstance(val, (str, int, float)) and not isinstance(val, bool):
                row[key] = val
        return row
