"""Training data: items (image + target), image loading by sha256 or path, resize, memory cache.

Items come from a frozen dataset version (images read from the blob store by sha256) or, for
benchmarks and tests, from folders (class folders; YOLO images/ + labels/). Decoded, resized
arrays are cached in memory per process: plankton vignettes are tiny, and a detector epoch over a
few hundred frames must not decode JPEGs again.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aqualens.core.errors import FormatError, ValidationError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
RESIZE_POLICIES = ("stretch", "letterbox")


@dataclass
class Item:
    """One training image: where its bytes are, and its target.

    ``boxes`` are xyxy in original-image pixels; ``labels`` index the label map (one per box for
    detection; ``label`` is the class index for classification).
    """

    name: str
    sha256: str | None = None
    path: Path | None = None
    label: int | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    group: str | None = None

    @property
    def key(self) -> str:
        return self.sha256 or str(self.path)


def decode(data: bytes, channels: int, name: str = "image") -> np.ndarray:
    """Bytes -> HxWxC uint8 (C = 1 or 3)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for broken files
        raise FormatError(f"cannot decode image: {exc}", field=name) from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def resize(img: np.ndarray, height: int, width: int, policy: str
           ) -> tuple[np.ndarray, float, float, float, float]:
    """Resize HxWxC to the network input; returns (out, sx, sy, pad_x, pad_y).

    A point (x, y) of the original maps to (x * sx + pad_x, y * sy + pad_y). ``letterbox`` keeps
    the aspect ratio and centres the image on a black (zero) canvas, the background of dark-field
    vignettes; ``stretch`` scales each axis independently.
    """
    import cv2

    h, w = img.shape[:2]
    c = img.shape[2]
    if policy == "stretch":
        sx, sy, px, py = width / w, height / h, 0.0, 0.0
        out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA
                         if sx < 1 and sy < 1 else cv2.INTER_LINEAR)
    elif policy == "letterbox":
        s = min(width / w, height / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                           else cv2.INTER_LINEAR)
        out = np.zeros((height, width, c), np.uint8)
        px, py = (width - nw) // 2, (height - nh) // 2
        out[py:py + nh, px:px + nw] = small.reshape(nh, nw, c)
        sx, sy = nw / w, nh / h
    else:
        raise ValidationError(f"unknown resize policy {policy!r}", field="resize",
                              valid=", ".join(RESIZE_POLICIES))
    return out.reshape(height, width, c), sx, sy, float(px), float(py)


class ArrayCache:
    """A process-wide LRU of resized arrays, bounded in bytes."""

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple, tuple] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple):  # noqa: ANN201
        with self._lock:
            val = self._d.get(key)
            if val is not None:
                self._d.move_to_end(key)
            return val

    def put(self, key: tuple, val: tuple) -> None:
        with self._lock:
            if key in self._d:
                return
            self._d[key] = val
            self._bytes += val[0].nbytes
            while self._bytes > self.max_bytes and self._d:
                _, old = self._d.popitem(last=False)
                self._bytes -= old[0].nbytes


CACHE = ArrayCache()


def load_arrays(items: Sequence[Item], read: Callable[[Item], bytes], height: int, width: int,
                channels: int, policy: str, progress: Callable[[int], None] | None = None,
                threads: int = 4) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decode and resize every item: (N,H,W,C) uint8 and boxes mapped to input pixels."""
    out = np.zeros((len(items), height, width, channels), np.uint8)
    boxes: list[np.ndarray] = [np.zeros((0, 4), np.float32)] * len(items)

    def one(i: int) -> None:
        it = items[i]
        ck = (it.key, height, width, channels, policy)
        hit = CACHE.get(ck)
        if hit is None:
            arr = decode(read(it), channels, it.name)
            hit = resize(arr, height, width, policy)
            CACHE.put(ck, hit)
        img, sx, sy, px, py = hit
        out[i] = img
        b = np.asarray(it.boxes, np.float32).reshape(-1, 4)
        if b.size:
            b = b * np.array([sx, sy, sx, sy], np.float32) + np.array([px, py, px, py], np.float32)
        boxes[i] = b

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for _ in pool.map(one, range(len(items))):
            if progress:
                progress(1)
    return out, boxes


def path_reader(item: Item) -> bytes:
    """Read an item from its file path."""
    assert item.path is not None
    return Path(item.path).read_bytes()


def store_reader(store) -> Callable[[Item], bytes]:  # noqa: ANN001 - BlobStore
    """Read items by sha256 from a blob store."""
    def read(item: Item) -> bytes:
        return store.get_bytes(item.sha256)
    return read


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


# --- folder sources (benchmarks, tests, reference models) -------------------------------------

def class_folders(root: Path) -> tuple[list[Item], list[str]]:
    """``root/<class>/<image>``; a ``__<id>`` suffix on the folder name is dropped."""
    root = Path(root)
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not dirs:
        raise ValidationError("no class folders", field=str(root), valid="root/<class>/<images>")
    names = [re.sub(r"__[^_]+$", "", d.name) for d in dirs]
    items = []
    for ci, d in enumerate(dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(name=f"{d.name}/{f.name}", path=f, label=ci))
    return items, names


def yolo_folder(root: Path) -> tuple[list[Item], list[str]]:
    """A YOLO export: ``data.yaml`` (names) + ``images/**`` + ``labels/**`` (same stem, .txt)."""
    import yaml

    root = Path(root)
    names: list[str] = []
    if (root / "data.yaml").exists():
        meta = yaml.safe_load((root / "data.yaml").read_text()) or {}
        names = list(meta.get("names") or [])
    items = []
    for f in sorted((root / "images").rglob("*")):
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = f.relative_to(root / "images")
        lab = (root / "labels" / rel).with_suffix(".txt")
        w, h = image_size(f)
        rows = []
        if lab.exists():
            for ln, line in enumerate(lab.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise FormatError("expected 'class cx cy w h'", field=f"{lab}:{ln}")
                rows.append([float(p) for p in parts])
        arr = np.asarray(rows, np.float32).reshape(-1, 5)
        cls = arr[:, 0].astype(np.int64)
        cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        items.append(Item(name=str(rel), path=f, boxes=boxes.reshape(-1, 4), labels=cls))
    if not items:
        raise ValidationError("no images under images/", field=str(root),
                              valid="a YOLO export: data.yaml, images/**, labels/**")
    if not names:
        n = max((int(it.labels.max()) + 1 for it in items if it.labels.size), default=1)
        names = [str(i) for i in range(n)]
    return items, names


def group_of(name: str, pattern: str | None) -> str:
    """The group (video, station, sample) of an item by regex; group 1 or the whole match."""
    if not pattern:
        return name
    m = re.search(pattern, name)
    if not m:
        return name
    return m.group(1) if m.groups() else m.group(0)


@dataclass
class TrainData:
    """Arrays in memory: images (N,H,W,C) uint8; classify: ``labels`` (N,); detect: ``boxes``
    (list of (M,4) xyxy in input pixels) and ``box_labels`` (list of (M,))."""

    images: np.ndarray
    labels: np.ndarray | None = None
    boxes: list[np.ndarray] = field(default_factory=list)
    box_labels: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def build_train_data(items: Sequence[Item], read: Callable[[Item], bytes], task: str,
                     height: int, width: int, channels: int, policy: str,
                     progress: Callable[[int], None] | None = None) -> TrainData:
    """Load ``items`` into a :class:`TrainData` at the network input size."""
    images, boxes = load_arrays(items, read, height, width, channels, policy, progress)
    if task == "classify":
        return TrainData(images=images, labels=np.asarray([it.label for it in items], np.int64))
    return TrainData(images=images, boxes=[b.astype(np.float32) for b in boxes],
                     box_labels=[np.asarray(it.labels, np.int64).reshape(-1) for it in items])


def guess_channels(items: Sequence[Item], read: Callable[[Item], bytes], sample: int = 20) -> int:
    """1 when every sampled image is greyscale (mode L/I/1 or equal RGB planes), else 3."""
    step = max(1, len(items) // sample)
    for it in list(items)[::step][:sample]:
        with Image.open(io.BytesIO(read(it))) as im:
            if im.mode in ("L", "I", "I;16", "1", "LA"):
                continue
            arr = np.asarray(im.convert("RGB"))
            if not (np.array_equal(arr[..., 0], arr[..., 1])
                    and np.array_equal(arr[..., 1], arr[..., 2])):
                return 3
    return 1
