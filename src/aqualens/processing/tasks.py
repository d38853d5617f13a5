"""Dask task functions. They take a settings dict, a kind name, ids and JSON params — never ORM
objects or sessions — and build what they need once per worker process (contexts, models).

A task (:func:`process_chunk`) computes a chunk of images on a worker (:func:`compute_batch`:
blob reads, decoding, the model) and stores it there (:func:`store_batch`): the kind's side
effects, the (job, image) result rows, the progress counters and one usage event in ONE
transaction. Storing where the results are computed keeps the runner out of the data path: it
only schedules, so a cluster's write rate grows with its workers (PostgreSQL takes their
transactions in parallel; SQLite takes them one at a time, each a few milliseconds per chunk).
Transient failures (a locked SQLite file, an unreachable object store, a dropped database
connection, a concurrent writer of the same results) are retried here with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from aqualens.catalog.context import Context
from aqualens.core.config import Settings, load_settings
from aqualens.core.errors import AquaLensError, StorageError

log = logging.getLogger(__name__)
_contexts: dict[str, Context] = {}
_lock = threading.Lock()
RETRIES = 3
BACKOFF_S = 0.5
WORKER = f"{__import__('socket').gethostname()}:{__import__('os').getpid()}"


class TransientJobError(AquaLensError):
    """A failure worth retrying (raise it from a kind for errors you know to be temporary)."""

    code = "transient"


def settings_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON for a task."""
    return settings.model_dump(mode="json")


def worker_context(settings: dict[str, Any] | Settings) -> Context:
    """A Context per distinct settings, cached in this worker process."""
    import json

    data = settings if isinstance(settings, dict) else settings_dict(settings)
    key = json.dumps(data, sort_keys=True, default=str)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = Context(settings if isinstance(settings, Settings) else load_settings(**data))
            _contexts[key] = ctx
        return ctx


def is_transient(exc: BaseException) -> bool:
    """Errors that may go away when tried again."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, (TransientJobError, StorageError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def with_retries(fn, *, retries: int | None = None, backoff_s: float | None = None,
                 what: str = "task"):
    """Call ``fn()``; retry transient errors ``retries`` times, waiting backoff * 2**n."""
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            wait = backoff_s * (2 ** attempt)
            log.warning("%s: transient error (%s), retry %d in %.1fs", what, exc, attempt + 1,
                        wait)
            time.sleep(wait)
            attempt += 1


def process_chunk(settings: dict[str, Any], kind_name: str, job_id: str,
                  params: dict[str, Any], image_ids: list[int], owner_id: int,
                  service_id: int | None = None) -> dict[str, Any]:
    """The Dask task of a batch-kind job: compute ``image_ids`` and store their results.

    Returns ``{"done", "failed", "skipped", "worker", "compute_s", "write_s"}``.
    """
    ctx = worker_context(settings)
    out = compute_batch(ctx, kind_name, job_id, params, image_ids)
    out.update(store_batch(ctx, kind_name, job_id, params, out.pop("results"), owner_id,
                           service_id))
    out["skipped"] = len(image_ids) - out["done"] - out["failed"]  # stored before this task
    return out


def compute_batch(ctx: Context, kind_name: str, job_id: str, params: dict[str, Any],
                  image_ids: list[int]) -> dict[str, Any]:
    """Run the kind's ``process_batch`` on those of ``image_ids`` that have no result yet (a
    retried or resumed chunk is not computed again); nothing is stored here.

    Returns ``{"results": [one dict per image computed, in order], "worker", "compute_s"}``.
    """
    from aqualens.processing import jobs
    from aqualens.processing.kinds import resolve_kind

    kind = resolve_kind(kind_name)

    def attempt() -> dict[str, Any]:
        with ctx.session() as s:
            already = jobs.done_image_ids(s, job_id, image_ids)
            pending = [i for i in image_ids if i not in already]
            if pending:
                kind.cleanup(s, job_id, pending)  # side effects a crashed attempt left
        t0 = time.perf_counter()
        results = kind.process_batch(ctx, job_id, params, pending) if pending else []
        by_id = {int(r["image_id"]): r for r in results}
        # An image the kind forgot is a failure with a reason, not a silent gap.
        results = [by_id.get(i) or {"image_id": i, "ok": False,
                                    "error": "the job kind returned no result for this image"}
                   for i in pending]
        return {"results": results, "worker": WORKER, "compute_s": time.perf_counter() - t0}

    return with_retries(attempt, what=f"job {job_id} batch of {len(image_ids)}")


def store_batch(ctx: Context, kind_name: str, job_id: str, params: dict[str, Any],
                results: list[dict[str, Any]], owner_id: int,
                service_id: int | None = None) -> dict[str, Any]:
    """Store a computed batch in ONE transaction: the (job, image) result rows, the kind's side
    effects, the progress counters and one usage event. Returns ``{"done", "failed",
    "skipped", "write_s"}``.

    Result rows go first and only images whose row THIS call inserted get side effects, so a
    batch stored twice (a retry, a resumed job, two runners on one job) is stored once.
    """
    from aqualens.catalog.tables import UsageEvent
    from aqualens.processing import jobs
    from aqualens.processing.kinds import resolve_kind

    kind = resolve_kind(kind_name)

    def attempt() -> dict[str, Any]:
        t0 = time.perf_counter()
        with ctx.session() as s:
            inserted = set(jobs.insert_results(s, job_id, results))
            fresh = [r for r in results if int(r["image_id"]) in inserted]
            ok = [r for r in fresh if r.get("ok", True)]
            kind.write(s, job_id, params, ok)
            done, failed = len(ok), len(fresh) - len(ok)
            jobs.add_progress(s, job_id, done=done, failed=failed)
            if done:
                s.add(UsageEvent(kind=kind.usage_kind, user_id=owner_id, images=done,
                                 model_id=kind.usage_model_id(params), service_id=service_id,
                                 job_id=job_id, details={"kind": kind_name}))
        return {"done": done, "failed": failed, "skipped": len(results) - len(fresh),
                "write_s": time.perf_counter() - t0}

    return with_retries(attempt, what=f"job {job_id}: storing a batch of {len(results)}")


def run_function(settings: dict[str, Any], kind_name: str, job_id: str) -> dict[str, Any]:
    """Run a function kind (``run(settings, job_id) -> outputs``) as one task."""
    from aqualens.processing.kinds import resolve_kind

    ctx = worker_context(settings)
    fn = resolve_kind(kind_name)
    return fn(ctx.settings, job_id) or {}
