"""Neutral records every format reads into and writes from, and the ``Format`` base class.

Formats are pure: files in, these dataclasses out (and back). Nothing here touches the catalogue;
:mod:`aqualens.interchange` moves records into and out of it.

Geometry conventions are those of the catalogue (``aqualens.catalog.tables.Annotation``):
box ``[x, y, w, h]`` in pixels, polygon ``[[x0, y0, x1, y1, ...], ...]`` (parts), mask a COCO RLE
``{"size": [h, w], "counts": str}``, point ``[x, y]``, none ``None`` (a whole-image label).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from aqualens.core.errors import FormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")
STATUSES = ("predicted", "validated", "dubious", "rejected")
GEOMETRY_TYPES = ("none", "box", "polygon", "mask", "point")
# Zip bombs: refuse archives that inflate beyond this many bytes or members.
MAX_UNZIPPED = 8 * 1024 ** 3
MAX_MEMBERS = 2_000_000


@dataclass
class Problem:
    """Something wrong in the input: where (file, line or object id) and why."""

    file: str
    location: str | None
    reason: str
    severity: str = "error"  # "error" blocks an all-or-nothing import; "warning" does not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"{self.severity}: {where}: {self.reason}"


@dataclass
class ImageRecord:
    """An image an annotation file refers to.

    ``ref`` is the key annotations use (usually the file name relative to the dataset root).
    ``path`` is a local file when the image is available; ``url`` when only referenced.
    ``metadata`` holds captured_at, lat, lon, depth, instrument, station and free keys.
    """

    ref: str
    path: Path | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # "file:line" where it was declared


@dataclass
class AnnotationRecord:
    """One statement about an image, in catalogue geometry conventions."""

    image_ref: str
    label: str | None
    geometry_type: str = "none"
    geometry: Any = None
    score: float | None = None
    status: str = "validated"
    attributes: dict[str, Any] = field(default_factory=dict)
    file: str = ""
    location: str | None = None  # line or object id, for the report


@dataclass
class LabelRecord:
    """A label as a file declares it; ``aphia_id`` travels into every export that has a field."""

    name: str
    aphia_id: int | None = None
    supercategory: str | None = None
    rank: str | None = None
    parent: str | None = None
    synonyms: list[str] = field(default_factory=list)


@dataclass
class Dataset:
    """What a reader returns and a writer takes."""

    images: list[ImageRecord] = field(default_factory=list)
    annotations: list[AnnotationRecord] = field(default_factory=list)
    labels: list[LabelRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def problem(self, file: str, location: Any, reason: str, severity: str = "error") -> None:
        self.problems.append(Problem(file, None if location is None else str(location), reason,
                                     severity))

    def label_index(self) -> dict[str, LabelRecord]:
        return {lab.name: lab for lab in self.labels}

    def ensure_label(self, name: str, **kw: Any) -> LabelRecord:
        """The label called ``name``, added when missing."""
        for lab in self.labels:
            if lab.name == name:
                for k, v in kw.items():
                    if v is not None and getattr(lab, k) in (None, []):
                        setattr(lab, k, v)
                return lab
        lab = LabelRecord(name=name, **kw)
        self.labels.append(lab)
        return lab

    def used_labels(self) -> list[LabelRecord]:
        """Declared labels plus any name used by an annotation, in a stable order."""
        out = {lab.name: lab for lab in self.labels}
        for ann in self.annotations:
            if ann.label and ann.label not in out:
                out[ann.label] = LabelRecord(ann.label)
        return list(out.values())

    def file_names(self) -> list[str]:
        """One unique file name per image, in ``images`` order (writers name files with it)."""
        return unique_names([Path(img.ref).name for img in self.images])

    def annotations_by_image(self, keep: Callable[[AnnotationRecord], bool] | None = None
                             ) -> dict[str, list[AnnotationRecord]]:
        """Annotations grouped by image ref, optionally only those ``keep`` accepts."""
        out: dict[str, list[AnnotationRecord]] = {}
        for ann in self.annotations:
            if keep is None or keep(ann):
                out.setdefault(ann.image_ref, []).append(ann)
        return out


ReadResult = Dataset


class Format(ABC):
    """Base class of every format plugin (entry point group ``aqualens.formats``)."""

    name: str = ""
    description: str = ""
    #: geometry types the writer can express; others are skipped with a warning by the exporter
    geometries: tuple[str, ...] = GEOMETRY_TYPES
    #: what the writer produces by default: "folder" or "zip"
    default_output: str = "folder"

    def detect(self, src: Path) -> bool:
        """True when ``src`` looks like this format (a cheap check of names/first bytes)."""
        return False

    @abstractmethod
    def read(self, src: Path, options: dict[str, Any] | None = None) -> Dataset:
        """Read ``src`` (a file, folder or zip). Raises only :class:`FormatError`."""

    @abstractmethod
    def write(self, dataset: Dataset, dest: Path, options: dict[str, Any] | None = None) -> Path:
        """Write ``dataset`` into the folder ``dest``; returns the main file or folder."""


# --------------------------------------------------------------------------- helpers


@contextmanager
def opened_source(src: Path) -> Iterator[Path]:
    """``src`` as a folder or file on disk; zips are extracted safely into a temporary folder."""
    src = Path(src)
    if not src.exists():
        raise FormatError(f"{src} does not exist", field=str(src))
    if src.is_file() and zipfile.is_zipfile(src):
        with tempfile.TemporaryDirectory(prefix="aqualens-zip-") as tmp:
            extract_zip(src, Path(tmp))
            yield Path(tmp)
    else:
        yield src


def extract_zip(src: Path, dest: Path) -> None:
    """Extract a zip, refusing absolute or ``..`` member paths and zip bombs."""
    try:
        with zipfile.ZipFile(src) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_UNZIPPED:
                raise FormatError(f"{src.name}: archive too large when extracted", field=src.name)
            for info in infos:
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise FormatError(f"unsafe member path {name!r} in {src.name}",
                                      field=src.name, valid="relative paths without '..'")
                if info.is_dir() or not parts or parts[0] == "__MACOSX":
                    continue
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fh, open(target, "wb") as out:
                    while chunk := fh.read(1 << 20):
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            OSError, EOFError, ValueError) as exc:
        raise FormatError(f"cannot read archive {src.name}: {exc}", field=src.name) from None


def zip_folder(folder: Path, dest: Path) -> Path:
    """Zip ``folder``'s content into ``dest`` (members relative to the folder)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


def read_text(path: Path, *, encodings: tuple[str, ...] = ("utf-8-sig",), rel: str | None = None,
              limit: int = 1 << 30) -> str:
    """Decode a text file, naming the file and byte offset on bad encoding."""
    rel = rel or path.name
    try:
        if path.stat().st_size > limit:
            raise FormatError(f"{rel} is larger than {limit} bytes", field=rel)
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {rel}: {exc.strerror or exc}", field=rel) from None
    last: UnicodeDecodeError | None = None
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError as exc:
            last = exc
    assert last is not None
    line = data[:last.start].count(b"\n") + 1
    raise FormatError(f"{rel}: bad encoding at byte {last.start} (line {line}): not "
                      f"{' or '.join(encodings)}", field=f"{rel}:{line}",
                      valid="UTF-8 text" if encodings == ("utf-8-sig",) else ", ".join(encodings))


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def find_image(root: Path, name: str, subdirs: tuple[str, ...] = ("", "images")) -> Path | None:
    """Resolve an image reference under ``root`` without leaving it."""
    rel = name.replace("\\", "/").lstrip("/")
    if not rel or ".." in PurePosixPath(rel).parts:
        return None
    for sub in subdirs:
        cand = (root / sub / rel) if sub else root / rel
        if cand.is_file():
            return cand
    return None


def unique_names(names: list[str]) -> list[str]:
    """Make file names unique by suffixing ``_2``, ``_3`` before the extension."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        key = name.lower()
        if key in seen:
            seen[key] += 1
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}_{seen[key]}.{ext}" if dot else f"{name}_{seen[key]}"
            key = name.lower()
        seen.setdefault(key, 1)
        out.append(name)
    return out


def copy_image(img: ImageRecord, dest: Path) -> None:
    """Copy an image's bytes to ``dest`` (a copy, never a link: sources may be store blobs)."""
    import shutil

    if img.path is None:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(img.path, dest)


def safe_float(text: Any) -> float | None:
    """A finite float or None."""
    import math

    try:
        val = float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return val if math.isfinite(val) else None


def bytes_reader(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
