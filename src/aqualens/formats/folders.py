"""Class folders: one folder per class holding its images (plankton vignettes).

Reading: each first-level folder under ``src`` is a class; every image below it (any depth) gets a
whole-image label (geometry ``none``). Folder name mapping (option ``suffix``):

- ``strip`` (default): ``Copepoda__6666`` -> label ``Copepoda``; the part after the last ``__``
  is kept as annotation attribute ``folder_suffix`` (in UVP/EcoTaxa exports it is often an id
  with no fixed meaning, as in the uvp6 sample).
- ``aphia``: as ``strip``, and a numeric suffix becomes the label's AphiaID.
- ``keep``: the folder name is the label name.

Images directly in ``src`` are unlabelled images. A ``*.tsv``/``*.csv`` at the root whose first
column holds image stems (e.g. EcoTaxa object ids) adds its other columns as image metadata.
Option ``status`` (default ``validated``) sets the annotation status.

Writing: ``<label>/<image>``; with option ``suffix=aphia`` folders are ``<label>__<AphiaID>``.
Images without a label go in ``unlabelled/`` only when option ``unlabelled=true``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from aqualens.core.errors import FormatError
from aqualens.formats.base import (AnnotationRecord, Dataset, Format, ImageRecord, copy_image,
                                   image_size, is_image_name, opened_source, read_text,
                                   safe_float)

UNSAFE = '/\\:*?"<>|'


def split_folder(name: str, mode: str) -> tuple[str, str | None]:
    if mode == "keep" or "__" not in name:
        return name, None
    label, _, suffix = name.rpartition("__")
    return (label, suffix) if label else (name, None)


def _sidecar(root: Path, ds: Dataset) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for path in sorted(list(root.glob("*.tsv")) + list(root.glob("*.csv"))):
        try:
            text = read_text(path, encodings=("utf-8-sig", "latin-1"), rel=path.name)
        except FormatError as exc:
            ds.problem(path.name, None, exc.message, "warning")
            continue
        delim = "\t" if path.suffix.lower() == ".tsv" else ","
        rows = list(csv.reader(text.splitlines(), delimiter=delim))
        if len(rows) < 2 or len(rows[0]) < 2:
            continue
        head = [h.strip() for h in rows[0]]
        for row in rows[1:]:
            if not row or not row[0].strip():
                continue
            vals = {}
            for key, val in zip(head[1:], row[1:]):
                if val.strip() == "":
                    continue
                num = safe_float(val)
                vals[key] = num if num is not None else val.strip()
            meta.setdefault(row[0].strip(), {}).update(vals)
    return meta


class ClassFolderFormat(Format):
    name = "folders"
    description = "One folder per class (plankton vignettes), whole-image labels"
    geometries = ("none",)

    def detect(self, src: Path) -> bool:
        src = Path(src)
        return src.is_dir() and any(p.is_dir() for p in src.iterdir())

    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        options = options or {}
        mode = options.get("suffix", "strip")
        if mode not in ("strip", "aphia", "keep"):
            raise FormatError(f"unknown suffix mode {mode!r}", field="suffix",
                              valid="strip, aphia, keep")
        status = options.get("status", "validated")
        with opened_source(Path(src)) as root:
            if not root.is_dir():
                raise FormatError(f"{Path(src).name}: class folders need a folder or zip",
                                  field=Path(src).name)
            ds = Dataset()
            sidecar = _sidecar(root, ds)
            classes = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "__MACOSX")
            loose = sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p.name))
            if not classes and not loose:
                raise FormatError(f"{Path(src).name}: no class folders with images",
                                  field=Path(src).name, valid="<class>/<image> folders")
            for path in loose:
                self._image(ds, path, root, None, None, None, sidecar, status)
            for folder in classes:
                label, suffix = split_folder(folder.name, mode)
                aphia = int(suffix) if mode == "aphia" and suffix and suffix.isdigit() else None
                if mode == "aphia" and suffix and aphia is None:
                    ds.problem(folder.name, None, f"suffix {suffix!r} is not a numeric AphiaID",
                               "warning")
                ds.ensure_label(label, aphia_id=aphia)
                files = sorted(p for p in folder.rglob("*") if p.is_file())
                for path in files:
                    if is_image_name(path.name):
                        self._image(ds, path, root, label, suffix, folder.name, sidecar, status)
            return ds

    @staticmethod
    def _image(ds: Dataset, path: Path, root: Path, label: str | None, suffix: str | None,
               folder: str | None, sidecar: dict[str, dict[str, Any]], status: str) -> None:
        rel = path.relative_to(root).as_posix()
        size = image_size(path)
        if size is None:
            ds.problem(rel, None, "not a readable image")
            return
        meta = dict(sidecar.get(path.stem, {}))
        ds.images.append(ImageRecord(ref=rel, path=path, width=size[0], height=size[1],
                                     metadata=meta, source=rel))
        if label is not None:
            attrs = {"folder_suffix": suffix} if suffix is not None else {}
            ds.annotations.append(AnnotationRecord(image_ref=rel, label=label, status=status,
                                                   attributes=attrs, file=rel, location=folder))

    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        options = options or {}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        labels = {lab.name: lab for lab in dataset.used_labels()}
        first: dict[str, str] = {}
        for ann in dataset.annotations:
            if ann.label and ann.image_ref not in first:
                first[ann.image_ref] = ann.label  # one class per image: the first label wins
        names = dataset.file_names()
        for img, name in zip(dataset.images, names):
            label = first.get(img.ref)
            if label is None:
                if not options.get("unlabelled"):
                    continue
                folder = "unlabelled"
            else:
                folder = "".join("_" if c in UNSAFE else c for c in label).strip(". ") or "_"
                lab = labels.get(label)
                if options.get("suffix") == "aphia" and lab and lab.aphia_id is not None:
                    folder = f"{folder}__{lab.aphia_id}"
            copy_image(img, dest / folder / name)
        return dest
