"""REST routes for event-driven services: definitions, pause/resume, invocation, bucket webhook."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from aqualens.api.deps import current_user, get_ctx, get_session, optional_user
from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.core.errors import ValidationError
from aqualens.processing import jobs
from aqualens.processing import services as svc

router = APIRouter(prefix="/api/v1/services", tags=["services"])


async def _definition(request: Request) -> Any:
    """A definition from JSON or YAML (``Content-Type: application/yaml``)."""
    body = await request.body()
    if not body:
        raise ValidationError("send a service definition (JSON or YAML)", field="body")
    ctype = request.headers.get("content-type", "")
    if "yaml" in ctype or "text/plain" in ctype:
        return body.decode("utf-8", errors="replace")
    import json

    try:
        return json.loads(body)
    except ValueError:
        raise ValidationError("body is not valid JSON", field="body",
                              valid="JSON, or YAML with Content-Type: application/yaml") from None


@router.get("")
def list_services(session: Session = Depends(get_session),
                  user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    return [svc.service_dict(r, session) for r in svc.list_services(session, user)]


@router.post("", status_code=201)
async def apply_service(request: Request, session: Session = Depends(get_session),
                        user: User = Depends(current_user)) -> JSONResponse:
    """Create or update a service. On creation the answer carries ``trigger_token`` (shown once;
    webhooks use it); updates keep the token valid."""
    row, token = svc.apply_service(session, await _definition(request), user)
    session.commit()
    body = svc.service_dict(row)
    if token:
        body["trigger_token"] = token
    return JSONResponse(body, status_code=201 if token else 200)


@router.put("/{name}")
async def update_service(name: str, request: Request, session: Session = Depends(get_session),
                         user: User = Depends(current_user)) -> dict[str, Any]:
    """Replace a service's definition (its name must match); the trigger token stays valid."""
    definition = await _definition(request)
    parsed = svc.parse_definition(definition)
    if parsed.name != name:
        raise ValidationError(f"definition name {parsed.name!r} differs from {name!r}",
                              field="name")
    svc.get_service(session, name, user)
    row, _ = svc.apply_service(session, definition, user)
    return svc.service_dict(row)


@router.get("/{name}")
def get_service(name: str, session: Session = Depends(get_session),
                user: User | None = Depends(optional_user)) -> dict[str, Any]:
    return svc.service_dict(svc.get_service(session, name, user), session)


@router.delete("/{name}", status_code=204)
def delete_service(name: str, session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> None:
    svc.delete_service(session, name, user)


@router.post("/{name}/pause")
def pause(name: str, session: Session = Depends(get_session),
          user: User = Depends(current_user)) -> dict[str, Any]:
    """Stop processing; events keep being stored and are processed on resume."""
    return svc.service_dict(svc.set_paused(session, name, user, True))


@router.post("/{name}/resume")
def resume(name: str, session: Session = Depends(get_session),
           user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.service_dict(svc.set_paused(session, name, user, False))


@router.get("/{name}/events")
def events(name: str, state: str | None = None, limit: int = Query(100, ge=1, le=10000),
           session: Session = Depends(get_session),
           user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    row = svc.get_service(session, name, user)
    return [{"id": e.id, "key": e.key, "state": e.state, "job_id": e.job_id,
             "payload": e.payload, "created_at": e.created_at.isoformat()}
            for e in svc.list_events(session, row, state=state, limit=limit)]


@router.post("/{name}/run")
async def run_sync(name: str, file: list[UploadFile], ctx: Context = Depends(get_ctx),
                   session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    """Synchronous invocation: run the steps on up to 16 small images (multipart ``file``) and
    answer the results directly; nothing is stored."""
    row = svc.get_service(session, name, user)
    files = [(f.filename or f"file{n}", await f.read()) for n, f in enumerate(file)]
    session.expunge(row)
    session.commit()
    return svc.run_service_sync(ctx, row, user, files)


@router.post("/{name}/jobs", status_code=202)
async def run_async(name: str, request: Request, ctx: Context = Depends(get_ctx),
                    session: Session = Depends(get_session),
                    user: User = Depends(current_user)) -> JSONResponse:
    """Asynchronous invocation: JSON ``{"collection" | "query" | "image_ids": ...}``, or
    multipart ``file`` uploads (ingested into the service's first collection, or
    ``<service>-inbox``). Answers 202 with the job."""
    row = svc.get_service(session, name, user)
    session.commit()  # release SQLite's write lock (token last-used) before ingesting
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/"):
        import tempfile
        from pathlib import Path

        from aqualens.processing.service_kind import ingest_for_service

        form = await request.form()
        uploads = [f for f in form.getlist("file") if hasattr(f, "read")]
        if not uploads:
            raise ValidationError("send images as multipart field 'file'", field="file")
        target = next((t.get("collection") for t in row.definition.get("triggers", [])
                       if t.get("collection")), f"{row.name}-inbox")
        with tempfile.TemporaryDirectory(prefix="aqualens-upload-") as tmp:
            files = []
            for n, up in enumerate(uploads):
                path = Path(tmp) / f"{n}-{Path(up.filename or 'file').name}"
                path.write_bytes(await up.read())
                files.append((up.filename or path.name, path))
            ids = ingest_for_service(ctx, row.id, target, user.id, files)
        selection = {"image_ids": ids}
    else:
        selection = await _definition(request)
        if not isinstance(selection, dict):
            raise ValidationError("body must be an object", field="body")
    job = svc.submit_service_job(session, row, user, selection)
    session.commit()
    return JSONResponse(jobs.job_to_dict(job), status_code=202,
                        headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.post("/{name}/events/s3", status_code=202)
async def s3_webhook(name: str, request: Request, token: str | None = None,
                     ctx: Context = Depends(get_ctx),
                     session: Session = Depends(get_session)) -> dict[str, Any]:
    """Bucket notification webhook (S3 event JSON, or a SeaweedFS filer webhook). Authenticated
    by the service's trigger token: ``Authorization: Bearer <token>`` or ``?token=``."""
    from aqualens.processing.triggers import accept_s3_notification

    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    row = svc.check_trigger_token(session, name, token)
    session.expunge(row)
    session.commit()
    try:
        body = await request.json()
    except ValueError:
        raise ValidationError("body is not valid JSON", field="body") from None
    return accept_s3_notification(ctx, row, body)
