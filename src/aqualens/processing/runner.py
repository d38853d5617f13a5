"""The runner: claims queued jobs and executes them on Dask, in batches.

One runner per instance is normal; several may run (claims are atomic UPDATEs). A runner:

- on start, and every ``stale_s / 2`` seconds, re-queues jobs left ``running`` by a dead runner
  (heartbeat older than ``stale_s``, or a runner process on this host that no longer exists);
- claims the oldest queued job while fewer than ``max_jobs`` run, and runs each in a thread:
  batch kinds are split into chunks of images (:func:`~aqualens.processing.kinds.split_tasks`),
  one Dask task each, with a bounded window in flight (so a 200,000-image job neither floods
  the scheduler nor holds every future); each task computes AND stores its chunk on its worker
  (:func:`~aqualens.processing.tasks.process_chunk`), so the runner only schedules and never
  becomes the cluster's bottleneck; function kinds are one Dask task;
- heartbeats its jobs every ``heartbeat_s``; honours cancel requests between batches;
- retries a failed batch task (a worker lost, a transient error that outlived the in-task
  retries) ``batch_retries`` times with backoff, then fails the job: a job fails only on
  job-level errors; per-image failures are results.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

from aqualens.catalog.context import Context
from aqualens.processing import jobs
from aqualens.processing.kinds import (JobCancelled, is_batch_kind, resolve_kind,
                                       split_tasks)
from aqualens.processing.tasks import process_chunk, run_function, settings_dict

log = logging.getLogger(__name__)


class Runner:
    """Claims and executes jobs; ``start()`` runs it in background threads."""

    def __init__(self, ctx: Context, *, client: Any = None, max_jobs: int = 2,
                 poll_s: float = 0.5, stale_s: float = 60.0, heartbeat_s: float = 5.0,
                 batch_retries: int = 2, retry_backoff_s: float = 1.0,
                 runner_id: str | None = None, only: set[str] | None = None) -> None:
        self.ctx = ctx
        self.runner_id = runner_id or jobs.runner_identity()
        self.max_jobs = max_jobs
        self.poll_s = poll_s
        self.stale_s = stale_s
        self.heartbeat_s = heartbeat_s
        self.batch_retries = batch_retries
        self.retry_backoff_s = retry_backoff_s
        self._client = client
        self._owns_client = client is None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by jobs.wake_runners: a job was queued here
        self._active: dict[str, threading.Thread] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_resume = 0.0
        # Claim only these jobs (a CLI command running its own job on the embedded tier).
        self.only = set(only) if only else None

    # ----------------------------------------------------------------- lifecycle
    @property
    def client(self) -> Any:
        if self._client is None:
            from aqualens.processing.cluster import open_client

            self._client = open_client(self.ctx.settings)
        return self._client

    def start(self) -> Runner:
        """Resume orphaned jobs, then poll for work in background threads."""
        jobs._wakeups.add(self._wake)
        self.resume_stale()
        for target, name in ((self._loop, "aqualens-runner"),
                             (self._beat, "aqualens-heartbeat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait for running job threads (they stop at a batch boundary)."""
        self._stop.set()
        self._wake.set()
        jobs._wakeups.discard(self._wake)
        for t in self._threads + list(self._active.values()):
            t.join(timeout)
        if self._owns_client and self._client is not None:
            from aqualens.processing.cluster import close_client

            close_client(self._client)
            self._client = None

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_until_idle(self, timeout: float = 300.0) -> None:
        """Run queued jobs in this thread until none is queued or running here (tests, CLI)."""
        self.resume_stale()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = self._claim_and_dispatch()
            with self._lock:
                busy = bool(self._active)
            if not claimed and not busy:
                return
            time.sleep(0.05)
        raise TimeoutError(f"jobs still running after {timeout}s")

    # ----------------------------------------------------------------- loops
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_resume > self.stale_s / 2:
                    self.resume_stale()
                if not self._claim_and_dispatch():
                    # Until the next poll, or at once when this process queues a job.
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
            except Exception:
                log.exception("runner loop error")
                self._stop.wait(max(self.poll_s, 1.0))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                active = list(self._active)
            for job_id in active:
                try:
                    with self.ctx.session() as s:
                        if not jobs.heartbeat(s, job_id, self.runner_id):
                            self._lost.add(job_id)
                except Exception:
                    log.exception("heartbeat failed for job %s", job_id)

    def resume_stale(self) -> list[str]:
        """Re-queue jobs whose runner died; returns their ids."""
        self._last_resume = time.monotonic()
        resumed = []
        with self.ctx.session() as s:
            for job in jobs.stale_jobs(s, self.stale_s, runner_id=self.runner_id):
                try:
                    jobs.set_state(s, job.id, "queued")
                except Exception:  # noqa: BLE001 - another runner was faster
                    continue
                jobs.log(s, job.id, f"runner {job.runner_id} is gone; job re-queued to resume "
                                    f"({job.done + job.failed}/{job.total} already done)",
                         level="warning")
                resumed.append(job.id)
        return resumed

    def _claim_and_dispatch(self) -> bool:
        from sqlalchemy import select

        from aqualens.catalog.tables import Job

        with self._lock:
            if len(self._active) >= self.max_jobs:
                return False
        with self.ctx.session() as s:
            query = select(Job.id).where(Job.state == "queued")
            if self.only is not None:
                query = query.where(Job.id.in_(self.only))
            candidates = list(s.scalars(query.order_by(Job.created_at, Job.id).limit(5)))
            job_id = next((c for c in candidates if jobs.claim_job(s, c, self.runner_id)), None)
            if job_id is not None:
                jobs.log(s, job_id, f"claimed by runner {self.runner_id}")
        if job_id is None:
            return False
        t = threading.Thread(target=self.execute, args=(job_id,), name=f"job-{job_id[:8]}",
                             daemon=True)
        with self._lock:
            self._active[job_id] = t
        t.start()
        return True

    # ----------------------------------------------------------------- one job
    def execute(self, job_id: str) -> None:
        """Run a claimed job to a terminal state (or leave it for another runner if lost)."""
        try:
            with self.ctx.session() as s:
                job = s.get(jobs.Job, job_id)
                s.expunge(job)
            kind = resolve_kind(job.kind)
            if is_batch_kind(kind):
                outputs = self._run_batches(job, kind)
            else:
                outputs = self._run_function(job)
            if outputs is None:
                return  # lost ownership or stopped: someone else carries on
            with self.ctx.session() as s:
                if jobs.is_cancel_requested(s, job_id):
                    raise JobCancelled("cancelled")
                jobs.set_state(s, job_id, "succeeded", outputs=outputs)
                j = s.get(jobs.Job, job_id)
                jobs.log(s, job_id, f"succeeded: {j.done} done, {j.failed} failed")
        except JobCancelled:
            self._finish(job_id, "cancelled", None, "cancelled between batches")
        except Exception as exc:
            if self._stop.is_set():  # our own shutdown broke it: hand it back, don't fail it
                self._finish(job_id, "queued", None, "runner stopping; job re-queued")
                return
            log.exception("job %s failed", job_id)
            self._finish(job_id, "failed", f"{type(exc).__name__}: {exc}",
                         "failed: " + "".join(traceback.format_exception_only(exc)).strip(),
                         level="error")
        finally:
            with self._lock:
                self._active.pop(job_id, None)
            self._lost.discard(job_id)
            self._wake.set()  # a slot is free: claim the next queued job now

    def _finish(self, job_id: str, state: str, error: str | None, message: str,
                level: str = "info") -> None:
        try:
            with self.ctx.session() as s:
                jobs.set_state(s, job_id, state, error=error if state != "queued" else None)
                jobs.log(s, job_id, message, level=level)
        except Exception:
            log.exception("could not mark job %s %s", job_id, state)

    def _should_stop(self, job_id: str) -> str | None:
        if job_id in self._lost:
            return "lost"
        if self._stop.is_set():
            return "stopping"
        with self.ctx.session() as s:
            if jobs.is_cancel_requested(s, job_id):
                return "cancel"
        return None

    def _run_batches(self, job: jobs.Job, kind: Any) -> dict | None:
        from distributed import as_completed

        from aqualens.processing.cluster import total_threads

        ids = kind.plan(self.ctx, job)
        with self.ctx.session() as s:
            jobs.set_total(s, job.id, len(ids))
            done = jobs.done_image_ids(s, job.id)
            pending = [i for i in ids if i not in done]
        client = self.client
        batches = split_tasks(kind, job.params, pending, total_threads(client))
        with self.ctx.session() as s:
            jobs.log(s, job.id, f"{len(ids)} images, {len(ids) - len(pending)} already done; "
                                f"{len(batches)} tasks of up to "
                                f"{max(map(len, batches), default=0)}")
        sdict = settings_dict(self.ctx.settings)
        window = max(2, 2 * total_threads(client))
        queue = list(enumerate(batches))
        attempts: dict[int, int] = {}
        fut_batch: dict[Any, int] = {}
        workers: dict[str, int] = {}  # tasks per worker process, reported in the outputs
        seconds: dict[str, float] = {}  # worker time computing vs storing results

        def submit(index: int) -> Any:
            n = attempts.get(index, 0)
            fut = client.submit(process_chunk, sdict, job.kind, job.id, job.params,
                                batches[index], job.owner_id, job.service_id, pure=False,
                                key=f"aqualens-batch-{job.id}-{index}-{n}")
            fut_batch[fut] = index
            return fut

        ac = as_completed([submit(i) for i, _ in queue[:window]], loop=client.loop)
        queue = queue[window:]
        stop_reason = None
        for fut in ac:
            index = fut_batch.pop(fut)
            try:
                summary = fut.result()
            except Exception as exc:
                n = attempts.get(index, 0) + 1
                attempts[index] = n
                if n > self.batch_retries:
                    for other in fut_batch:
                        other.cancel()
                    raise
                with self.ctx.session() as s:
                    jobs.log(s, job.id, f"batch {index} failed ({type(exc).__name__}: {exc}); "
                                        f"retry {n}/{self.batch_retries}", level="warning")
                time.sleep(self.retry_backoff_s * 2 ** (n - 1))
                ac.add(submit(index))
                continue
            workers[summary.get("worker", "?")] = workers.get(summary.get("worker", "?"), 0) + 1
            for key in ("compute_s", "write_s"):
                seconds[key] = seconds.get(key, 0.0) + summary.get(key, 0.0)
            stop_reason = self._should_stop(job.id)
            if stop_reason:
                for other in fut_batch:
                    other.cancel()
                break
            if queue:
                i, _ = queue.pop(0)
                ac.add(submit(i))
        if stop_reason == "cancel":
            raise JobCancelled("cancelled")
        if stop_reason in ("lost", "stopping"):
            if stop_reason == "stopping":  # hand it back so the next start resumes it
                with self.ctx.session() as s:
                    jobs.set_state(s, job.id, "queued")
                    jobs.log(s, job.id, "runner stopping; job re-queued")
            return None
        with self.ctx.session() as s:
            fresh = s.get(jobs.Job, job.id)
            s.expunge(fresh)
        outputs = dict(kind.finish(self.ctx, fresh) or {})
        outputs.setdefault("batches_per_worker", workers)
        outputs.setdefault("worker_seconds", {k: round(v, 3) for k, v in seconds.items()})
        return outputs

    def _run_function(self, job: jobs.Job) -> dict | None:
        fut = self.client.submit(run_function, settings_dict(self.ctx.settings), job.kind,
                                 job.id, pure=False, key=f"aqualens-job-{job.id}-{job.attempts}")
        while True:
            try:
                return fut.result(timeout=self.poll_s * 4)
            except TimeoutError:
                if job.id in self._lost:
                    fut.cancel()
                    return None
                if self._stop.is_set():  # shutting down: re-queue; the kind resumes later
                    fut.cancel()
                    with self.ctx.session() as s:
                        jobs.set_state(s, job.id, "queued")
                        jobs.log(s, job.id, "runner stopping; job re-queued")
                    return None


def run_job_now(ctx: Context, job_id: str, **runner_kwargs: Any) -> None:
    """Claim and execute one queued job in this thread (small synchronous runs, tests)."""
    runner = Runner(ctx, **runner_kwargs)
    try:
        with ctx.session() as s:
            if not jobs.claim_job(s, job_id, runner.runner_id):
                raise jobs.JobError(f"job {job_id} is not queued", field="job")
        runner.execute(job_id)
    finally:
        runner.stop()
