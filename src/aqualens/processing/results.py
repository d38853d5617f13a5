"""Per-image results of jobs: :class:`JobResult` rows, unique on (job, image).

:func:`insert_results` writes them idempotently ("on conflict do nothing") and names the rows it
really inserted, so side effects and progress can follow those rows only: a batch that runs twice
(a retry, a resumed job, two runners on one job) counts and writes once. Progress itself is in
:mod:`aqualens.processing.jobs` (``record_results``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aqualens.catalog.tables import JobResult, utcnow


def done_image_ids(session: Session, job_id: str, image_ids: Iterable[int] | None = None
                   ) -> set[int]:
    """Images that already have a result for this job (the resume / retry filter)."""
    query = select(JobResult.image_id).where(JobResult.job_id == str(job_id))
    if image_ids is not None:
        ids = list(image_ids)
        if not ids:
            return set()
        query = query.where(JobResult.image_id.in_(ids))
    return set(session.scalars(query))


def insert_results(session: Session, job_id: str, results: Iterable[dict]) -> list[int]:
    """Insert per-image results ``{"image_id", "ok", "payload", "error"}`` idempotently.

    Rows that already exist for (job, image) are left alone ("on conflict do nothing", which on
    PostgreSQL also waits for a concurrent writer of the same row). Returns the image ids whose
    rows THIS call inserted: only those may get side effects (annotations) and progress, which
    makes a batch that runs twice, even concurrently, count and write once.
    """
    now = utcnow()  # one timestamp for the batch
    rows = [{"job_id": str(job_id), "image_id": int(r["image_id"]), "ok": bool(r.get("ok", True)),
             "payload": r.get("payload"), "error": r.get("error"), "created_at": now}
            for r in results]
    if not rows:
        return []
    seen: set[int] = set()  # a repeated image in one call: its first row counts
    rows = [r for r in rows if not (r["image_id"] in seen or seen.add(r["image_id"]))]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _insert_results_pg(session, str(job_id), rows, now)
    from sqlalchemy.dialects.sqlite import insert

    # One multi-row statement; RETURNING names the rows really inserted (a conflicting row
    # returns nothing), so a concurrent writer of the same (job, image) still wins exactly once.
    stmt = (insert(JobResult.__table__)
            .on_conflict_do_nothing(index_elements=["job_id", "image_id"])
            .returning(JobResult.__table__.c.image_id))
    return [int(i) for i in session.execute(stmt, rows).scalars()]


def _insert_results_pg(session: Session, job_id: str, rows: list[dict], now: Any) -> list[int]:
    """:func:`insert_results` on PostgreSQL: one short statement whose rows arrive as ONE JSON
    array (encoded by orjson, parsed by the server). A multi-row VALUES statement would be a new,
    long SQL text for every batch size, parsed again by the driver each time; text arrays would
    be escaped element by element in Python."""
    from sqlalchemy import text

    from aqualens.catalog.db import json_dumps

    stmt = text(
        "INSERT INTO job_results (job_id, image_id, ok, payload, error, created_at) "
        "SELECT :job_id, CAST(r->>'i' AS integer), CAST(r->>'o' AS boolean), r->'p', r->>'e', "
        ":now FROM json_array_elements(CAST(:rows AS json)) AS r "
        "ON CONFLICT (job_id, image_id) DO NOTHING RETURNING image_id")
    data = json_dumps([{"i": r["image_id"], "o": r["ok"], "p": r["payload"], "e": r["error"]}
                       for r in rows])
    return [int(i) for i in session.execute(stmt, {"job_id": job_id, "now": now,
                                                   "rows": data}).scalars()]


def job_results(session: Session, job_id: str, *, ok: bool | None = None, limit: int = 1000,
                offset: int = 0) -> list[JobResult]:
    """Per-image results of a job, by image id."""
    query = select(JobResult).where(JobResult.job_id == str(job_id))
    if ok is not None:
        query = query.where(JobResult.ok.is_(ok))
    return list(session.scalars(query.order_by(JobResult.image_id).limit(limit).offset(offset)))


def count_results(session: Session, job_id: str) -> int:
    return session.scalar(select(func.count()).select_from(JobResult)
                          .where(JobResult.job_id == str(job_id))) or 0
