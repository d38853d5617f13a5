"""The job-kind interface. A kind is a plugin in entry point group ``aqualens.jobs``
(entry point name = the kind, e.g. ``predict = "aqualens.processing.predict:PredictKind"``).

Two forms are accepted; the runner (:mod:`aqualens.processing.runner`) tells them apart.

1. **Batch kind** — a subclass of :class:`BatchJobKind` (the class or an instance). Work is a list
   of catalogue image ids, sent to Dask workers in tasks of up to ``chunk_size`` images
   (:func:`split_tasks`; kinds whose work is a model call process a task's images in batches of
   ``batch_size``, so memory stays bounded by the batch while each task's round trip, and each
   transaction storing its results, is paid once per chunk):

   - ``plan(ctx, job) -> list[int]`` runs in the runner: which images the job covers. It is
     called again when a job resumes; images that already have a result are skipped.
   - ``process_batch(ctx, job_id, params, image_ids) -> list[dict]`` runs ON A WORKER. It gets
     ids and plain JSON params only, builds what it needs (cached per worker process: models stay
     warm), and returns one dict per image: ``{"image_id", "ok", "payload", "error"}``. A failure
     of one image is a result with ``ok=False`` and its reason, never an exception; an exception
     is a batch-level error (retried with backoff when transient, else the job fails).
   - ``write(session, job_id, params, results)`` (optional) stores side effects (annotations)
     in the SAME transaction as the (job, image) result rows, so a batch is stored exactly once.
   - ``cleanup(session, job_id, image_ids)`` (optional) removes side effects a crashed attempt
     left for images that have no result yet (for kinds whose writes happen in process_batch).
   - ``finish(ctx, job) -> dict`` (optional) runs in the runner after the last batch: outputs
     (summary files, counts) stored on ``job.outputs``.
   - ``usage_kind`` / ``usage_model_id(params)``: the usage event written per task.

2. **Function kind** — any other callable ``run(settings: Settings, job_id: str) -> dict``. It is
   submitted as ONE Dask task (training uses this). It reports through
   :mod:`aqualens.processing.jobs` (``add_progress``, ``log``), checks ``is_cancel_requested``
   between epochs and raises :class:`JobCancelled` to stop, and resumes from its own
   checkpoints when re-run after a crash. Its return value becomes ``job.outputs``.

Tasks never receive ORM objects: only ids, JSON params and a settings dict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from aqualens.core.errors import JobError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from aqualens.catalog.context import Context
    from aqualens.catalog.tables import Job


class JobCancelled(JobError):
    """Raised by a kind that noticed a cancel request; the runner marks the job cancelled."""


class BatchJobKind(ABC):
    """Base class of kinds that process catalogue images in batches (see module docstring)."""

    #: Images per model call (or per task when ``chunk_size`` is None).
    batch_size: int = 32
    #: Images per Dask task (a multiple of the batch; None = one batch per task). The
    #: per-task costs (task round trip, result transfer, the storing transaction) are paid once
    #: per chunk, not once per batch.
    chunk_size: int | None = None
    #: ``UsageEvent.kind`` written per processed task.
    usage_kind: str = "process"

    def validate(self, session: Session, params: dict, owner_id: int) -> dict:
        """Check (and normalise) parameters when the job is created; raise ValidationError."""
        return params

    def plan(self, ctx: Context, job: Job) -> list[int]:
        """The image ids the job covers (default: selection params, see ``selection``)."""
        from aqualens.processing.selection import select_image_ids

        with ctx.session() as s:
            return select_image_ids(s, job.params, job.owner_id)

    @abstractmethod
    def process_batch(self, ctx: Context, job_id: str, params: dict,
                      image_ids: list[int]) -> list[dict[str, Any]]:
        """Process one batch on a worker; a failure on one image is a result, not an exception."""

    def write(self, session: Session, job_id: str, params: dict,
              results: list[dict[str, Any]]) -> None:
        """Store side effects of ``results`` (default: none; the result rows carry payloads)."""

    def cleanup(self, session: Session, job_id: str, image_ids: list[int]) -> None:
        """Remove half-written side effects for images without a result (default: none)."""

    def finish(self, ctx: Context, job: Job) -> dict[str, Any]:
        """Outputs stored on the job after its last batch."""
        return {}

    def usage_model_id(self, params: dict) -> int | None:
        return None


def split_tasks(kind: BatchJobKind, params: dict, image_ids: list[int],
                threads: int) -> list[list[int]]:
    """Cut a job's pending images into Dask tasks.

    ``params["chunk_size"]`` gives fixed tasks of that size; a kind without ``chunk_size`` sends
    one batch per task. Otherwise the tasks shrink as the job nears its end (guided
    scheduling): each takes a quarter of what is left per worker thread, capped at the kind's
    chunk and rounded up to whole batches. The big early tasks keep the per-task costs low; the
    small last ones keep every worker busy to the end instead of one finishing a big task alone.
    """
    batch = max(1, int(params.get("batch_size") or kind.batch_size))
    if params.get("chunk_size") or not kind.chunk_size:
        size = max(1, int(params.get("chunk_size") or batch))
        return [image_ids[i:i + size] for i in range(0, len(image_ids), size)]
    cap = max(kind.chunk_size, batch)
    tasks, start, n = [], 0, len(image_ids)
    while start < n:
        share = -(-(n - start) // (4 * max(1, threads)))
        size = max(batch, -(-min(cap, share) // batch) * batch)
        tasks.append(image_ids[start:start + size])
        start += size
    return tasks


def resolve_kind(name: str) -> Any:
    """The plugin for job kind ``name``: a BatchJobKind instance or a function."""
    from aqualens.core.plugins import get_registry
    from aqualens.processing.jobs import JOB_GROUP

    obj = get_registry().get(JOB_GROUP, name)
    if isinstance(obj, type) and issubclass(obj, BatchJobKind):
        return obj()
    return obj


def is_batch_kind(obj: Any) -> bool:
    return isinstance(obj, BatchJobKind)
