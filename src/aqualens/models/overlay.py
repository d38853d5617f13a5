"""Draw results on an image (PNG overlays for the API and the CLI), with Pillow."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def _colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)] if index >= 0 else PALETTE[0]


def overlay_png(image: np.ndarray, result: dict[str, Any]) -> bytes:
    """PNG bytes of ``image`` with ``result`` (a ``Result.to_dict()``) drawn on it: boxes and
    labels for detections, tinted masks for segmentations, the top-k list for classifications."""
    base = Image.fromarray(image if image.ndim == 3 else np.stack([image] * 3, axis=2))
    base = base.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default()
    task = result.get("task")
    if task == "detect":
        for b in result.get("boxes", []):
            c = _colour(b.get("index", -1))
            x, y, w, h = b["x"], b["y"], b["w"], b["h"]
            draw.rectangle([x, y, x + w, y + h], outline=c + (255,), width=2)
            text = f"{b['label']} {b['score']:.2f}"
            tb = draw.textbbox((x, y), text, font=font)
            ty = max(0, y - (tb[3] - tb[1]) - 2)
            draw.rectangle([x, ty, x + (tb[2] - tb[0]) + 4, ty + (tb[3] - tb[1]) + 2],
                           fill=c + (200,))
            draw.text((x + 2, ty), text, fill=(0, 0, 0, 255), font=font)
    elif task == "segment":
        from pycocotools import mask as mask_utils

        for m in result.get("masks", []):
            if not m.get("rle"):
                continue
            rle = dict(m["rle"])
            rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) \
                else rle["counts"]
            binary = mask_utils.decode(rle).astype(bool)
            tint = np.zeros((*binary.shape, 4), dtype=np.uint8)
            tint[binary] = _colour(m.get("index", -1)) + (110,)
            layer = Image.alpha_composite(layer, Image.fromarray(tint, "RGBA"))
            draw = ImageDraw.Draw(layer)
    elif task == "classify":
        lines = [f"{t['label']} {t['score']:.2f}" for t in result.get("top", [])] or ["(none)"]
        y = 2
        for i, text in enumerate(lines):
            tb = draw.textbbox((2, y), text, font=font)
            draw.rectangle([0, y, tb[2] + 4, tb[3] + 2], fill=(0, 0, 0, 160))
            draw.text((2, y), text, fill=_colour(i) + (255,) if i == 0 else (255, 255, 255, 255),
                      font=font)
            y = tb[3] + 3
    out = Image.alpha_composite(base, layer).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()
