"""Offline prediction on files and folders: no server, no catalogue (``aqualens predict``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aqualens.core.errors import AquaLensError, ValidationError
from aqualens.models.base import ModelInfo, ModelRuntime
from aqualens.models.preprocess import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm"}


def iter_sources(paths: list[Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            raise ValidationError(f"{p} does not exist", field=str(p),
                                  valid="image files or folders")
    return out


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def predict_files(runtime: ModelRuntime, files: list[Path], *, top_k: int = 5,
                  threshold: float = 0.0, batch_size: int = 16,
                  progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Predict every file in batches; an unreadable file is a row with its error, not a crash."""
    rows: list[dict[str, Any]] = []
    for batch in _batches(files, batch_size):
        arrays, ok = [], []
        for f in batch:
            try:
                arrays.append(read_image(f))
                ok.append(f)
            except AquaLensError as exc:
                rows.append({"file": str(f), "error": str(exc)})
        if arrays:
            for f, a, r in zip(ok, arrays, runtime.predict(arrays, top_k=top_k,
                                                           threshold=threshold)):
                rows.append({"file": str(f), "width": int(a.shape[1]),
                             "height": int(a.shape[0]), "result": r.to_dict()})
        if progress:
            progress(len(batch))
    order = {str(f): i for i, f in enumerate(files)}
    rows.sort(key=lambda r: order.get(r["file"], 0))
    return rows


CSV_COLUMNS = ["file", "width", "height", "rank", "label", "aphia_id", "score", "x", "y", "w",
               "h", "area", "error"]


def flat_rows(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One CSV row per class (classify: top-k ranks), box, mask or file with an error."""
    for row in rows:
        base = {"file": row["file"], "width": row.get("width"), "height": row.get("height")}
        if "error" in row:
            yield {**base, "error": row["error"]}
            continue
        res = row["result"]
        items = res.get("top") or res.get("boxes") or res.get("masks") or []
        if res["task"] == "embed":
            yield {**base, "label": "embedding", "score": len(res["vector"])}
            continue
        if not items:
            yield base
        for n, it in enumerate(items, 1):
            out = {**base, "rank": n, "label": it["label"], "aphia_id": it.get("aphia_id"),
                   "score": it["score"]}
            if "x" in it:
                out.update(x=it["x"], y=it["y"], w=it["w"], h=it["h"])
            if it.get("box"):
                out.update(dict(zip("xywh", it["box"])), area=it.get("area"))
            yield out


def write_results(out: Path, rows: list[dict[str, Any]], info: ModelInfo,
                  pid: str | None = None) -> None:
    """CSV (one row per class/box/mask) or JSON (model + per-file results), by suffix."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValidationError(f"cannot write results as {suffix or 'no suffix'}", field="--out",
                              valid=".csv or .json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    if suffix == ".json":
        tmp.write_text(json.dumps({"model": {"name": info.name, "version": info.version,
                                             "task": info.task, "pid": pid},
                                   "results": rows}, indent=2))
    else:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in flat_rows(rows):
                w.writerow(r)
    tmp.replace(out)
