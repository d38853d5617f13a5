"""Geometry helpers shared by formats and the importer: RLE, bounds, validity, clipping.

RLE work goes through pycocotools; polygon validity and clipping through shapely.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class GeometryProblem(ValueError):
    """A geometry is malformed or degenerate (the message says why)."""


def _finite(values: list[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GeometryProblem(f"coordinate {v!r} is not a number")
        if not math.isfinite(v):
            raise GeometryProblem(f"coordinate {v!r} is not finite")
        out.append(float(v))
    return out


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """A compressed COCO RLE (``counts`` as str) of a 2-D boolean/uint8 mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_normalise(seg: Any) -> dict[str, Any]:
    """Compressed RLE from a compressed or uncompressed (``counts`` list) COCO RLE."""
    from pycocotools import mask as mask_utils

    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise GeometryProblem("mask must be an RLE object with 'size' and 'counts'")
    size = seg["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 1 << 20
                       for s in size)):
        raise GeometryProblem(f"mask size {size!r} must be [height, width] positive integers")
    h, w = int(size[0]), int(size[1])
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise GeometryProblem("uncompressed RLE counts must be non-negative integers")
        if sum(counts) != h * w:
            raise GeometryProblem(f"uncompressed RLE counts sum to {sum(counts)}, not {h}x{w}")
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, str):
        try:
            counts.encode("ascii")
        except UnicodeEncodeError:
            raise GeometryProblem("compressed RLE counts must be ASCII") from None
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    else:
        raise GeometryProblem("RLE counts must be a string or a list of integers")
    try:
        area = int(mask_utils.area(rle))
        # Decoding checks that the counts really cover h*w pixels.
        decoded = mask_utils.decode(rle)
    except Exception as exc:  # noqa: BLE001 - pycocotools raises bare exceptions on bad RLE
        raise GeometryProblem(f"RLE cannot be decoded: {exc}") from None
    if decoded.shape != (h, w) or area != int(decoded.sum()):
        raise GeometryProblem("RLE counts do not cover the mask size")
    counts_out = rle["counts"]
    return {"size": [h, w], "counts": counts_out.decode("ascii") if isinstance(counts_out, bytes)
            else counts_out}


def rle_decode(seg: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")})


def rle_area(seg: dict[str, Any]) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode("ascii")}))


def rle_bbox(seg: dict[str, Any]) -> list[float]:
    from pycocotools import mask as mask_utils

    box = mask_utils.toBbox({"size": seg["size"], "counts": seg["counts"].encode("ascii")})
    return [float(v) for v in box]


def polygon_area(parts: list[list[float]]) -> float:
    from shapely.geometry import Polygon

    return float(sum(Polygon(list(zip(p[0::2], p[1::2]))).area for p in parts if len(p) >= 6))


def polygon_bbox(parts: list[list[float]]) -> list[float]:
    xs = [v for p in parts for v in p[0::2]]
    ys = [v for p in parts for v in p[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def bbox_of(geometry_type: str, geometry: Any) -> list[float] | None:
    """The [x, y, w, h] box around any geometry, or None for whole-image labels."""
    if geometry_type == "box":
        return [float(v) for v in geometry]
    if geometry_type == "polygon":
        return polygon_bbox(geometry)
    if geometry_type == "mask":
        return rle_bbox(geometry)
    if geometry_type == "point":
        return [float(geometry[0]), float(geometry[1]), 0.0, 0.0]
    return None


def area_of(geometry_type: str, geometry: Any) -> float:
    if geometry_type == "box":
        return float(geometry[2]) * float(geometry[3])
    if geometry_type == "polygon":
        return polygon_area(geometry)
    if geometry_type == "mask":
        return float(rle_area(geometry))
    return 0.0


def check_geometry(geometry_type: str, geometry: Any, width: int | None, height: int | None,
                   on_outside: str = "clip") -> tuple[Any, str | None]:
    """Validate (and, by policy, clip) a geometry against its image.

    Returns ``(geometry, warning)``: the possibly clipped geometry and a note when it was
    clipped. Raises :class:`GeometryProblem` for malformed or degenerate geometry, or for
    geometry outside the image when ``on_outside == "reject"``.
    """
    if geometry_type == "none":
        if geometry not in (None, [], {}):
            raise GeometryProblem("a whole-image label carries no geometry")
        return None, None
    if geometry_type == "box":
        if not isinstance(geometry, (list, tuple)) or len(geometry) != 4:
            raise GeometryProblem("box must be [x, y, w, h]")
        x, y, w, h = _finite(list(geometry))
        if w <= 0 or h <= 0:
            raise GeometryProblem(f"degenerate box: width {w:g}, height {h:g}")
        if width is None or height is None:
            return [x, y, w, h], None
        x1, y1, x2, y2 = x, y, x + w, y + h
        if x1 >= 0 and y1 >= 0 and x2 <= width + 1e-6 and y2 <= height + 1e-6:
            return [x, y, w, h], None
        if on_outside == "reject":
            raise GeometryProblem(f"box {[round(v, 2) for v in (x, y, w, h)]} lies outside the "
                                  f"{width}x{height} image")
        cx1, cy1 = max(0.0, x1), max(0.0, y1)
        cx2, cy2 = min(float(width), x2), min(float(height), y2)
        if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
            raise GeometryProblem(f"box lies entirely outside the {width}x{height} image")
        return [cx1, cy1, cx2 - cx1, cy2 - cy1], "box clipped to the image"
    if geometry_type == "polygon":
        return _check_polygon(geometry, width, height, on_outside)
    if geometry_type == "mask":
        rle = rle_normalise(geometry)
        if width is not None and height is not None and rle["size"] != [height, width]:
            raise GeometryProblem(f"mask size {rle['size']} differs from the image "
                                  f"[{height}, {width}]")
        if rle_area(rle) == 0:
            raise GeometryProblem("degenerate mask: no pixel set")
        return rle, None
    if geometry_type == "point":
        if not isinstance(geometry, (list, tuple)) or len(geometry) != 2:
            raise GeometryProblem("point must be [x, y]")
        x, y = _finite(list(geometry))
        if width is None or height is None or (0 <= x <= width and 0 <= y <= height):
            return [x, y], None
        if on_outside == "reject":
            raise GeometryProblem(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
        return [min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))], \
            "point moved onto the image edge"
    raise GeometryProblem(f"unknown geometry type {geometry_type!r}")


def _check_polygon(geometry: Any, width: int | None, height: int | None,
                   on_outside: str) -> tuple[Any, str | None]:
    from shapely.geometry import MultiPolygon, Polygon, box
    from shapely.validation import make_valid

    if not isinstance(geometry, (list, tuple)) or not geometry:
        raise GeometryProblem("polygon must be a list of parts [x0, y0, x1, y1, ...]")
    parts = []
    for part in geometry:
        if not isinstance(part, (list, tuple)):
            raise GeometryProblem("polygon part must be a flat list of coordinates")
        coords = _finite(list(part))
        if len(coords) % 2:
            raise GeometryProblem("polygon part has an odd number of coordinates")
        if len(coords) < 6:
            raise GeometryProblem(f"degenerate polygon: a part has {len(coords) // 2} points "
                                  "(at least 3 needed)")
        parts.append(coords)
    shapes = [Polygon(list(zip(p[0::2], p[1::2]))) for p in parts]
    if any(s.area <= 0 for s in shapes):
        raise GeometryProblem("degenerate polygon: a part has zero area")
    if width is None or height is None:
        return parts, None
    frame = box(0, 0, width, height)
    if all(frame.covers(s) for s in shapes):
        return parts, None
    if on_outside == "reject":
        raise GeometryProblem(f"polygon lies outside the {width}x{height} image")
    clipped: list[list[float]] = []
    for s in shapes:
        inter = (s if s.is_valid else make_valid(s)).intersection(frame)
        polys = [inter] if isinstance(inter, Polygon) else \
            [g for g in getattr(inter, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
        for poly in polys:
            for sub in (poly.geoms if isinstance(poly, MultiPolygon) else [poly]):
                if sub.area > 0:
                    ring = list(sub.exterior.coords)[:-1]
                    clipped.append([float(c) for xy in ring for c in xy])
    if not clipped:
        raise GeometryProblem(f"polygon lies entirely outside the {width}x{height} image")
    return clipped, "polygon clipped to the image"


def geometry_key(geometry_type: str, geometry: Any) -> str:
    """A stable key for duplicate detection (coordinates rounded to 0.01 px)."""
    import json

    def rnd(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 2)
        if isinstance(v, (list, tuple)):
            return [rnd(x) for x in v]
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in sorted(v.items())}
        return v

    return geometry_type + ":" + json.dumps(rnd(geometry), sort_keys=True)
