"""Durable jobs: the job row is the only source of truth about work.

State machine (enforced here, every change is one conditional UPDATE so concurrent runners,
workers and API calls cannot race each other into an impossible state)::

    queued ──► running ──► succeeded
      │  ▲        │  ├───► failed
      │  └────────┘  └───► cancelled
      └──────────────────► cancelled
    failed / cancelled ──► queued        (explicit retry: ``requeue``)

``running → queued`` is the resume path: a runner that finds a job whose runner died puts it back.
Per-image outcomes are :class:`JobResult` rows unique on (job, image)
(:mod:`aqualens.processing.results`); :func:`record_results` inserts them with "on conflict do
nothing" and counts progress only for rows it really inserted, so a retried batch neither
duplicates results nor double-counts progress.

Job kinds are plugins (entry point group ``aqualens.jobs``); their interface is documented in
:mod:`aqualens.processing.kinds`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aqualens.catalog.tables import JOB_STATES, Job, JobLog, User, utcnow
from aqualens.catalog.users import check_write, visible
from aqualens.core.errors import JobError, NotFound, ValidationError
from aqualens.processing.results import (count_results, done_image_ids, insert_results,
                                         job_results)

TERMINAL = ("succeeded", "failed", "cancelled")
#: Allowed transitions: from-state → set of to-states.
TRANSITIONS: dict[str, set[str]] = {
    "queued": {"running", "cancelled"},
    "running": {"succeeded", "failed", "cancelled", "queued"},
    "succeeded": set(),
    "failed": {"queued"},
    "cancelled": {"queued"},
}
LOG_LEVELS = ("debug", "info", "warning", "error")
JOB_GROUP = "aqualens.jobs"


def runner_identity() -> str:
    """``host:pid``, stored on jobs a runner claims (lets a restarted runner spot dead owners)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_kind(kind: str) -> str:
    """Raise ValidationError unless ``kind`` is an installed job kind."""
    from aqualens.core.plugins import get_registry

    names = get_registry().names(JOB_GROUP)
    if kind not in names:
        raise ValidationError(f"unknown job kind {kind!r}", field="kind",
                              valid=", ".join(names) or "none installed")
    return kind


def create_job(session: Session, kind: str, params: dict, owner_id: int, total: int = 0, *,
               service_id: int | None = None, visibility: str = "private") -> Job:
    """Create a queued job. ``params`` must be JSON-serialisable (it travels to workers)."""
    check_kind(kind)
    if not isinstance(params, dict):
        raise ValidationError("job parameters must be an object", field="params")
    try:
        params = json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"job parameters are not JSON-serialisable: {exc}",
                              field="params") from None
    if total < 0:
        raise ValidationError("total must be >= 0", field="total")
    from aqualens.processing.kinds import resolve_kind

    validate = getattr(resolve_kind(kind), "validate", None)
    if callable(validate):  # the kind checks and normalises its own parameters
        params = validate(session, params, owner_id)
    job = Job(id=str(uuid.uuid4()), kind=kind, params=params, owner_id=owner_id, total=total,
              state="queued", service_id=service_id, visibility=visibility, outputs={})
    session.add(job)
    session.flush()
    wake_runners_on_commit(session)
    return job


# Runners of this process wait on these between polls: a job created here starts at once
# instead of at the next poll (``aqualens serve`` runs the API and a runner in one process).
_wakeups: set[threading.Event] = set()


def wake_runners_on_commit(session: Session) -> None:
    """Wake this process's runners once ``session`` commits (the new row is visible then)."""
    from sqlalchemy import event

    event.listen(session, "after_commit", lambda _s: wake_runners(), once=True)


def wake_runners() -> None:
    """Wake every runner of this process now."""
    for wake in list(_wakeups):
        wake.set()


def _load(session: Session, job_id: str) -> Job:
    job = session.get(Job, str(job_id))
    if job is None:
        raise NotFound(f"no job {job_id!r}", field="job")
    return job


def get_job(session: Session, job_id: str, user: User | None) -> Job:
    """The job ``user`` may see (own, public, or any for admins); NotFound otherwise."""
    job = session.scalar(select(Job).where(Job.id == str(job_id), visible(Job, user)))
    if job is None:
        raise NotFound(f"no job {job_id!r}", field="job")
    return job


def list_jobs(session: Session, user: User | None, *, state: str | None = None,
              kind: str | None = None, service_id: int | None = None,
              since: datetime | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
    """Jobs visible to ``user``, newest first, filtered by state / kind / service / time."""
    if state is not None and state not in JOB_STATES:
        raise ValidationError(f"unknown job state {state!r}", field="state",
                              valid=", ".join(JOB_STATES))
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1..1000", field="limit")
    query = select(Job).where(visible(Job, user))
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    if service_id is not None:
        query = query.where(Job.service_id == service_id)
    if since is not None:
        query = query.where(Job.created_at >= since)
    query = query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(max(offset, 0))
    return list(session.scalars(query))


def set_state(session: Session, job_id: str, state: str, error: str | None = None, *,
              outputs: dict | None = None, runner_id: str | None = None) -> Job:
    """Move a job to ``state``; raises JobError for a transition the state machine forbids.

    Sets the timings: ``started_at`` (and ``attempts += 1``) on running, ``finished_at`` on a
    terminal state; clears the runner and the cancel flag when re-queued.
    """
    if state not in JOB_STATES:
        raise ValidationError(f"unknown job state {state!r}", field="state",
                              valid=", ".join(JOB_STATES))
    job = _load(session, job_id)
    allowed_from = [s for s, targets in TRANSITIONS.items() if state in targets]
    now = utcnow()
    values: dict[str, Any] = {"state": state}
    if state == "running":
        values.update(started_at=now, heartbeat_at=now, attempts=Job.attempts + 1,
                      runner_id=runner_id or runner_identity(), finished_at=None, error=None)
    elif state in TERMINAL:
        values.update(finished_at=now, error=error)
    elif state == "queued":
        values.update(runner_id=None, cancel_requested=False, finished_at=None, error=None)
    if outputs is not None:
        values["outputs"] = outputs
    result = session.execute(update(Job).where(Job.id == job.id, Job.state.in_(allowed_from))
                             .values(**values).execution_options(synchronize_session=False))
    session.refresh(job)
    if result.rowcount != 1:
        raise JobError(f"job {job.id} cannot go from {job.state} to {state}", field="state",
                       valid=", ".join(sorted(TRANSITIONS[job.state])) or "nothing (finished)")
    return job


def claim_job(session: Session, job_id: str, runner_id: str) -> bool:
    """Atomically take a queued job for ``runner_id``; False when another runner was faster."""
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == str(job_id), Job.state == "queued")
        .values(state="running", runner_id=runner_id, started_at=now, heartbeat_at=now,
                attempts=Job.attempts + 1, finished_at=None, error=None)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def heartbeat(session: Session, job_id: str, runner_id: str) -> bool:
    """Refresh the heartbeat; False when the job is no longer ours (re-queued, finished)."""
    result = session.execute(
        update(Job).where(Job.id == str(job_id), Job.runner_id == runner_id,
                          Job.state == "running")
        .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
    return result.rowcount == 1


def requeue(session: Session, job_id: str, user: User | None = None) -> Job:
    """Put a running (orphaned), failed or cancelled job back in the queue.

    Results already recorded are kept: the job carries on where it stopped.
    """
    job = _load(session, job_id)
    if user is not None:
        check_write(job, user, "job")
    return set_state(session, job.id, "queued")


def stale_jobs(session: Session, max_age_s: float, runner_id: str | None = None) -> list[Job]:
    """Running jobs whose runner is gone: a heartbeat older than ``max_age_s``, or a runner on
    this host whose process no longer exists."""
    cutoff = utcnow() - timedelta(seconds=max_age_s)
    host = socket.gethostname()
    out = []
    for job in session.scalars(select(Job).where(Job.state == "running")):
        if runner_id is not None and job.runner_id == runner_id:
            continue
        beat = job.heartbeat_at
        if beat is not None and beat.tzinfo is None:  # SQLite returns naive UTC

            beat = beat.replace(tzinfo=UTC)
        if beat is None or beat < cutoff or _dead_local_runner(job.runner_id, host):
            out.append(job)
    return out


def _dead_local_runner(runner_id: str | None, host: str) -> bool:
    if not runner_id or ":" not in runner_id:
        return False
    rhost, _, pid = runner_id.rpartition(":")
    if rhost != host or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False


def add_progress(session: Session, job_id: str, done: int = 0, failed: int = 0) -> None:
    """Add to the done / failed counters atomically (no read-modify-write)."""
    if done or failed:
        session.execute(update(Job).where(Job.id == str(job_id))
                        .values(done=Job.done + done, failed=Job.failed + failed)
                        .execution_options(synchronize_session=False))


def set_total(session: Session, job_id: str, total: int) -> None:
    """Set how many items the job will process (known once the runner planned it)."""
    session.execute(update(Job).where(Job.id == str(job_id)).values(total=total)
                    .execution_options(synchronize_session=False))


def log(session: Session, job_id: str, message: str, level: str = "info") -> None:
    """Append a log line to the job."""
    if level not in LOG_LEVELS:
        raise ValidationError(f"unknown log level {level!r}", field="level",
                              valid=", ".join(LOG_LEVELS))
    session.add(JobLog(job_id=str(job_id), level=level, message=str(message)[:10000]))
    session.flush()


def get_logs(session: Session, job_id: str, *, after_id: int = 0, limit: int = 1000
             ) -> list[JobLog]:
    """Log lines of a job in order; ``after_id`` pages (tail -f)."""
    return list(session.scalars(select(JobLog).where(JobLog.job_id == str(job_id),
                                                     JobLog.id > after_id)
                                .order_by(JobLog.id).limit(limit)))


def request_cancel(session: Session, job_id: str, user: User | None) -> Job:
    """Cancel a job: a queued one at once, a running one at its next batch boundary.

    Raises JobError when the job has already finished.
    """
    job = get_job(session, job_id, user)
    check_write(job, user, "job")
    if job.state in TERMINAL:
        raise JobError(f"job {job.id} is already {job.state}", field="state",
                       valid="a queued or running job")
    if job.state == "queued":
        result = session.execute(update(Job).where(Job.id == job.id, Job.state == "queued")
                                 .values(state="cancelled", finished_at=utcnow(),
                                         cancel_requested=True)
                                 .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            log(session, job.id, f"cancelled by {user.name if user else 'system'}")
            session.refresh(job)
            return job
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True)
                    .execution_options(synchronize_session=False))
    log(session, job.id, f"cancel requested by {user.name if user else 'system'}")
    session.refresh(job)
    return job


def is_cancel_requested(session: Session, job_id: str) -> bool:
    """True once someone asked to cancel the job."""
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == str(job_id))))


def record_results(session: Session, job_id: str, results: Iterable[dict]) -> tuple[int, int]:
    """Insert per-image results idempotently and count progress for the new rows only.

    Returns ``(done, failed)`` newly counted.
    """
    results = list(results)
    inserted = set(insert_results(session, job_id, results))
    ok = {int(r["image_id"]) for r in results if r.get("ok", True)}
    done = len(inserted & ok)
    failed = len(inserted - ok)
    add_progress(session, job_id, done=done, failed=failed)
    return done, failed


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_to_dict(job: Job) -> dict[str, Any]:
    """The JSON shape of a job (API and CLI)."""
    elapsed = None
    if job.started_at is not None:
        end = job.finished_at or utcnow()
        start = job.started_at
        if start.tzinfo is None and end.tzinfo is not None:
            end = end.replace(tzinfo=None)
        elif start.tzinfo is not None and end.tzinfo is None:
            start = start.replace(tzinfo=None)
        elapsed = max((end - start).total_seconds(), 0.0)
    processed = job.done + job.failed
    rate = processed / elapsed if elapsed else None
    eta = ((job.total - processed) / rate if rate and job.total > processed
           and job.state == "running" else None)
    return {"id": job.id, "kind": job.kind, "state": job.state, "params": job.params,
            "owner_id": job.owner_id, "service_id": job.service_id, "done": job.done,
            "failed": job.failed, "total": job.total, "outputs": job.outputs or {},
            "error": job.error, "attempts": job.attempts,
            "cancel_requested": job.cancel_requested, "runner_id": job.runner_id,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at), "heartbeat_at": _iso(job.heartbeat_at),
            "elapsed_s": elapsed, "rate_per_s": rate, "eta_s": eta}


__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "add_progress",
    "check_kind",
    "claim_job",
    "count_results",
    "create_job",
    "done_image_ids",
    "get_job",
    "get_logs",
    "heartbeat",
    "insert_results",
    "is_cancel_requested",
    "job_results",
    "job_to_dict",
    "list_jobs",
    "log",
    "record_results",
    "request_cancel",
    "requeue",
    "runner_identity",
    "set_state",
    "set_total",
    "stale_jobs",
]
