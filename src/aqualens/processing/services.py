"""Event-driven services: definitions, events, dispatch to jobs, and the ``service`` job kind.

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

import csv
import hashlib
import io
import secrets
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.tables import (
    Annotation,
    CollectionImage,
    Event,
    Image,
    Job,
    Label,
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
from aqualens.processing.kinds import BatchJobKind
from aqualens.processing.servicedef import ServiceDef, parse_definition

TOKEN_PREFIX = "aqlt_"
MAX_EVENTS_PER_JOB = 5000
SYNC_MAX_FILES = 16
SYNC_MAX_BYTES = 32 * 1024 * 1024
_suppress = threading.local()  # services whose own ingest must not re-trigger them


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


def _job_params(session: Session, service: Service, owner: User, **extra: Any) -> dict:
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
            params = _job_params(s, service, owner, event_ids=ids)
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
    params = _job_params(session, service, owner, selection=selection)
    return jobs.create_job(session, "service", params, user.id, service_id=service.id)


# ------------------------------------------------------------------------ fetching inputs
def _s3_client(settings) -> Any:
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    return boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                      s3={"addressing_style": "path"}))


def _ingest(ctx: Context, service_id: int, collection: str, owner_id: int,
            files: list[tuple[str, Path]]) -> list[int]:
    from aqualens.ingest.pipeline import ingest_files, resolve_collection

    coll_id = resolve_collection(ctx, collection, owner_id)
    active = getattr(_suppress, "ids", set())
    _suppress.ids = active | {service_id}
    try:
        report = ingest_files(ctx, files, collection_id=coll_id, owner_id=owner_id)
    finally:
        _suppress.ids = active
    if not report.accepted and report.rejected:
        raise ValidationError("; ".join(f"{r.name}: {r.reason}" for r in report.rejected),
                              field="file")
    return [item.image_id for item in report.accepted]


def event_image_ids(ctx: Context, event: Event, params: dict, owner_id: int) -> list[int]:
    """The images an event stands for (ingesting the file or S3 object it names first)."""
    payload = dict(event.payload or {})
    if "image_ids" in payload:
        return [int(i) for i in payload["image_ids"]]
    trigger = params["triggers"][payload["trigger"]] if "trigger" in payload else {}
    if payload.get("type") == "s3":
        with tempfile.TemporaryDirectory(prefix="aqualens-s3-") as tmp:
            name = Path(payload["key"]).name or "object"
            path = Path(tmp) / name
            _s3_client(ctx.settings).download_file(payload["bucket"], payload["key"], str(path))
            ids = _ingest(ctx, params["service_id"], trigger["collection"], owner_id,
                          [(payload["key"], path)])
    elif payload.get("type") == "file":
        path = Path(payload["path"])
        if not path.is_file():
            raise ValidationError(f"{path} has gone", field="path")
        ids = _ingest(ctx, params["service_id"], trigger["collection"], owner_id,
                      [(path.name, path)])
    elif payload.get("type") == "schedule":
        from aqualens.processing.selection import select_image_ids

        select_ = trigger.get("select")
        if not select_:
            return []
        with ctx.session() as s:
            return select_image_ids(s, select_, owner_id)
    else:
        raise ValidationError(f"event {event.key} has an unknown payload", field="event")
    with ctx.session() as s:  # remember, so a resumed job does not fetch it again
        s.execute(update(Event).where(Event.id == event.id)
                  .values(payload={**payload, "image_ids": ids}))
    return ids


# --------------------------------------------------------------------------- the job kind
class ServiceKind(BatchJobKind):
    """Run a service's steps over the images of its events (or an explicit selection)."""

    batch_size = 16
    usage_kind = "service"

    def validate(self, session: Session, params: dict, owner_id: int) -> dict:
        if not isinstance(params.get("service_id"), int) or \
                session.get(Service, params["service_id"]) is None:
            raise ValidationError("service_id must name an existing service", field="service_id")
        if "steps" not in params:
            service = session.get(Service, params["service_id"])
            params = {**_job_params(session, service, session.get(User, service.owner_id)),
                      **params}
        return params

    def plan(self, ctx: Context, job: Job) -> list[int]:
        from aqualens.processing.selection import select_image_ids

        params = job.params
        if params.get("selection"):
            with ctx.session() as s:
                return select_image_ids(s, params["selection"], job.owner_id)
        ids: list[int] = []
        with ctx.session() as s:
            events = list(s.scalars(select(Event).where(Event.id.in_(params.get("event_ids", [])))
                                    .order_by(Event.id)))
            for e in events:
                s.expunge(e)
        errors = []
        for event in events:
            try:
                ids.extend(event_image_ids(ctx, event, params, job.owner_id))
            except Exception as exc:  # noqa: BLE001 - one bad event must not sink the others
                errors.append(f"{event.key}: {exc}")
                with ctx.session() as s:
                    s.execute(update(Event).where(Event.id == event.id)
                              .values(state="failed", payload={**(event.payload or {}),
                                                               "error": str(exc)}))
                    jobs.log(s, job.id, f"event {event.key} failed: {exc}", level="error")
        if errors and not ids and len(errors) == len(events):
            raise ValidationError("every event failed: " + "; ".join(errors[:5]), field="event")
        return sorted(set(ids))

    def process_batch(self, ctx: Context, job_id: str, params: dict,
                      image_ids: list[int]) -> list[dict[str, Any]]:
        from aqualens.processing.kinds import resolve_kind
        from aqualens.processing.predict import predict_batch

        per_image: dict[int, dict[str, Any]] = {i: {"image_id": i, "ok": True,
                                                    "payload": {"steps": []}, "errors": []}
                                                for i in image_ids}
        for n, step in enumerate(params["steps"]):
            if "model_id" in step:
                results = predict_batch(ctx, step["model_id"], image_ids, top_k=step["top_k"],
                                        threshold=step["threshold"])
                name = step["model"]
            else:
                results = resolve_kind(step["pipeline"]).process_batch(
                    ctx, job_id, step.get("params", {}), image_ids)
                name = step["pipeline"]
            for r in results:
                item = per_image[int(r["image_id"])]
                item["payload"]["steps"].append({"step": n, "name": name,
                                                 "result": r.get("payload")})
                if not r.get("ok", True):
                    item["ok"] = False
                    item["errors"].append(f"{name}: {r.get('error')}")
        out = []
        for item in per_image.values():
            errors = item.pop("errors")
            if errors:
                item["error"] = "; ".join(errors)
            out.append(item)
        return out

    def write(self, session: Session, job_id: str, params: dict, results: list[dict]) -> None:
        from aqualens.processing.predict import write_annotations

        owner = session.scalar(select(Job.owner_id).where(Job.id == job_id))
        outputs = params.get("outputs", {})
        if outputs.get("annotations", True):
            for n, step in enumerate(params["steps"]):
                if "model_id" not in step:
                    continue
                step_results = [{"image_id": r["image_id"], "payload": s["result"]}
                                for r in results for s in r["payload"]["steps"]
                                if s["step"] == n and s["result"]]
                write_annotations(session, job_id=job_id, model_id=step["model_id"],
                                  owner_id=owner, results=step_results)
        if outputs.get("collection") and results:
            from aqualens.catalog.collections import get_or_create_collection

            coll = get_or_create_collection(session, outputs["collection"],
                                            session.get(User, owner))
            have = set(session.scalars(select(CollectionImage.image_id).where(
                CollectionImage.collection_id == coll.id,
                CollectionImage.image_id.in_([r["image_id"] for r in results]))))
            for r in results:
                if r["image_id"] not in have:
                    session.add(CollectionImage(collection_id=coll.id, image_id=r["image_id"]))
            session.flush()

    def usage_model_id(self, params: dict) -> int | None:
        return next((s["model_id"] for s in params.get("steps", []) if "model_id" in s), None)

    def finish(self, ctx: Context, job: Job) -> dict[str, Any]:
        outputs: dict[str, Any] = {"files": []}
        for spec in job.params.get("outputs", {}).get("files", []):
            writer = write_daily_counts if spec["type"] == "daily-counts-csv" else write_results
            outputs["files"].extend(writer(ctx, job, spec["prefix"]))
        with ctx.session() as s:
            if job.params.get("event_ids"):
                s.execute(update(Event).where(Event.id.in_(job.params["event_ids"]),
                                              Event.state == "queued")
                          .values(state="done"))
            outputs["annotations"] = s.scalar(select(func.count()).select_from(Annotation)
                                              .where(Annotation.job_id == job.id)) or 0
        return outputs


# ------------------------------------------------------------------------------- file outputs
def put_output(ctx: Context, prefix: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``prefix/name``: a local folder or ``s3://bucket/prefix``."""
    if prefix.startswith("s3://"):
        bucket, _, key_prefix = prefix[5:].partition("/")
        key = f"{key_prefix.rstrip('/')}/{name}" if key_prefix else name
        _s3_client(ctx.settings).put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"
    folder = Path(prefix).expanduser()
    if not folder.is_absolute():
        folder = ctx.settings.data_dir / "outputs" / folder
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(folder / name)
    return str(folder / name)


def _csv(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def write_daily_counts(ctx: Context, job: Job, prefix: str) -> list[str]:
    """``<service>-counts-YYYY-MM-DD.csv`` (date, label, count) for every day this job touched,
    counting the annotations of ALL jobs of the service (so each file is the full day)."""
    service_id = job.service_id or job.params.get("service_id")
    name = job.params.get("service", f"service-{service_id}")
    day = func.coalesce(Image.captured_at, Image.created_at)
    with ctx.session() as s:
        touched = {(d or utcnow()).date() if hasattr(d, "date") else d for d in s.scalars(
            select(day).join(Annotation, Annotation.image_id == Image.id)
            .where(Annotation.job_id == job.id))}
        rows = s.execute(select(day, Label.name, Annotation.image_id)
                         .join(Annotation, Annotation.image_id == Image.id)
                         .join(Label, Label.id == Annotation.label_id)
                         .join(Job, Job.id == Annotation.job_id)
                         .where(Job.service_id == service_id,
                                Annotation.is_current.is_(True))).all()
    per_day: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for when, label, _ in rows:
        per_day[when.date()][label] += 1
    written = []
    for d in sorted(touched):
        counts = per_day.get(d, {})
        data = _csv([["date", "label", "count"]] +
                    [[d.isoformat(), label, n] for label, n in sorted(counts.items())])
        written.append(put_output(ctx, prefix, f"{name}-counts-{d.isoformat()}.csv", data))
    return written


def write_results(ctx: Context, job: Job, prefix: str) -> list[str]:
    """``<service>-<job id>.csv``: image id, sha256, original name, label, score, ok, error."""
    from aqualens.catalog.tables import JobResult

    name = job.params.get("service", "service")
    with ctx.session() as s:
        rows = s.execute(select(JobResult.image_id, Image.sha256, Image.original_name,
                                JobResult.ok, JobResult.error)
                         .join(Image, Image.id == JobResult.image_id)
                         .where(JobResult.job_id == job.id).order_by(JobResult.image_id)).all()
        best = {}
        for image_id, label, score in s.execute(
                select(Annotation.image_id, Label.name, Annotation.score)
                .join(Label, Label.id == Annotation.label_id)
                .where(Annotation.job_id == job.id)):
            if image_id not in best or (score or 0) > (best[image_id][1] or 0):
                best[image_id] = (label, score)
    data = _csv([["image_id", "sha256", "name", "label", "score", "ok", "error"]] +
                [[i, sha, nm, *best.get(i, ("", "")), ok, err or ""]
                 for i, sha, nm, ok, err in rows])
    return [put_output(ctx, prefix, f"{name}-{job.id}.csv", data)]


# ------------------------------------------------------------------------ sync invocation
def run_service_sync(ctx: Context, service: Service, user: User,
                     files: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Run a service's steps on a few uploaded images in this process and return the results
    directly (nothing is stored but a usage event). Models come warm from the registry cache."""
    import numpy as np
    from PIL import Image as PILImage

    from aqualens.catalog.tables import UsageEvent
    from aqualens.models.registry import load_runtime
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
