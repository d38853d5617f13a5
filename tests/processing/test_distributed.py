"""Real processes: a runner killed with SIGKILL mid-job and restarted (exactly-once results), and
a separate ``dask scheduler`` with two worker processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from sqlalchemy import func, select

from aqualens.catalog.tables import Annotation, JobResult
from aqualens.processing import jobs

from .helpers import add_images, admin_id, register_brightness_model, wait_state

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _exactly_once(ctx, job_id: str, n: int) -> None:
    with ctx.session() as s:
        assert s.scalar(select(func.count()).select_from(JobResult)
                        .where(JobResult.job_id == job_id)) == n
        per_image = s.execute(select(Annotation.image_id, func.count())
                              .where(Annotation.job_id == job_id)
                              .group_by(Annotation.image_id)).all()
        assert len(per_image) == n and {c for _, c in per_image} == {1}


@pytest.mark.slow
def test_sigkill_runner_mid_job_then_resume(ctx, tmp_path):
    from .runner_proc import register

    register()
    n = 40
    add_images(ctx, [(i * 6) % 256 for i in range(n)])
    register_brightness_model(ctx, tmp_path)
    with ctx.session() as s:
        job_id = jobs.create_job(s, "slow-predict", {"model": "bright", "collection": "cam1"},
                                 admin_id(ctx)).id
    data_dir = str(ctx.settings.data_dir)
    first = _spawn([sys.executable, "-m", "tests.processing.runner_proc", data_dir])
    try:
        deadline = time.monotonic() + 60
        while True:
            with ctx.session() as s:
                done = s.get(jobs.Job, job_id).done
            if done >= n // 4:
                break
            assert time.monotonic() < deadline, first.stdout.read() if first.poll() else "slow"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    with ctx.session() as s:
        job = s.get(jobs.Job, job_id)
        assert job.state == "running" and job.done < n  # killed in the middle
    second = _spawn([sys.executable, "-m", "tests.processing.runner_proc", data_dir])
    try:
        job = wait_state(ctx, job_id, ("succeeded", "failed"), timeout=90)
    finally:
        second.kill()
        second.wait(10)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["done"] == n and job["failed"] == 0
    _exactly_once(ctx, job_id, n)
    with ctx.session() as s:
        logs = [ln.message for ln in jobs.get_logs(s, job_id)]
    assert any("is gone; job re-queued" in m for m in logs)


PROFILER = "distributed.worker.profile.enabled"


def test_lean_local_cluster(tmp_path):
    """The LocalCluster AquaLens starts runs without Dask's profiler, in its worker processes
    too; ``dask.lean = false`` keeps Dask's defaults."""
    from aqualens.processing.cluster import close_client, open_client

    from tests.conftest import make_settings

    for lean in (True, False):
        settings = make_settings(tmp_path / f"data-{lean}", dask={
            "n_workers": 1, "threads_per_worker": 1, "processes": True, "lean": lean})
        client = open_client(settings)
        try:
            assert set(client.run(dask.config.get, PROFILER).values()) == {not lean}
        finally:
            close_client(client)
    # Nothing stays set in this process.
    assert dask.config.get(PROFILER) is True


@pytest.mark.slow
def test_separate_scheduler_and_two_workers(tmp_path):
    """``dask scheduler`` + ``aqualens worker`` + ``dask worker`` as processes; the runner in
    this process sends batches through them."""
    from aqualens.catalog.db import dispose_engines
    from aqualens.processing.runner import Runner
    from tests.conftest import make_ctx, make_settings

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    ctx, _ = make_ctx(make_settings(tmp_path / "data", dask={"address": address}))
    n = 48
    add_images(ctx, [(i * 5) % 256 for i in range(n)])
    register_brightness_model(ctx, tmp_path)
    procs = [_spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--no-dashboard"])]
    try:
        time.sleep(1.0)
        procs.append(_spawn([str(BIN / "aqualens"), "worker", address, "--nthreads", "1",
                             "--name", "aq-worker"]))
        procs.append(_spawn([str(BIN / "dask"), "worker", address, "--nthreads", "1",
                             "--no-dashboard", "--name", "dask-worker"]))
        runner = Runner(ctx, poll_s=0.05)
        deadline = time.monotonic() + 60
        while len(runner.client.nthreads()) < 2:
            assert time.monotonic() < deadline, [p.poll() for p in procs]
            time.sleep(0.2)
        # `aqualens worker` starts lean (no statistical profiler); a plain `dask worker` keeps
        # Dask's defaults.
        profiling = runner.client.run(dask.config.get, PROFILER)
        names = {a: w["name"] for a, w in runner.client.scheduler_info()["workers"].items()}
        assert {names[a]: on for a, on in profiling.items()} == {"aq-worker": False,
                                                                 "dask-worker": True}
        with ctx.session() as s:
            job_id = jobs.create_job(s, "predict", {"model": "bright", "collection": "cam1",
                                                    "batch_size": 2}, admin_id(ctx)).id
        runner.start()
        try:
            job = wait_state(ctx, job_id, ("succeeded", "failed"), timeout=90)
        finally:
            runner.stop()
        assert job["state"] == "succeeded", job
        assert job["done"] == n
        workers = job["outputs"]["batches_per_worker"]
        assert len(workers) == 2, workers  # both worker processes did batches
        assert all(w.split(":")[1] != str(os.getpid()) for w in workers)
        _exactly_once(ctx, job_id, n)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        dispose_engines()
