"""Batched, vectorised image preprocessing and the geometry to map results back.

Each image is resized once with OpenCV (C code); everything after that (channel handling,
scaling, normalisation, HWC→CHW, stacking) is numpy on the whole batch at once. No Python loop
ever touches pixels.

Resize policies (:class:`~aqualens.models.base.InputSpec.resize`):

- ``stretch``: resize to exactly ``width x height`` (aspect ratio not kept).
- ``letterbox``: scale to fit, keeping the aspect ratio, centred on a ``pad_value`` canvas.
- ``pad``: no scaling unless the image is larger than the input (then scaled down to fit);
  placed at the top-left corner of the canvas.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aqualens.core.errors import UnsupportedMedia, ValidationError
from aqualens.models.base import InputSpec

# OpenCV's INTER_AREA is the right filter for shrinking, INTER_LINEAR for enlarging.


@dataclass(frozen=True)
class Transform:
    """How one original image maps onto the network input: ``net = orig * scale + offset``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    orig_w: int
    orig_h: int


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 → HxWx3 RGB (alpha dropped)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return image[:, :, :3]
    return image


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    if image.shape[1] == w and image.shape[0] == h:
        return image
    shrink = w < image.shape[1] or h < image.shape[0]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out if out.ndim == image.ndim else out[:, :, None]


def fit_one(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Transform]:
    """Resize/pad one image (uint8, channels already per spec) to the input size."""
    h, w = image.shape[:2]
    H, W = spec.height, spec.width
    if spec.resize == "stretch":
        return _resize(image, W, H), Transform(W / w, H / h, 0.0, 0.0, w, h)
    if spec.resize == "letterbox":
        s = min(W / w, H / h)
    else:  # pad: never enlarge
        s = min(1.0, W / w, H / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = _resize(image, nw, nh)
    ox, oy = ((W - nw) // 2, (H - nh) // 2) if spec.resize == "letterbox" else (0, 0)
    canvas = np.full((H, W, image.shape[2]), spec.pad_value, dtype=np.uint8)
    canvas[oy:oy + nh, ox:ox + nw] = resized
    return canvas, Transform(nw / w, nh / h, float(ox), float(oy), w, h)


def preprocess_batch(images: list[np.ndarray], spec: InputSpec) -> tuple[np.ndarray,
                                                                          list[Transform]]:
    """Images (uint8 HxW[xC], any sizes) → float32 NCHW batch normalised per ``spec``."""
    fitted, transforms = [], []
    for im in images:
        if spec.channels == 1:
            if im.ndim == 3 and im.shape[2] >= 3:
                # ITU-R BT.601 luma, as PIL's "L" mode: greyscale models trained on "L" images.
                im = cv2.cvtColor(np.ascontiguousarray(im[:, :, :3]), cv2.COLOR_RGB2GRAY)
            elif im.ndim == 3:
                im = im[:, :, 0]
            im = im[:, :, None]
        else:
            im = to_rgb(im)
        out, t = fit_one(np.ascontiguousarray(im), spec)
        fitted.append(out)
        transforms.append(t)
    batch = np.stack(fitted).astype(np.float32)                     # N,H,W,C
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    batch = (batch * np.float32(spec.scale) - mean) / std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), transforms


def boxes_to_original(boxes: np.ndarray, t: Transform) -> np.ndarray:
    """(K, 4) x1,y1,x2,y2 in network pixels → x,y,w,h in original pixels, clipped."""
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x1 = np.clip((boxes[:, 0] - t.offset_x) / t.scale_x, 0, t.orig_w)
    y1 = np.clip((boxes[:, 1] - t.offset_y) / t.scale_y, 0, t.orig_h)
    x2 = np.clip((boxes[:, 2] - t.offset_x) / t.scale_x, 0, t.orig_w)
    y2 = np.clip((boxes[:, 3] - t.offset_y) / t.scale_y, 0, t.orig_h)
    return np.stack([x1, y1, np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)], axis=1)


def mask_to_original(mask: np.ndarray, t: Transform, spec: InputSpec) -> np.ndarray:
    """A label map at network resolution (or any) → the original image's size (nearest)."""
    if mask.shape != (spec.height, spec.width):
        mask = cv2.resize(mask, (spec.width, spec.height), interpolation=cv2.INTER_NEAREST)
    x0, y0 = int(round(t.offset_x)), int(round(t.offset_y))
    x1 = x0 + max(1, int(round(t.orig_w * t.scale_x)))
    y1 = y0 + max(1, int(round(t.orig_h * t.scale_y)))
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
    return cv2.resize(crop, (t.orig_w, t.orig_h), interpolation=cv2.INTER_NEAREST)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS over (K, 4) x1,y1,x2,y2; returns kept indices, best first (vectorised IoU)."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        union = areas[i] + areas[rest] - inter
        ious = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def classwise_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                  iou: float) -> np.ndarray:
    """NMS per class without a loop over classes: boxes of different classes are offset so far
    apart that they never overlap (the batched-NMS trick)."""
    if boxes.size == 0:
        return np.zeros((0,), dtype=np.int64)
    span = float(boxes.max()) + 1.0
    shifted = boxes + (labels.astype(np.float64) * span)[:, None]
    return nms_xyxy(shifted, scores, iou)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes → HxWx3 RGB uint8 (or HxW for greyscale); UnsupportedMedia if not an
    image. Uses OpenCV (fast) and falls back to Pillow for formats OpenCV lacks."""
    arr = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED) if arr.size else None
    if img is not None and img.dtype == np.uint8:
        if img.ndim == 3 and img.shape[2] == 3:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.ndim == 3 and img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        return img
    try:
        from PIL import Image, UnidentifiedImageError

        with Image.open(io.BytesIO(data)) as pil:
            pil = pil.convert("L") if pil.mode in ("L", "I;16", "I", "1") else pil.convert("RGB")
            return np.asarray(pil)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"{name} is not a readable image ({exc.__class__.__name__})",
                               field=name, valid="JPEG, PNG, TIFF, BMP, WebP") from None


def read_image(path: Path) -> np.ndarray:
    """Decode an image file (see :func:`decode_image`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", field=str(path)) from None
    return decode_image(data, str(path))
