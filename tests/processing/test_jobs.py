"""The job state machine, progress, idempotent results, cancel and logs."""

from __future__ import annotations

import pytest

from aqualens.catalog.tables import JobResult, User
from aqualens.core.errors import JobError, NotFound, PermissionDenied, ValidationError
from aqualens.processing import jobs

from .helpers import add_images, admin_id


def _job(ctx, **params):
    with ctx.session() as s:
        return jobs.create_job(s, "image-stats", params or {"collection": "cam1"},
                               admin_id(ctx)).id


@pytest.mark.parametrize("path", [
    ["running", "succeeded"], ["running", "failed"], ["running", "cancelled"],
    ["cancelled"], ["running", "queued", "running", "succeeded"],
    ["running", "failed", "queued"], ["running", "cancelled", "queued"],
])
def test_valid_transitions(ctx, path):
    job_id = _job(ctx)
    with ctx.session() as s:
        for state in path:
            job = jobs.set_state(s, job_id, state, error="boom" if state == "failed" else None)
            assert job.state == state
        job = jobs.get_job(s, job_id, s.get(User, admin_id(ctx)))
        assert job.attempts == path.count("running")
        if path[-1] in jobs.TERMINAL:
            assert job.finished_at is not None
        if path[-1] == "failed":
            assert job.error == "boom"


@pytest.mark.parametrize("path,bad", [
    ([], "succeeded"), ([], "failed"), ([], "queued"),
    (["running", "succeeded"], "running"), (["running", "succeeded"], "queued"),
    (["running", "succeeded"], "failed"), (["cancelled"], "running"),
    (["running", "failed"], "succeeded"),
])
def test_invalid_transitions(ctx, path, bad):
    job_id = _job(ctx)
    with ctx.session() as s:
        for state in path:
            jobs.set_state(s, job_id, state)
        with pytest.raises(JobError) as err:
            jobs.set_state(s, job_id, bad)
        assert f"to {bad}" in str(err.value)
        assert err.value.field == "state"


def test_unknown_state_kind_and_params(ctx):
    job_id = _job(ctx)
    with ctx.session() as s:
        with pytest.raises(ValidationError, match="unknown job state 'done'"):
            jobs.set_state(s, job_id, "done")
        with pytest.raises(ValidationError, match="unknown job kind 'nope'") as err:
            jobs.create_job(s, "nope", {}, admin_id(ctx))
        assert "image-stats" in err.value.valid
        with pytest.raises(ValidationError, match="not JSON-serialisable"):
            jobs.create_job(s, "image-stats", {"x": object()}, admin_id(ctx))
        with pytest.raises(NotFound):
            jobs.set_state(s, "no-such-job", "running")


def test_results_are_idempotent_and_counted_once(ctx):
    _, ids = add_images(ctx, [10, 20, 30])
    job_id = _job(ctx)
    with ctx.session() as s:
        results = [{"image_id": ids[0], "ok": True, "payload": {"a": 1}},
                   {"image_id": ids[1], "ok": False, "error": "bad pixels"}]
        assert jobs.record_results(s, job_id, results) == (1, 1)
        assert jobs.record_results(s, job_id, results + results) == (0, 0)
        assert jobs.record_results(s, job_id, [{"image_id": ids[2], "ok": True}]) == (1, 0)
        job = s.get(jobs.Job, job_id)
        assert (job.done, job.failed) == (2, 1)
        assert s.query(JobResult).filter_by(job_id=job_id).count() == 3
        failed = jobs.job_results(s, job_id, ok=False)
        assert [(r.image_id, r.error) for r in failed] == [(ids[1], "bad pixels")]


def test_cancel_and_logs(ctx):
    queued = _job(ctx)
    running = _job(ctx)
    with ctx.session() as s:
        admin = s.get(User, admin_id(ctx))
        other = User(name="other")
        s.add(other)
        s.flush()
        with pytest.raises(NotFound):  # private to the admin
            jobs.request_cancel(s, queued, other)
        assert jobs.request_cancel(s, queued, admin).state == "cancelled"
        with pytest.raises(JobError, match="already cancelled"):
            jobs.request_cancel(s, queued, admin)
        jobs.set_state(s, running, "running")
        job = jobs.request_cancel(s, running, admin)
        assert job.state == "running" and job.cancel_requested
        assert jobs.is_cancel_requested(s, running)
        jobs.log(s, running, "hello", level="warning")
        with pytest.raises(ValidationError, match="unknown log level"):
            jobs.log(s, running, "x", level="loud")
        lines = jobs.get_logs(s, running)
        assert [ln.message for ln in lines][-1] == "hello"
        assert jobs.get_logs(s, running, after_id=lines[-1].id) == []
        s.get(jobs.Job, running).visibility = "public"
        s.flush()
        with pytest.raises(PermissionDenied):
            jobs.request_cancel(s, running, other)


def test_list_jobs_filters(ctx):
    a, b = _job(ctx), _job(ctx)
    with ctx.session() as s:
        admin = s.get(User, admin_id(ctx))
        jobs.set_state(s, a, "running")
        assert [j.id for j in jobs.list_jobs(s, admin, state="running")] == [a]
        assert {j.id for j in jobs.list_jobs(s, admin, kind="image-stats")} == {a, b}
        assert jobs.list_jobs(s, None) == []
        with pytest.raises(ValidationError, match="unknown job state"):
            jobs.list_jobs(s, admin, state="sleeping")
