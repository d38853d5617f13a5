"""Ingest benchmark: AquaLens ingest vs a raw loop (read + sha256 + PIL draft thumbnail).

Generates N JPEGs (cached in bench/out/), ingests them through AquaLens on the embedded tier
(SQLite + local blob folder, in a temporary data dir), and in the same run times a raw loop over
the same files that only reads, hashes and makes a draft thumbnail (no database, no storage).
Both loops read from a warm page cache. Target: AquaLens >= 0.5 x the raw loop.

    .venv/bin/python bench/ingest.py [--n 2000] [--size 1920x1080] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "out"
TARGET = 0.5


@lru_cache(maxsize=8)
def _base(k: int, width: int, height: int) -> np.ndarray:
    """One of 8 camera-like scenes: smooth gradients, bright "fish" ellipses, sensor noise."""
    rng = np.random.default_rng(1000 + k)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4, 3)
        img[..., c] = 110 + 70 * np.sin(x / width * fx * np.pi + ph) * np.cos(y / height * fy * np.pi)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(20, 200), rng.uniform(10, 80)
        img[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1] += rng.uniform(-60, 60, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _make_one(args: tuple[Path, int, int, int]) -> None:
    """A distinct JPEG (~300-500 KB): a base scene shifted by the seed, with a seed-placed block.

    Every file differs in content and in thumbnail, so nothing is deduplicated.
    """
    path, seed, width, height = args
    rng = np.random.default_rng(seed)
    img = np.roll(_base(seed % 8, width, height), (int(rng.integers(0, height)),
                                                  int(rng.integers(0, width))), axis=(0, 1))
    bx, by = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 120))
    img[by:by + 120, bx:bx + 200] = rng.integers(0, 255, 3, dtype=np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=88)


def generate(n: int, width: int, height: int) -> Path:
    """N JPEGs in bench/out/ingest-<n>-<w>x<h>/, reused when already there."""
    folder = OUT / f"ingest-{n}-{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(folder / f"img_{i:05d}.jpg", i, width, height) for i in range(n)
            if not (folder / f"img_{i:05d}.jpg").exists()]
    if todo:
        print(f"generating {len(todo)} JPEGs of {width}x{height} in {folder} ...", flush=True)
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(_make_one, todo, chunksize=8))
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def raw_loop(files: list[Path], thumb: int) -> float:
    """Seconds for read + sha256 + draft thumbnail of every file, one after the other."""
    started = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (thumb, thumb))
        img.thumbnail((thumb, thumb))
    return time.perf_counter() - started


def aqualens_ingest(folder: Path, workers: int | None) -> tuple[float, dict]:
    """Seconds for ``ingest_paths`` of the folder into a fresh embedded instance."""
    from aqualens.catalog.context import Context
    from aqualens.catalog.db import dispose_engines
    from aqualens.catalog.instance import init_instance
    from aqualens.catalog.users import get_admin
    from aqualens.core.config import load_settings
    from aqualens.ingest.pipeline import ingest_paths
    from aqualens.storage import forget_stores

    data_dir = Path(tempfile.mkdtemp(prefix="aqualens-bench-", dir=OUT))
    try:
        ctx = Context(load_settings(data_dir=data_dir))
        init_instance(ctx)
        with ctx.session() as s:
            owner = get_admin(s).id
        started = time.perf_counter()
        report = ingest_paths(ctx, [folder], collection="bench", owner_id=owner, workers=workers)
        seconds = time.perf_counter() - started
        dispose_engines()
        forget_stores()
        return seconds, report.summary()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs (default 2000)")
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--workers", type=int, default=None,
                        help="AquaLens ingest threads (default: the pipeline's own choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = generate(args.n, width, height)
    files = sorted(folder.glob("*.jpg"))[: args.n]
    total_mb = sum(f.stat().st_size for f in files) / 1e6
    for f in files:  # warm the page cache so both loops read from memory
        f.read_bytes()
    raw1 = raw_loop(files, 256)
    ours, summary = aqualens_ingest(folder, args.workers)
    raw2 = raw_loop(files, 256)
    raw = min(raw1, raw2)  # the faster raw run: the stricter comparison
    if summary["accepted"] != len(files):
        print(f"ingest accepted {summary['accepted']} of {len(files)} files", file=sys.stderr)
        return 1
    result = {"n": len(files), "size": f"{width}x{height}", "mb": round(total_mb, 1),
              "cpus": os.cpu_count(), "raw_images_per_s": round(len(files) / raw, 1),
              "raw_runs_s": [round(raw1, 2), round(raw2, 2)],
              "aqualens_images_per_s": round(len(files) / ours, 1),
              "aqualens_s": round(ours, 2), "ratio": round(raw / ours, 3), "target": TARGET}
    print(f"{len(files)} JPEGs {width}x{height}, {total_mb:.0f} MB, {os.cpu_count()} CPUs")
    print(f"raw loop (read+sha256+draft thumbnail): {result['raw_images_per_s']:8.1f} images/s "
          f"(runs {raw1:.2f} s, {raw2:.2f} s)")
    print(f"AquaLens ingest (embedded tier):        {result['aqualens_images_per_s']:8.1f} images/s "
          f"({ours:.2f} s)")
    print(f"ratio AquaLens/raw: {result['ratio']:.2f} (target >= {TARGET})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
