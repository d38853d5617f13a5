"""The runner on an in-process LocalCluster: batches, per-image failures, cancel, retries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aqualens.catalog.tables import JobResult, UsageEvent
from aqualens.core.plugins import get_registry
from aqualens.processing import jobs
from aqualens.processing.kinds import BatchJobKind
from aqualens.processing.runner import Runner
from aqualens.processing.tasks import TransientJobError

from .helpers import add_images, admin_id, wait_state


@pytest.fixture
def runner_for(ctx):
    made = []

    def make(**kw):
        r = Runner(ctx, poll_s=0.05, heartbeat_s=0.2, retry_backoff_s=0.05, **kw)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()


def test_stats_job_with_per_image_failure(ctx, runner_for):
    _, ids = add_images(ctx, [0, 50, 100, 150, 200, 250, 255], missing_blob=(3,))
    with ctx.session() as s:
        job_id = jobs.create_job(s, "image-stats", {"collection": "cam1", "batch_size": 2},
                                 admin_id(ctx)).id
    runner_for()
    job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    assert (job["done"], job["failed"], job["total"]) == (6, 1, 7)
    assert job["outputs"]["images"] == 6
    assert job["outputs"]["max_brightness"] == pytest.approx(255, abs=0.5)
    with ctx.session() as s:
        bad = s.query(JobResult).filter_by(job_id=job_id, ok=False).one()
        assert bad.image_id == ids[3] and "not in the store" in bad.error
        good = s.query(JobResult).filter_by(job_id=job_id, image_id=ids[1]).one()
        assert good.payload["mean"] == pytest.approx(50, abs=0.5)
        usage = s.query(UsageEvent).filter_by(job_id=job_id).all()
        assert sum(u.images for u in usage) == 6 and {u.user_id for u in usage} == {admin_id(ctx)}
        assert [ln.message for ln in jobs.get_logs(s, job_id)][-1].startswith("succeeded")


class SlowKind(BatchJobKind):
    """Blocks each batch until the test releases it (cancel between batches)."""

    batch_size = 1
    gate = threading.Event()

    def process_batch(self, ctx, job_id, params, image_ids):
        self.gate.wait(10)
        return [{"image_id": i, "ok": True} for i in image_ids]


class FlakyKind(BatchJobKind):
    """Fails transiently the first two times it sees each batch, then succeeds."""

    batch_size = 2

    def process_batch(self, ctx, job_id, params, image_ids):
        marker = Path(params["dir"]) / f"{image_ids[0]}"
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        if n < params["fail_times"]:
            raise TransientJobError(f"object store hiccup {n}")
        return [{"image_id": i, "ok": True, "payload": {"tries": n + 1}} for i in image_ids]


class BrokenKind(BatchJobKind):
    def process_batch(self, ctx, job_id, params, image_ids):
        raise RuntimeError("model file is corrupt")


@pytest.fixture
def test_kinds():
    reg = get_registry()
    for name, cls in (("slow", SlowKind), ("flaky", FlakyKind), ("broken", BrokenKind)):
        reg.register(jobs.JOB_GROUP, name, cls)
    yield
    for name in ("slow", "flaky", "broken"):
        reg.unregister(jobs.JOB_GROUP, name)


def test_cancel_between_batches(ctx, runner_for, test_kinds):
    add_images(ctx, list(range(0, 60, 10)))
    SlowKind.gate.clear()
    with ctx.session() as s:
        job_id = jobs.create_job(s, "slow", {"collection": "cam1"}, admin_id(ctx)).id
    runner_for(max_jobs=1)
    wait_state(ctx, job_id, ("running",))
    with ctx.session() as s:
        jobs.request_cancel(s, job_id, s.get(jobs.User, admin_id(ctx)))
    SlowKind.gate.set()
    job = wait_state(ctx, job_id, ("cancelled", "succeeded", "failed"))
    assert job["state"] == "cancelled"
    assert job["done"] < 6  # stopped before the end
    assert job["finished_at"] is not None


def test_transient_errors_are_retried(ctx, runner_for, test_kinds, tmp_path,
                                      monkeypatch):
    monkeypatch.setattr("aqualens.processing.tasks.BACKOFF_S", 0.01)
    add_images(ctx, [1, 2, 3, 4])
    with ctx.session() as s:
        job_id = jobs.create_job(s, "flaky", {"collection": "cam1", "dir": str(tmp_path),
                                              "fail_times": 2}, admin_id(ctx)).id
    runner_for()
    job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and job["done"] == 4
    with ctx.session() as s:
        assert {r.payload["tries"] for r in jobs.job_results(s, job_id)} == {3}


def test_job_level_error_fails_job(ctx, runner_for, test_kinds, tmp_path,
                                   monkeypatch):
    monkeypatch.setattr("aqualens.processing.tasks.BACKOFF_S", 0.01)
    add_images(ctx, [1, 2])
    with ctx.session() as s:
        broken = jobs.create_job(s, "broken", {"collection": "cam1"}, admin_id(ctx)).id
        # transient, but more often than every retry allows
        flaky = jobs.create_job(s, "flaky", {"collection": "cam1", "dir": str(tmp_path),
                                             "fail_times": 100}, admin_id(ctx)).id
        missing = jobs.create_job(s, "image-stats", {"collection": "nope"}, admin_id(ctx)).id
    runner_for(batch_retries=1)
    job = wait_state(ctx, broken, ("succeeded", "failed"))
    assert job["state"] == "failed" and "model file is corrupt" in job["error"]
    job = wait_state(ctx, flaky, ("succeeded", "failed"))
    assert job["state"] == "failed" and "object store hiccup" in job["error"]
    job = wait_state(ctx, missing, ("succeeded", "failed"))
    assert job["state"] == "failed" and "no collection 'nope'" in job["error"]


def test_stale_running_job_is_resumed(ctx, runner_for):
    _, ids = add_images(ctx, [5, 6, 7])
    with ctx.session() as s:
        job_id = jobs.create_job(s, "image-stats", {"collection": "cam1"}, admin_id(ctx)).id
        # a runner on this host with a pid that does not exist left it running with 1 result
        jobs.set_state(s, job_id, "running", runner_id="deadhost-not-local:1")
        jobs.record_results(s, job_id, [{"image_id": ids[0], "ok": True, "payload": {"x": 1}}])
    r = Runner(ctx, stale_s=0.0)  # heartbeat age > 0 s: stale at once
    assert r.resume_stale() == [job_id]
    r.stop()
    runner_for()
    job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and job["done"] == 3 and job["attempts"] == 2
    with ctx.session() as s:
        assert s.query(JobResult).filter_by(job_id=job_id).count() == 3
        first = s.query(JobResult).filter_by(job_id=job_id, image_id=ids[0]).one()
        assert first.payload == {"x": 1}  # untouched by the resumed run


def counting_kind(settings, job_id):
    """A function kind (the training shape): reports progress itself, returns outputs."""
    from aqualens.catalog.context import Context
    from aqualens.processing.kinds import JobCancelled

    ctx = Context(settings)
    for epoch in range(3):
        with ctx.session() as s:
            if jobs.is_cancel_requested(s, job_id):
                raise JobCancelled("stopped at epoch boundary")
            jobs.add_progress(s, job_id, done=1)
            jobs.log(s, job_id, f"epoch {epoch}")
    return {"epochs": 3}


def failing_kind(settings, job_id):
    raise ValueError("no labelled images")


def test_function_kinds(ctx, runner_for):
    reg = get_registry()
    reg.register(jobs.JOB_GROUP, "count", counting_kind)
    reg.register(jobs.JOB_GROUP, "fail", failing_kind)
    try:
        with ctx.session() as s:
            ok = jobs.create_job(s, "count", {}, admin_id(ctx), total=3).id
            bad = jobs.create_job(s, "fail", {}, admin_id(ctx)).id
            cancelled = jobs.create_job(s, "count", {}, admin_id(ctx)).id
            s.get(jobs.Job, cancelled).cancel_requested = True  # asked before it ran
        runner_for()
        job = wait_state(ctx, ok, ("succeeded", "failed"))
        assert job["state"] == "succeeded" and job["outputs"] == {"epochs": 3} and job["done"] == 3
        job = wait_state(ctx, bad, ("succeeded", "failed"))
        assert job["state"] == "failed" and "no labelled images" in job["error"]
        assert wait_state(ctx, cancelled, ("succeeded", "failed", "cancelled"))["state"] \
            == "cancelled"
    finally:
        reg.unregister(jobs.JOB_GROUP, "count")
        reg.unregister(jobs.JOB_GROUP, "fail")


def test_a_job_queued_in_this_process_wakes_the_runner(ctx):
    """With a 60 s poll, a job created here still starts at once (jobs.wake_runners)."""
    import time

    _, _ids = add_images(ctx, [10, 20])
    r = Runner(ctx, poll_s=60.0).start()
    try:
        time.sleep(0.2)  # the runner is now waiting for its next poll
        t0 = time.monotonic()
        with ctx.session() as s:
            job_id = jobs.create_job(s, "image-stats", {"collection": "cam1"}, admin_id(ctx)).id
        job = wait_state(ctx, job_id, ("succeeded", "failed"), timeout=30)
        assert job["state"] == "succeeded" and time.monotonic() - t0 < 30
    finally:
        r.stop()
