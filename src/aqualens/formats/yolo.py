"""YOLO (Ultralytics/Roboflow layout): ``data.yaml`` + one ``.txt`` per image.

Reading:
- ``data.yaml`` (or ``*.yaml``) ``names`` as a list, or a dict ``{index: name}``; indices may be
  ints or numeric strings and may have gaps; names may themselves be numeric strings.
  Without a YAML, ``classes.txt``/``obj.names`` (one name per line) is used.
- Images: every image file under ``src``; its label file is the same relative path with the last
  ``images`` folder replaced by ``labels`` and a ``.txt`` suffix (or a ``.txt`` beside it).
  The split folder (``train``/``val``/``test``) is kept as image metadata ``split``.
- Lines: ``cls cx cy w h`` (detection), ``cls x1 y1 ... xn yn`` with n >= 3 (polygon
  segmentation), each optionally followed by a confidence (``save_conf``) -> a prediction with
  that score. Coordinates are normalised to [0, 1]. An empty or missing label file means "no
  object". Files without a final newline, blank lines and CRLF are fine.

Writing: ``data.yaml`` (names as a list, plus ``aphia_ids`` when known), ``images/``,
``labels/`` (boxes as detection lines, polygons as segmentation lines, a score column only for
annotations that have a score; a multi-part polygon becomes one line per part). Masks and
points have no YOLO form: the exporter skips them with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   image_size, is_image_name, opened_source, read_text)

SPLITS = ("train", "val", "valid", "test")


def _load_yaml(path: Path, rel: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(read_text(path, rel=rel))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise FormatError(f"{rel}: invalid YAML: {getattr(exc, 'problem', exc)}",
                          field=f"{rel}:{line}" if line else rel) from None
    except RecursionError:
        raise FormatError(f"{rel}: YAML nested too deeply", field=rel) from None


def parse_names(names: Any, rel: str) -> dict[int, str]:
    """``names`` from data.yaml as {index: name}; refuses anything else with a clear message."""
    out: dict[int, str] = {}
    if isinstance(names, list):
        items = list(enumerate(names))
    elif isinstance(names, dict):
        items = list(names.items())
    else:
        raise FormatError(f"{rel}: 'names' must be a list or a mapping of index to name",
                          field=f"{rel}:names", valid="names: [a, b] or names: {0: a, 2: b}")
    for key, val in items:
        if isinstance(key, bool):
            key = None
        elif isinstance(key, str) and key.strip().isdigit():
            key = int(key.strip())
        if not isinstance(key, int) or key < 0:
            raise FormatError(f"{rel}: class index {key!r} is not a non-negative integer",
                              field=f"{rel}:names")
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            val = str(val)  # numeric class names such as 12 stay names, not indices
        if not isinstance(val, str) or not val.strip():
            raise FormatError(f"{rel}: class {key} has no name", field=f"{rel}:names")
        if key in out:
            raise FormatError(f"{rel}: class index {key} appears twice", field=f"{rel}:names")
        out[key] = val.strip()
    return out


def label_path_for(image: Path, root: Path) -> Path | None:
    rel = image.relative_to(root)
    parts = list(rel.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            cand = root.joinpath(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
            if cand.is_file():
                return cand
            break
    cand = image.with_suffix(".txt")
    return cand if cand.is_file() else None


class YoloFormat(Format):
    name = "yolo"
    description = "YOLO txt per image + data.yaml (detection and polygon segmentation)"
    geometries = ("box", "polygon")

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.is_dir() and (any(src.glob("*.yaml")) or (src / "labels").is_dir())

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        with opened_source(Path(src)) as root:
            if not root.is_dir():
                raise FormatError(f"{Path(src).name}: YOLO needs a folder or zip with data.yaml, "
                                  "images/ and labels/", field=Path(src).name)
            return self._read(root)

    def _read(self, root: Path) -> Dataset:
        ds = Dataset()
        yamls = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
        names: dict[int, str] = {}
        aphia: dict[int, int] = {}
        if yamls:
            ypath = next((p for p in yamls if p.name == "data.yaml"), yamls[0])
            data = _load_yaml(ypath, ypath.name)
            if not isinstance(data, dict) or "names" not in data:
                raise FormatError(f"{ypath.name}: no 'names' list", field=f"{ypath.name}:names")
            names = parse_names(data["names"], ypath.name)
            if isinstance(data.get("nc"), int) and data["nc"] < len(names):
                ds.problem(ypath.name, "nc", f"nc is {data['nc']} but {len(names)} names are "
                           "given", "warning")
            if isinstance(data.get("aphia_ids"), dict):
                aphia = {int(k): int(v) for k, v in data["aphia_ids"].items()
                         if str(k).isdigit() and isinstance(v, int) and not isinstance(v, bool)}
        else:
            txt = next((root / n for n in ("classes.txt", "obj.names") if (root / n).is_file()),
                       None)
            if txt is None:
                raise FormatError(f"{root.name}: no data.yaml (or classes.txt) naming the classes",
                                  field="data.yaml")
            lines = [ln.strip() for ln in read_text(txt, rel=txt.name).splitlines()]
            names = {i: n for i, n in enumerate(lines) if n}
        for idx in sorted(names):
            ds.ensure_label(names[idx], aphia_id=aphia.get(idx))
        images = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p.name))
        for img in images:
            rel = img.relative_to(root).as_posix()
            parts = img.relative_to(root).parts
            meta = {}
            split = next((p for p in parts[:-1] if p in SPLITS), None)
            if split:
                meta["split"] = "val" if split == "valid" else split
            size = image_size(img)
            if size is None:
                ds.problem(rel, None, "not a readable image")
                continue
            w, h = size
            ds.images.append(ImageRecord(ref=rel, path=img, width=w, height=h, metadata=meta,
                                         source=rel))
            lpath = label_path_for(img, root)
            if lpath is not None:
                self._read_labels(ds, lpath, root, rel, names, w, h)
        if not ds.images:
            raise FormatError(f"{root.name}: no image files found", field=root.name)
        return ds

    def _read_labels(self, ds: Dataset, path: Path, root: Path, ref: str, names: dict[int, str],
                     w: int, h: int) -> None:
        rel = path.relative_to(root).as_posix()
        try:
            text = read_text(path, rel=rel)
        except FormatError as exc:
            ds.problem(rel, None, exc.message)
            return
        for n, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                cls = int(fields[0])
                vals = [float(v) for v in fields[1:]]
            except ValueError:
                ds.problem(rel, n, f"line {line[:60]!r}: class must be an integer and "
                           "coordinates numbers")
                continue
            if cls not in names:
                ds.problem(rel, n, f"class index {cls} is not in names",)
                continue
            score = None
            if len(vals) in (5,) or (len(vals) > 6 and len(vals) % 2 == 1):
                score, vals = vals[-1], vals[:-1]
            if len(vals) == 4:
                cx, cy, bw, bh = vals
                gtype, geom = "box", [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            elif len(vals) >= 6 and len(vals) % 2 == 0:
                gtype = "polygon"
                geom = [[v * (w if i % 2 == 0 else h) for i, v in enumerate(vals)]]
            else:
                ds.problem(rel, n, f"{len(vals)} numbers after the class: expected 4 (box) or an "
                           "even number >= 6 (polygon), optionally plus a confidence")
                continue
            if any(v != v or abs(v) == float("inf") for v in vals):
                ds.problem(rel, n, "coordinates must be finite numbers")
                continue
            if score is not None and not 0.0 <= score <= 1.0:
                ds.problem(rel, n, f"confidence {score:g} is outside [0, 1]")
                continue
            ds.annotations.append(AnnotationRecord(
                image_ref=ref, label=names[cls], geometry_type=gtype, geometry=geom, score=score,
                status="predicted" if score is not None else "validated", file=rel,
                location=f"line {n}"))

    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        import yaml

        options = options or {}
        dest = Path(dest)
        (dest / "images").mkdir(parents=True, exist_ok=True)
        (dest / "labels").mkdir(parents=True, exist_ok=True)
        labels = dataset.used_labels()
        index = {lab.name: i for i, lab in enumerate(labels)}
        doc: dict[str, Any] = {"path": ".", "train": "images", "val": "images",
                               "nc": len(labels), "names": [lab.name for lab in labels]}
        aphia = {i: lab.aphia_id for i, lab in enumerate(labels) if lab.aphia_id is not None}
        if aphia:
            doc["aphia_ids"] = aphia
        (dest / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        by_image = dataset.annotations_by_image(
            lambda a: bool(a.label) and a.geometry_type in ("box", "polygon"))
        names = dataset.file_names()
        for img, name in zip(dataset.images, names):
            w, h = float(img.width or 1), float(img.height or 1)
            lines = []
            for ann in by_image.get(img.ref, []):
                if ann.geometry_type == "box":
                    x, y, bw, bh = ann.geometry
                    nums = [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]
                    parts = [nums]
                else:
                    parts = [[v / (w if i % 2 == 0 else h) for i, v in enumerate(p)]
                             for p in ann.geometry]
                for nums in parts:  # YOLO has no multi-part polygons: one line per part
                    if ann.score is not None:
                        nums = nums + [ann.score]
                    lines.append(" ".join([str(index[ann.label])] + [f"{v:.10g}" for v in nums]))
            stem = name.rsplit(".", 1)[0]
            (dest / "labels" / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            if img.path is not None:
                copy_image(img, dest / "images" / name)
        return dest / "data.yaml"
