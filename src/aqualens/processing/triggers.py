"""Triggers that turn the world into stored events, and the dispatcher that turns events into jobs.

:class:`TriggerManager` runs one background thread per instance (started by ``aqualens serve``
and ``aqualens runner``). Each tick (``tick_s``) it:

- **collection** triggers: records an event per image newly added to the watched collection.
  The ingest hook (``aqualens.ingest.hooks``) makes this immediate for ingests in this process;
  a catch-up query (images linked after the service was created without an event) covers
  ingests by other processes (a CLI upload, another API replica) and anything missed while down.
- **folder** triggers: polls the folder every ``interval_s``; a file whose size and mtime have
  settled (unchanged for one poll) becomes an event keyed by path, size and mtime.
- **schedule** triggers: one event per time slot (``every: 1h`` or ``cron: "0 3 * * *"``),
  keyed by the slot, so a restart inside a slot does not run it twice.
- **s3** triggers arrive through the webhook route (``POST /api/v1/services/{name}/events/s3``).
- then dispatches pending events of active services as jobs (``services.dispatch_pending``).

Every event is a row with a unique (service, key) before any work starts.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, and_, cast, literal, select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import Collection, CollectionImage, Event, Service
from aqualens.processing import services as svc
from aqualens.processing.service_kind import suppressed_services
from aqualens.processing.servicedef import ServiceDef, parse_cron, parse_every

log = logging.getLogger(__name__)


def schedule_slot(trigger: dict, now: datetime) -> str | None:
    """The slot ``now`` falls in for a schedule trigger, or None (cron: minute not matching)."""
    if trigger.get("every"):
        period = parse_every(trigger["every"])
        start = int(now.timestamp() // period * period)
        return datetime.fromtimestamp(start, UTC).isoformat()
    minute, hour, dom, month, dow = parse_cron(trigger["cron"])
    if (now.minute in minute and now.hour in hour and now.day in dom and now.month in month
            and (now.isoweekday() % 7) in dow):
        return now.replace(second=0, microsecond=0).isoformat()
    return None


class TriggerManager:
    """Watches triggers of every service of an instance and dispatches events to jobs."""

    def __init__(self, ctx: Context, *, tick_s: float = 1.0) -> None:
        self.ctx = ctx
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_files: dict[str, tuple[int, int]] = {}
        self._last_poll: dict[str, float] = {}

    def start(self) -> TriggerManager:
        from aqualens.ingest import hooks

        hooks.add_listener(self.on_new_images)
        self._thread = threading.Thread(target=self._loop, name="aqualens-triggers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        from aqualens.ingest import hooks

        hooks.remove_listener(self.on_new_images)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    # -------------------------------------------------------------------- collection hook
    def on_new_images(self, ctx: Any, collection_id: int, image_ids: list[int]) -> None:
        """Ingest listener: store an event per new image for services watching the collection."""
        if getattr(ctx, "db_url", None) != self.ctx.db_url:
            return  # another instance in this process (tests, notebooks)
        suppressed = suppressed_services()
        with self.ctx.session() as s:
            coll = s.get(Collection, collection_id)
            if coll is None:
                return
            for service in self._services(s):
                if service.id in suppressed:
                    continue
                for trig in service.definition.get("triggers", []):
                    if trig["type"] == "collection" and self._matches(coll, trig, service):
                        for image_id in image_ids:
                            svc.record_event(s, service.id, f"image:{image_id}",
                                             {"type": "image", "image_ids": [image_id],
                                              "collection_id": collection_id})
        self._wake.set()

    @staticmethod
    def _matches(coll: Collection, trig: dict, service: Service) -> bool:
        ref = str(trig.get("collection"))
        if ref.isdigit():
            return coll.id == int(ref)
        return coll.name == ref and coll.owner_id == service.owner_id

    @staticmethod
    def _services(session) -> list[Service]:
        return list(session.scalars(select(Service)))

    # ---------------------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("trigger tick failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def tick(self, now: datetime | None = None) -> list[str]:
        """One round: catch up collections, poll folders, fire schedules, dispatch events."""
        now = now or datetime.now(UTC)
        with self.ctx.session() as s:
            for service in self._services(s):
                try:
                    d = ServiceDef.model_validate(service.definition)
                except Exception:  # noqa: BLE001 - a stored definition from an older version
                    continue
                for n, trig in enumerate(d.triggers):
                    t = trig.model_dump(mode="json")
                    if trig.type == "collection":
                        self._catch_up(s, service, t)
                    elif trig.type == "folder":
                        self._poll_folder(s, service, n, t)
                    elif trig.type == "schedule":
                        slot = schedule_slot(t, now)
                        if slot is not None and not service.paused:
                            svc.record_event(s, service.id, f"schedule:{n}:{slot}",
                                             {"type": "schedule", "trigger": n, "slot": slot})
        return svc.dispatch_pending(self.ctx)

    def _catch_up(self, s, service: Service, trig: dict) -> None:
        ref = str(trig["collection"])
        q = select(Collection).where(Collection.id == int(ref)) if ref.isdigit() else \
            select(Collection).where(Collection.name == ref,
                                     Collection.owner_id == service.owner_id)
        coll = s.scalar(q)
        if coll is None:
            return
        key = literal("image:") + cast(CollectionImage.image_id, String)
        missing = s.scalars(
            select(CollectionImage.image_id)
            .outerjoin(Event, and_(Event.service_id == service.id, Event.key == key))
            .where(CollectionImage.collection_id == coll.id,
                   CollectionImage.added_at >= service.created_at, Event.id.is_(None))
            .limit(10000)).all()
        for image_id in missing:
            svc.record_event(s, service.id, f"image:{image_id}",
                             {"type": "image", "image_ids": [image_id],
                              "collection_id": coll.id})

    def _poll_folder(self, s, service: Service, n: int, trig: dict) -> None:
        tag = f"{service.id}:{n}"
        if time.monotonic() - self._last_poll.get(tag, 0.0) < trig["interval_s"]:
            return
        self._last_poll[tag] = time.monotonic()
        folder = Path(trig["path"])
        if not folder.is_dir():
            return
        for entry in os.scandir(folder):
            if not entry.is_file() or entry.name.startswith(".") or \
                    not fnmatch.fnmatch(entry.name, trig["pattern"]):
                continue
            st = entry.stat()
            sig = (st.st_size, st.st_mtime_ns)
            key = f"{tag}:{entry.path}"
            if self._seen_files.get(key) != sig:  # still being written, or new: wait one poll
                self._seen_files[key] = sig
                continue
            svc.record_event(s, service.id,
                             f"file:{entry.path}@{st.st_size}:{st.st_mtime_ns}",
                             {"type": "file", "trigger": n, "path": entry.path,
                              "size": st.st_size})


# Where the SeaweedFS filer keeps S3 buckets; entries elsewhere (/etc/..., /topics/...) and the
# gateway's own bookkeeping (/buckets/.system/..., multipart parts under <bucket>/.uploads/) are
# filer internals, answered 202 and ignored: a 4xx would only make the filer retry them.
_FILER_BUCKETS = "buckets"
_FILER_INTERNAL_KEYS = (".uploads/",)
_FILER_EVENTS = ("create", "update", "delete", "rename")
_FILER_SHAPE = ('{"key": "/buckets/<bucket>/<key>", "event_type": "create", '
                '"message": {"new_entry": {"name": ..., "attributes": {...}}, '
                '"new_parent_path": "/buckets/<bucket>/..."}}')


def _b64_text(value: Any) -> str:
    """A filer ``bytes`` field (JSON base64) as text; '' when it is not one."""
    import base64
    import binascii

    if not isinstance(value, str) or not value:
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _b64_hex(value: Any) -> str:
    import base64
    import binascii

    if not isinstance(value, str) or not value:
        return ""
    try:
        return base64.b64decode(value, validate=True).hex()
    except binascii.Error:
        return ""


def _filer_record(body: dict[str, Any]) -> dict[str, Any] | None:
    """The object a SeaweedFS filer webhook event (``[notification.webhook]``) created or changed,
    or None when the event is no such thing (a deletion, a directory, a filer-internal path).

    The filer posts ``{"key": <full path>, "event_type": "create" | "update" | "delete" |
    "rename", "message": <filer_pb.EventNotification as JSON>}``; for a rename ``key`` is the old
    path and the new one is ``new_parent_path`` + ``new_entry.name``.
    """
    from aqualens.core.errors import ValidationError

    msg = body.get("message")
    if not isinstance(msg, dict):
        raise ValidationError("message must be the filer's event notification object",
                              field="message", valid=_FILER_SHAPE)
    event = body.get("event_type")
    if event is None:  # filers before event_type: infer it the way the filer's filter does
        event = "delete" if msg.get("old_entry") and not msg.get("new_entry") else "create"
    elif event not in _FILER_EVENTS:
        raise ValidationError(f"unknown filer event_type {event!r}", field="event_type",
                              valid=", ".join(_FILER_EVENTS))
    if event == "delete":
        return None
    entry = msg.get("new_entry")
    if not isinstance(entry, dict):
        raise ValidationError(f"a {event} event needs message.new_entry",
                              field="message.new_entry", valid=_FILER_SHAPE)
    if entry.get("is_directory"):
        return None
    parent, name = msg.get("new_parent_path"), entry.get("name")
    path = (f"{parent.rstrip('/')}/{name}" if isinstance(parent, str) and parent
            and isinstance(name, str) and name else body["key"])
    parts = path.strip("/").split("/", 2)
    if len(parts) < 3 or parts[0] != _FILER_BUCKETS or parts[1].startswith(".") \
            or not parts[2] or path.endswith("/") or parts[2].startswith(_FILER_INTERNAL_KEYS):
        return None
    attrs = entry.get("attributes")
    if not isinstance(attrs, dict):
        raise ValidationError("the new entry has no attributes",
                              field="message.new_entry.attributes",
                              valid="an object with md5, mtime, file_size")
    extended = entry.get("extended") if isinstance(entry.get("extended"), dict) else {}
    # The S3 ETag the gateway stored (hex MD5, '-N' for multipart): the same identity an AWS
    # Records event carries, so one object reported both ways is stored once.
    etag = (_b64_text(extended.get("Seaweed-X-Amz-ETag")) or _b64_hex(attrs.get("md5"))).strip('"')
    mtime = f"{attrs.get('mtime', '')}.{attrs.get('mtime_ns', 0)}" if "mtime" in attrs else ""
    if not etag and not mtime:
        raise ValidationError("the new entry has neither md5 nor mtime",
                              field="message.new_entry.attributes",
                              valid="an object with md5 or mtime")
    return {"bucket": parts[1], "key": parts[2], "etag": etag, "sequencer": mtime,
            "size": attrs.get("file_size")}


def _s3_events(body: Any) -> tuple[list[dict[str, Any]], int]:
    """(objects created, number of events that were not object creations)."""
    from urllib.parse import unquote_plus

    from aqualens.core.errors import ValidationError

    out: list[dict[str, Any]] = []
    skipped = 0
    if isinstance(body, dict) and isinstance(body.get("Records"), list):
        for n, rec in enumerate(body["Records"]):
            try:
                name = str(rec.get("eventName", ""))
                if name and "ObjectCreated" not in name:
                    skipped += 1
                    continue
                obj = rec["s3"]["object"]
                out.append({"bucket": rec["s3"]["bucket"]["name"],
                            "key": unquote_plus(obj["key"]),
                            "etag": obj.get("eTag") or obj.get("etag") or "",
                            "sequencer": obj.get("sequencer") or "",
                            "size": obj.get("size")})
            except (KeyError, TypeError, AttributeError):
                raise ValidationError(f"Records.{n} is not an S3 event record",
                                      field=f"Records.{n}",
                                      valid="{eventName, s3: {bucket: {name}, object: {key}}}") \
                    from None
        return out, skipped
    if isinstance(body, dict) and ("message" in body or "event_type" in body):
        if not isinstance(body.get("key"), str) or not body["key"]:
            raise ValidationError("a filer event needs the entry's path in 'key'", field="key",
                                  valid=_FILER_SHAPE)
        rec = _filer_record(body)
        return ([rec], 0) if rec else ([], 1)
    raise ValidationError("body is not an S3 event notification", field="body",
                          valid='{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {...}}]}'
                                ' or a SeaweedFS filer webhook ' + _FILER_SHAPE)


def s3_records(body: Any) -> list[dict[str, Any]]:
    """Objects created or replaced, from an S3 event notification (AWS/MinIO ``Records``) or a
    SeaweedFS filer webhook: ``{bucket, key, etag, sequencer, size}`` each. Deletions,
    directories and filer-internal paths give none; a malformed body raises ValidationError
    naming the field."""
    return _s3_events(body)[0]


def accept_s3_notification(ctx: Context, service: Service, body: Any) -> dict[str, Any]:
    """Store one event per created object matching an s3 trigger; duplicates are ignored.

    The event key is the object and its identity (ETag, else the filer's mtime), so the same
    content put again is a duplicate, and changed content is a new event."""
    d = ServiceDef.model_validate(service.definition)
    records, ignored = _s3_events(body)
    accepted = duplicates = 0
    with ctx.session() as s:
        for rec in records:
            n = next((i for i, t in enumerate(d.triggers) if t.type == "s3" and
                      t.bucket == rec["bucket"] and rec["key"].startswith(t.prefix)), None)
            if n is None:
                ignored += 1
                continue
            key = f"s3:{rec['bucket']}/{rec['key']}@{rec['etag'] or rec['sequencer']}"
            if svc.record_event(s, service.id, key, {"type": "s3", "trigger": n, **rec}):
                accepted += 1
            else:
                duplicates += 1
    return {"accepted": accepted, "duplicates": duplicates, "ignored": ignored}
