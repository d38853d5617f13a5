"""The ``service`` job kind: the images an event stands for (an uploaded file, an S3 object, a
watched file, a schedule's selection), the service's steps run over them on Dask workers, and
the outputs: annotations, an output collection, and CSV files in a folder or under an S3 prefix.

Definitions, events and dispatch are in :mod:`aqualens.processing.services`.
"""

from __future__ import annotations

import csv
import io
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
from aqualens.core.errors import ValidationError
from aqualens.processing import jobs
from aqualens.processing.kinds import BatchJobKind
from aqualens.processing.services import job_params

_suppress = threading.local()  # services whose own ingest must not re-trigger them


# ------------------------------------------------------------------------ fetching inputs
def _s3_client(settings) -> Any:
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    return boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                      s3={"addressing_style": "path"}))


def suppressed_services() -> set[int]:
    """Services ingesting their own inputs in this thread: their collection trigger must not
    fire again for those images."""
    return getattr(_suppress, "ids", set())


def ingest_for_service(ctx: Context, service_id: int, collection: str, owner_id: int,
                       files: list[tuple[str, Path]]) -> list[int]:
    """Ingest ``files`` (name, path) into ``collection`` for a service; returns image ids."""
    from aqualens.ingest.pipeline import ingest_files, resolve_collection

    coll_id = resolve_collection(ctx, collection, owner_id)
    active = suppressed_services()
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
            ids = ingest_for_service(ctx, params["service_id"], trigger["collection"], owner_id,
                          [(payload["key"], path)])
    elif payload.get("type") == "file":
        path = Path(payload["path"])
        if not path.is_file():
            raise ValidationError(f"{path} has gone", field="path")
        ids = ingest_for_service(ctx, params["service_id"], trigger["collection"], owner_id,
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
            params = {**job_params(session, service, session.get(User, service.owner_id)),
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
