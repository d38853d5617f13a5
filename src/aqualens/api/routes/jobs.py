"""REST routes for jobs: list, create, get, cancel, retry, logs, results; batch predict; compare.

Long work always runs as a job: these routes create it (202 + the job) and the runner does it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from aqualens.api.deps import current_user, get_session, optional_user
from aqualens.catalog.ids import MAX_ID
from aqualens.catalog.tables import User
from aqualens.processing import jobs

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobCreate(BaseModel):
    kind: str = Field(description="a job kind, e.g. predict, image-stats")
    params: dict[str, Any] = Field(default_factory=dict)


class PredictRequest(BaseModel):
    model: str | int = Field(description="model id, name or name@version")
    collection: str | int | None = None
    query: dict[str, Any] | None = Field(default=None, description="search fields")
    image_ids: list[int] | None = None
    top_k: int = 5
    threshold: float = 0.0
    batch_size: int | None = Field(default=None, description="images per model call (128)")
    chunk_size: int | None = Field(default=None, description="images per Dask task (512)")


def _accepted(job) -> JSONResponse:
    body = jobs.job_to_dict(job)
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.get("/jobs")
def list_jobs(state: str | None = None, kind: str | None = None,
              service_id: int | None = Query(None, ge=0, le=MAX_ID), since: datetime | None = None,
              limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_ID),
              session: Session = Depends(get_session),
              user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    """Jobs the caller may see, newest first; filter by state, kind, service, creation time."""
    return [jobs.job_to_dict(j) for j in jobs.list_jobs(session, user, state=state, kind=kind,
                                                         service_id=service_id, since=since,
                                                         limit=limit, offset=offset)]


@router.post("/jobs", status_code=202)
def create_job(body: JobCreate, session: Session = Depends(get_session),
               user: User = Depends(current_user)) -> JSONResponse:
    """Queue a job of any installed kind; answers 202 with the job (poll ``Location``)."""
    job = jobs.create_job(session, body.kind, body.params, user.id)
    session.commit()
    return _accepted(job)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, session: Session = Depends(get_session),
            user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """State, progress (done, failed, total, rate, ETA), outputs, timings, attempts."""
    return jobs.job_to_dict(jobs.get_job(session, job_id, user))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, session: Session = Depends(get_session),
               user: User = Depends(current_user)) -> dict[str, Any]:
    """Cancel: a queued job at once, a running one at its next batch boundary."""
    return jobs.job_to_dict(jobs.request_cancel(session, job_id, user))


@router.post("/jobs/{job_id}/retry", status_code=202)
def retry_job(job_id: str, session: Session = Depends(get_session),
              user: User = Depends(current_user)) -> JSONResponse:
    """Re-queue a failed or cancelled job; images already done are not processed again."""
    job = jobs.get_job(session, job_id, user)
    job = jobs.requeue(session, job.id, user)
    jobs.log(session, job.id, f"re-queued by {user.name}")
    session.commit()
    return _accepted(job)


@router.get("/jobs/{job_id}/logs")
def job_logs(job_id: str, after: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(1000, ge=1, le=10000),
             session: Session = Depends(get_session),
             user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    """Log lines in order; pass the last ``id`` as ``after`` to follow."""
    job = jobs.get_job(session, job_id, user)
    return [{"id": ln.id, "level": ln.level, "message": ln.message,
             "created_at": ln.created_at.isoformat()}
            for ln in jobs.get_logs(session, job.id, after_id=after, limit=limit)]


@router.get("/jobs/{job_id}/results")
def job_results(job_id: str, ok: bool | None = None, limit: int = Query(1000, ge=1, le=10000),
                offset: int = Query(0, ge=0, le=MAX_ID), session: Session = Depends(get_session),
                user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    """Per-image results (``ok=false``: the failures with their reasons)."""
    job = jobs.get_job(session, job_id, user)
    return [{"image_id": r.image_id, "ok": r.ok, "payload": r.payload, "error": r.error}
            for r in jobs.job_results(session, job.id, ok=ok, limit=limit, offset=offset)]


@router.post("/predict", status_code=202)
def batch_predict(body: PredictRequest, session: Session = Depends(get_session),
                  user: User = Depends(current_user)) -> JSONResponse:
    """Run a model over a collection, a search query or image ids, as a job (reanalysis)."""
    params = body.model_dump(exclude_none=True)
    job = jobs.create_job(session, "predict", params, user.id)
    session.commit()
    return _accepted(job)


@router.get("/compare", response_model=None)
def compare(request: Request, job_a: str, job_b: str,
            format: Literal["json", "png"] | None = None,
            session: Session = Depends(get_session),
            user: User | None = Depends(optional_user)) -> Any:
    """Agreement, changed labels and per-class count changes of two jobs; PNG with
    ``format=png`` or ``Accept: image/png``."""
    from aqualens.processing.compare import compare_jobs, compare_plot

    report = compare_jobs(session, job_a, job_b, user)
    wants_png = format == "png" or (format is None and
                                    "image/png" in request.headers.get("accept", ""))
    if wants_png:
        return Response(compare_plot(report), media_type="image/png")
    return report
