"""catalog.bulk.insert_rows: the rows read back exactly as the ORM would have stored them."""

from __future__ import annotations

from sqlalchemy import select

from aqualens.catalog.bulk import insert_rows
from aqualens.catalog.tables import Job, JobResult, utcnow
from aqualens.catalog.users import get_admin
from aqualens.processing import jobs
from tests.processing.helpers import add_images


def test_insert_rows_json_none_bool_datetime(any_ctx) -> None:  # noqa: ANN001
    ctx, _ = any_ctx
    _, ids = add_images(ctx, [10, 20, 30])
    now = utcnow()
    with ctx.session() as s:
        job_id = jobs.create_job(s, "image-stats", {"collection": "cam1"}, get_admin(s).id).id
    rows = [{"job_id": job_id, "image_id": ids[0], "ok": True,
             "payload": {"top": [{"label": "a", "score": 0.25}], "n": 1, "ü": None},
             "error": None, "created_at": now},
            {"job_id": job_id, "image_id": ids[1], "ok": False, "payload": None,
             "error": "cannot decode", "created_at": now},
            {"job_id": job_id, "image_id": ids[2], "ok": True, "payload": [1, 2.5, "x"],
             "error": None, "created_at": now}]
    with ctx.session() as s:
        insert_rows(s, JobResult.__table__, rows)
        insert_rows(s, JobResult.__table__, [])  # nothing to do
    with ctx.session() as s:
        got = {r.image_id: r for r in s.scalars(select(JobResult)
                                                 .where(JobResult.job_id == job_id))}
        assert got[ids[0]].payload == rows[0]["payload"] and got[ids[0]].ok is True
        assert got[ids[1]].payload is None and got[ids[1]].ok is False
        assert got[ids[1]].error == "cannot decode"
        assert got[ids[2]].payload == [1, 2.5, "x"]
        stored = got[ids[0]].created_at
        assert abs((stored.replace(tzinfo=None) - now.replace(tzinfo=None)).total_seconds()) < 1
        assert s.get(Job, job_id) is not None
