"""PNG masks: label masks with an index-to-label table, and per-instance binary masks.

Layout (a folder or zip)::

    images/<stem>.<ext>                 the images
    labels.csv                          index,name[,aphia_id]  (or labels.txt: "index name" /
                                        one name per line, line 1 = index 1)
    masks/<stem>.png                    label masks: pixel value = class index, 0 = background
    instances/<stem>/<n>__<label>.png   per-instance binary masks (non-zero = inside)

A label mask gives one mask annotation per class present in it; each instance PNG gives one.
Mask sizes must equal their image's size. Masks are stored as COCO RLE.

Writing uses instance masks (they keep overlapping objects apart) plus ``labels.csv``; with option
``mode=semantic`` it writes label masks instead (later annotations paint over earlier ones).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   image_size, is_image_name, opened_source, read_text)
from aqualens.formats.geometry import rle_decode, rle_encode


def _read_mask(path: Path) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("1", "L", "P", "I", "I;16", "RGB", "RGBA", "LA"):
                return None
            im.load()
            if im.mode in ("RGB", "RGBA", "LA"):
                im = im.convert("L")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _checked_mask(ds: Dataset, path: Path, rel: str, w: int, h: int) -> np.ndarray | None:
    """The mask at ``path`` when it is a single-channel PNG of the image's size, else a problem."""
    arr = _read_mask(path)
    if arr is None or arr.ndim != 2:
        ds.problem(rel, None, "not a readable single-channel PNG mask")
        return None
    if arr.shape != (h, w):
        ds.problem(rel, None, f"mask is {arr.shape[1]}x{arr.shape[0]}, image is {w}x{h}")
        return None
    return arr


def _label_table(root: Path, ds: Dataset) -> dict[int, str]:
    table: dict[int, str] = {}
    csv_path, txt_path = root / "labels.csv", root / "labels.txt"
    if csv_path.is_file():
        text = read_text(csv_path, rel="labels.csv")
        for n, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or (n == 1 and row[0].strip().lower() == "index"):
                continue
            idx = row[0].strip()
            if not idx.isdigit() or len(row) < 2 or not row[1].strip():
                ds.problem("labels.csv", f"line {n}", "expected index,name[,aphia_id]")
                continue
            aphia = row[2].strip() if len(row) > 2 else ""
            table[int(idx)] = row[1].strip()
            ds.ensure_label(row[1].strip(), aphia_id=int(aphia) if aphia.isdigit() else None)
    elif txt_path.is_file():
        lines = read_text(txt_path, rel="labels.txt").splitlines()
        for n, line in enumerate(lines, start=1):
            parts = line.split(None, 1)
            if not parts:
                continue
            if len(parts) == 2 and parts[0].isdigit():
                table[int(parts[0])] = parts[1].strip()
            else:
                table[n] = line.strip()
            ds.ensure_label(table[max(table)] if len(parts) != 2 or not parts[0].isdigit()
                            else parts[1].strip())
    return table


class MaskFormat(Format):
    name = "masks"
    description = "PNG label masks + index table, or per-instance binary masks"
    geometries = ("mask", "polygon", "box")

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.is_dir() and ((src / "masks").is_dir() or (src / "instances").is_dir())

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        with opened_source(Path(src)) as root:
            if not root.is_dir():
                raise FormatError(f"{Path(src).name}: masks need a folder or zip",
                                  field=Path(src).name)
            return self._read(root)

    def _read(self, root: Path) -> Dataset:
        ds = Dataset()
        table = _label_table(root, ds)
        img_dir = root / "images" if (root / "images").is_dir() else root
        images = sorted(p for p in img_dir.iterdir() if p.is_file() and is_image_name(p.name))
        if not images:
            raise FormatError(f"{root.name}: no images in images/", field="images")
        if not (root / "masks").is_dir() and not (root / "instances").is_dir():
            raise FormatError(f"{root.name}: neither masks/ nor instances/ found",
                              field=root.name, valid="masks/<stem>.png or instances/<stem>/*.png")
        for img in images:
            size = image_size(img)
            rel = img.relative_to(root).as_posix()
            if size is None:
                ds.problem(rel, None, "not a readable image")
                continue
            w, h = size
            ref = img.name
            ds.images.append(ImageRecord(ref=ref, path=img, width=w, height=h, source=rel))
            label_mask = root / "masks" / f"{img.stem}.png"
            if label_mask.is_file():
                self._semantic(ds, label_mask, f"masks/{label_mask.name}", ref, table, w, h)
            inst_dir = root / "instances" / img.stem
            if inst_dir.is_dir():
                for path in sorted(inst_dir.glob("*.png"), key=lambda p: (len(p.stem), p.stem)):
                    self._instance(ds, path, f"instances/{img.stem}/{path.name}", ref, w, h)
        return ds

    def _semantic(self, ds: Dataset, path: Path, rel: str, ref: str, table: dict[int, str],
                  w: int, h: int) -> None:
        arr = _checked_mask(ds, path, rel, w, h)
        if arr is None:
            return
        for value in np.unique(arr):
            if value == 0:
                continue
            if int(value) not in table:
                ds.problem(rel, f"value {int(value)}", "pixel value has no entry in the label "
                           "table (labels.csv)")
                continue
            ds.annotations.append(AnnotationRecord(
                image_ref=ref, label=table[int(value)], geometry_type="mask",
                geometry=rle_encode(arr == value), file=rel, location=f"value {int(value)}"))

    def _instance(self, ds: Dataset, path: Path, rel: str, ref: str, w: int, h: int) -> None:
        stem = path.stem
        label = stem.split("__", 1)[1] if "__" in stem else None
        if not label:
            ds.problem(rel, None, "instance mask name must be <n>__<label>.png")
            return
        arr = _checked_mask(ds, path, rel, w, h)
        if arr is None:
            return
        ds.ensure_label(label)
        ds.annotations.append(AnnotationRecord(image_ref=ref, label=label, geometry_type="mask",
                                               geometry=rle_encode(arr > 0), file=rel,
                                               location=path.name))

    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        from PIL import Image, ImageDraw

        options = options or {}
        semantic = options.get("mode") == "semantic"
        dest = Path(dest)
        (dest / "images").mkdir(parents=True, exist_ok=True)
        labels = dataset.used_labels()
        index = {lab.name: i + 1 for i, lab in enumerate(labels)}
        with open(dest / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "name", "aphia_id"])
            for lab in labels:
                writer.writerow([index[lab.name], lab.name, lab.aphia_id or ""])
        by_image = dataset.annotations_by_image(
            lambda a: bool(a.label) and a.geometry_type in ("mask", "polygon", "box"))
        names = dataset.file_names()
        for img, name in zip(dataset.images, names):
            stem = name.rsplit(".", 1)[0]
            w, h = int(img.width or 0), int(img.height or 0)
            sem = np.zeros((h, w), dtype=np.uint8 if len(labels) < 256 else np.uint16)
            for n, ann in enumerate(by_image.get(img.ref, []), start=1):
                if ann.geometry_type == "mask":
                    m = rle_decode(ann.geometry).astype(bool)
                else:
                    canvas = Image.new("L", (w, h), 0)
                    draw = ImageDraw.Draw(canvas)
                    if ann.geometry_type == "box":
                        x, y, bw, bh = ann.geometry
                        draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=1)
                    else:
                        for part in ann.geometry:
                            draw.polygon(list(zip(part[0::2], part[1::2])), fill=1)
                    m = np.asarray(canvas).astype(bool)
                if semantic:
                    sem[m] = index[ann.label]
                else:
                    safe = "".join(c if c.isalnum() or c in "-_ .<" else "_" for c in ann.label)
                    out = dest / "instances" / stem / f"{n}__{safe}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray((m * 255).astype(np.uint8)).save(out)
            if semantic:
                (dest / "masks").mkdir(exist_ok=True)
                Image.fromarray(sem).save(dest / "masks" / f"{stem}.png")
            if img.path is not None:
                copy_image(img, dest / "images" / name)
        (dest / "instances").mkdir(exist_ok=True) if not semantic else None
        return dest
