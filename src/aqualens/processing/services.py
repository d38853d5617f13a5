"""Event-driven services: definitions, trigger tokens, events, dispatch to jobs, synchronous runs.

The ``service`` job kind itself (fetching an event's inputs, running the steps, writing the
outputs) is in :mod:`aqualens.processing.service_kind`.

Flow: a trigger (``aqualens.processing.triggers``) or the bucket webhook stores an
:class:`Event` row (unique per service and key, so an event that arrives twice is stored once)
BEFORE anything is processed; the dispatcher turns pending events of active services into one
``service`` job each round; the runner executes the job on Dask. A restart loses nothing: pending
events are dispatched on the next round, and queued/running jobs are resumed by the runner.

Event states: pending → queued (a job took it) → done | failed.
The trigger token (for webhooks) is created once; only its sha256 is stored, and updating a
service never changes it (``rotate_trigger_token`` does, on explicit request).
"""

from __future__ import annotations

import hashlib
import io
import secrets
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.tables import (
    Event,
    Job,
    Service,
    User,
    utcnow,
)
from aqualens.catalog.users import check_write, hash_token, visible
from aqualens.core.errors import (
    NotFound,
    PermissionDenied,
    TooLarge,
    Unauthorized,
    ValidationError,
)
from aqualens.processing import jobs
from aqualens.processing.servicedef import ServiceDef, parse_definition

TOKEN_PREFIX = "aqlt_"
MAX_EVENTS_PER_JOB = 5000
SYNC_MAX_FILES = 16
SYNC_MAX_BYTES = 32 * 1024 * 1024


# ------------------------------------------------------------------------------ definitions
def apply_service(session: Session, definition: Any, owner: User) -> tuple[Service, str | None]:
    """Create or update a service from a definition; returns (service, new trigger token or
    None). The token is made on creation only and survives every update."""
    d = parse_definition(definition)
    resolve_steps(session, d, owner)  # refuse unknown models / pipelines now, not at run time
    row = session.scalar(select(Service).where(Service.name == d.name))
    token = None
    if row is None:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = Service(name=d.name, owner_id=owner.id, visibility=d.visibility,
                      definition=d.model_dump(mode="json"), trigger_token_hash=hash_token(token))
        session.add(row)
    else:
        check_write(row, owner, "service")
        row.definition = d.model_dump(mode="json")
        row.visibility = d.visibility
        row.updated_at = utcnow()
    session.flush()
    return row, token


def rotate_trigger_token(session: Session, name: str, user: User) -> str:
    """Issue a new trigger token (the old one stops working); only on explicit request."""
    row = get_service(session, name, user)
    check_write(row, user, "service")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row.trigger_token_hash = hash_token(token)
    return token


def get_service(session: Session, name: str, user: User | None) -> Service:
    row = session.scalar(select(Service).where(Service.name == name, visible(Service, user)))
    if row is None:
        raise NotFound(f"no service {name!r}", field="service")
    return row


def list_services(session: Session, user: User | None) -> list[Service]:
    return list(session.scalars(select(Service).where(visible(Service, user))
                                .order_by(Service.name)))


def set_paused(session: Session, name: str, user: User, paused: bool) -> Service:
    """Pause (events are still stored, not processed) or resume (the backlog is processed)."""
    row = get_service(session, name, user)
    check_write(row, user, "service")
    row.paused = paused
    row.updated_at = utcnow()
    return row


def delete_service(session: Session, name: str, user: User) -> None:
    """Delete a service and its events; its jobs stay (with service_id cleared)."""
    row = get_service(session, name, user)
    check_write(row, user, "service")
    session.execute(update(Job).where(Job.service_id == row.id).values(service_id=None))
    session.query(Event).filter(Event.service_id == row.id).delete()
    session.delete(row)


def service_dict(row: Service, session: Session | None = None) -> dict[str, Any]:
    out = {"id": row.id, "name": row.name, "owner_id": row.owner_id,
           "visibility": row.visibility, "paused": row.paused, "definition": row.definition,
           "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}
    if session is not None:
        out["events"] = dict(session.execute(select(Event.state, func.count())
                                             .where(Event.service_id == row.id)
                                             .group_by(Event.state)).all())
    return out


def check_trigger_token(session: Session, name: str, token: str | None) -> Service:
    """The service whose trigger token is ``token`` (webhook authentication)."""
    row = session.scalar(select(Service).where(Service.name == name))
    if not token or row is None or row.trigger_token_hash != hash_token(token):
        raise Unauthorized("unknown service or wrong trigger token", field="token",
                           valid="the trigger token printed when the service was created")
    return row


def resolve_steps(session: Session, d: ServiceDef | dict, owner: User) -> list[dict[str, Any]]:
    """Steps with models resolved to ids (a job snapshot: later updates don't change it)."""
    from aqualens.core.plugins import get_registry
    from aqualens.models.registry import get_model
    from aqualens.processing.kinds import is_batch_kind, resolve_kind

    steps = d.steps if isinstance(d, ServiceDef) else ServiceDef.model_validate(d).steps
    out = []
    for n, step in enumerate(steps):
        if step.model:
            try:
                model = get_model(session, step.model, owner)
            except NotFound as exc:
                raise ValidationError(f"steps.{n}.model: {exc.message}", field=f"steps.{n}.model",
                                      valid=exc.valid) from None
            out.append({"model": f"{model.name}@{model.version}", "model_id": model.id,
                        "task": model.task, "top_k": step.top_k, "threshold": step.threshold})
        else:
            names = get_registry().names(jobs.JOB_GROUP)
            if step.pipeline not in names or step.pipeline in ("service", "predict") or \
                    not is_batch_kind(resolve_kind(step.pipeline)):
                raise ValidationError(f"steps.{n}.pipeline: unknown pipeline {step.pipeline!r}",
                                      field=f"steps.{n}.pipeline",
                                      valid=", ".join(x for x in names
                                                      if x not in ("service", "predict")))
            out.append({"pipeline": step.pipeline, "params": step.params})
    return out


# ---------------------------------------------------------------------------------- events
def record_event(session: Session, service_id: int, key: str, payload: dict) -> bool:
    """Store an event once; False when (service, key) was already recorded (a duplicate)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Event).values(service_id=service_id, key=key[:500], payload=payload,
                                state="pending", created_at=utcnow()
                                ).on_conflict_do_nothing(index_elements=["service_id", "key"])
    return session.execute(stmt).rowcount == 1


def list_events(session: Session, service: Service, *, state: str | None = None,
                limit: int = 100) -> list[Event]:
    q = select(Event).where(Event.service_id == service.id)
    if state:
        q = q.where(Event.state == state)
    return list(session.scalars(q.order_by(Event.id.desc()).limit(limit)))


def job_params(session: Session, service: Service, owner: User, **extra: Any) -> dict:
    """The parameters of a ``service`` job: the service's resolved steps, outputs and triggers."""
    d = ServiceDef.model_validate(service.definition)
    return {"service_id": service.id, "service": service.name,
            "steps": resolve_steps(session, d, owner),
            "outputs": d.outputs.model_dump(mode="json"),
            "triggers": [t.model_dump(mode="json") for t in d.triggers], **extra}


def dispatch_pending(ctx: Context) -> list[str]:
    """Turn pending events of active services into jobs; close events of finished jobs.

    Returns the ids of the jobs created."""
    created = []
    with ctx.session() as s:
        for service in s.scalars(select(Service).where(Service.paused.is_(False))):
            ids = list(s.scalars(select(Event.id).where(Event.service_id == service.id,
                                                        Event.state == "pending")
                                 .order_by(Event.id).limit(MAX_EVENTS_PER_JOB)))
            if not ids:
                continue
            owner = s.get(User, service.owner_id)
            params = job_params(s, service, owner, event_ids=ids)
            job = jobs.create_job(s, "service", params, owner.id, service_id=service.id)
            # Only events still pending move: a concurrent dispatcher cannot take them twice.
            moved = s.execute(update(Event).where(Event.id.in_(ids), Event.state == "pending")
                              .values(state="queued", job_id=job.id)).rowcount
            if moved != len(ids):
                raise jobs.JobError("events were dispatched concurrently; retrying next round")
            jobs.log(s, job.id, f"{len(ids)} event(s) of service {service.name}")
            created.append(job.id)
        # Events whose job ended badly are marked failed (the job can be retried by hand).
        for state in ("failed", "cancelled"):
            s.execute(update(Event).where(Event.state == "queued",
                                          Event.job_id.in_(select(Job.id)
                                                           .where(Job.state == state)))
                      .values(state="failed"))
        s.execute(update(Event).where(Event.state == "queued",
                                      Event.job_id.in_(select(Job.id)
                                                       .where(Job.state == "succeeded")))
                  .values(state="done"))
    return created


def submit_service_job(session: Session, service: Service, user: User,
                       selection: dict[str, Any]) -> Job:
    """Asynchronous invocation over a selection (collection / query / image_ids)."""
    if service.paused:
        raise jobs.JobError(f"service {service.name} is paused", field="service",
                            valid="resume it first")
    from aqualens.processing.selection import check_selection

    check_selection(selection)
    owner = session.get(User, service.owner_id)
    if not (user.is_admin or user.id == service.owner_id or service.visibility == "public"):
        raise PermissionDenied("this service belongs to another user", field="service")
    params = job_params(session, service, owner, selection=selection)
    return jobs.create_job(session, "service", params, user.id, service_id=service.id)


# ------------------------------------------------------------------------ sync invocation
def run_service_sync(ctx: Context, service: Service, user: User,
                     files: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Run a service's steps on a few uploaded images in this process and return the results
    directly (nothing is stored but a usage event). Models come warm from the registry cache."""
    import numpy as np
    from PIL import Image as PILImage

    from aqualens.catalog.tables import UsageEvent
    from aqualens.models.warm import load_runtime
    from aqualens.processing.kinds import resolve_kind

    if service.paused:
        raise jobs.JobError(f"service {service.name} is paused", field="service",
                            valid="resume it first")
    if not files:
        raise ValidationError("send at least one image file", field="file")
    if len(files) > SYNC_MAX_FILES or sum(len(b) for _, b in files) > SYNC_MAX_BYTES:
        raise TooLarge(f"synchronous runs take up to {SYNC_MAX_FILES} files and "
                       f"{SYNC_MAX_BYTES // 2**20} MiB", field="file",
                       valid=f"use POST /api/v1/services/{service.name}/jobs for more")
    arrays = []
    for name, data in files:
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                arrays.append(np.asarray(im.convert("RGB")))
        except Exception:  # noqa: BLE001 - Pillow raises many types for bad input
            raise ValidationError(f"{name} is not a readable image", field="file",
                                  valid="JPEG, PNG, TIFF, BMP, WebP") from None
    with ctx.session() as s:
        steps = resolve_steps(s, service.definition, s.get(User, service.owner_id))
    results: list[dict[str, Any]] = [{"name": n, "steps": []} for n, _ in files]
    for step in steps:
        if "model_id" in step:
            preds = load_runtime(ctx, step["model_id"]).predict(
                arrays, top_k=step["top_k"], threshold=step["threshold"])
            for r, p in zip(results, preds, strict=True):
                r["steps"].append({"name": step["model"], "result": p.to_dict()})
        else:
            kind = resolve_kind(step["pipeline"])
            if not hasattr(kind, "process_arrays"):
                raise ValidationError(f"pipeline {step['pipeline']} cannot run synchronously",
                                      field="steps", valid="use the asynchronous /jobs route")
            for r, p in zip(results, kind.process_arrays(arrays, step.get("params", {})),
                            strict=True):
                r["steps"].append({"name": step["pipeline"], "result": p})
    with ctx.session() as s:
        s.add(UsageEvent(kind="service-run", user_id=user.id, images=len(files),
                         bytes=sum(len(b) for _, b in files), service_id=service.id,
                         model_id=next((x["model_id"] for x in steps if "model_id" in x), None),
                         details={"service": service.name}))
    return {"service": service.name, "results": results}


def start_triggers(ctx: Context, **kwargs: Any):
    """Start the trigger manager (collection hook, folders, schedules, dispatcher)."""
    from aqualens.processing.triggers import TriggerManager

    return TriggerManager(ctx, **kwargs).start()


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]
