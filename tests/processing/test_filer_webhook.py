"""The SeaweedFS filer's own webhook (``[notification.webhook]`` in ``notification.toml``) calling
a running AquaLens: a real ``weed mini`` posts its events to a real HTTP server (uvicorn), the
trigger stores one event per object, the runner processes it. And the payloads it sends, good and
bad, through the route."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from contextlib import ExitStack
from typing import Any

import pytest

from aqualens.catalog.tables import Annotation, Event, Image
from aqualens.processing.runner import Runner
from aqualens.processing.triggers import TriggerManager, s3_records
from tests.processing.helpers import png_bytes, register_brightness_model, wait_state

BUCKET = "fish-cams"
KEY = "cam1/frame 1.png"
DEFINITION = {"name": "filer-watch", "triggers": [
    {"type": "s3", "bucket": BUCKET, "prefix": "cam1/", "collection": "from-filer"}],
    "steps": [{"model": "bright@1.0.0"}]}
HOOK = "/api/v1/services/filer-watch/events/s3"

# What `weed mini` needs to call AquaLens (docs/processing.md shows the same file). Retries are
# short so that a wrong answer would show in the test's time rather than hide in a 30 s backoff.
NOTIFICATION_TOML = """
[notification.webhook]
enabled = true
endpoint = "{url}{hook}"
bearer_token = "{token}"
timeout_seconds = 5
max_retries = 1
backoff_seconds = 1
max_backoff_seconds = 1
"""

# A create event exactly as SeaweedFS 4.48's filer posted it for an S3 PUT of "abc" (captured
# from `weed mini` with a [notification.webhook]; only bucket and key renamed).
CREATE = {
    "event_type": "create", "key": f"/buckets/{BUCKET}/{KEY}",
    "message": {
        "new_entry": {
            "name": "frame 1.png",
            "chunks": [{"size": 3, "modified_ts_ns": 1795253311844405099,
                        "e_tag": "kAFQmDzST7DWlj99KOF/cg==",
                        "fid": {"volume_id": 2, "file_key": 2, "cookie": 355236033}}],
            "attributes": {"file_size": 3, "mtime": 1795253311, "file_mode": 432,
                           "crtime": 1795253311, "mime": "text/plain; charset=utf-8",
                           "md5": "kAFQmDzST7DWlj99KOF/cg==", "inode": 4800881810851443695,
                           "ctime": 1795253311, "atime": 1795253311},
            "extended": {"Seaweed-X-Amz-ETag": "OTAwMTUwOTgzY2QyNGZiMGQ2OTYzZjdkMjhlMTdmNzI=",
                         "Seaweed-X-Amz-Owner": "YXF1YWxlbnMtdGVzdHM="}},
        "delete_chunks": True, "new_parent_path": f"/buckets/{BUCKET}/cam1",
        "signatures": [-327584078]}}
ABC_MD5 = hashlib.md5(b"abc").hexdigest()  # the S3 ETag


def _event(event_type: str = "create", path: str = f"/buckets/{BUCKET}/{KEY}",
           **entry: Any) -> dict[str, Any]:
    """CREATE changed to another kind of event, path or entry."""
    body = copy.deepcopy(CREATE)
    body["event_type"], body["key"] = event_type, path
    parent, _, name = path.rpartition("/")
    body["message"]["new_parent_path"] = parent or "/"
    body["message"]["new_entry"].update(name=name, **entry)
    if event_type == "delete":
        body["message"]["old_entry"] = body["message"].pop("new_entry")
        del body["message"]["new_parent_path"]
    return body


class _Recorder:
    """ASGI wrapper remembering each webhook delivery: (filer key, event_type, status, answer)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str | None, str | None, int, Any]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events/s3"):
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        answer: list[bytes] = []
        status = [0]

        async def recv() -> dict:
            message = await receive()
            request.append(message.get("body", b""))
            return message

        async def snd(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, recv, snd)
        body = json.loads(b"".join(request) or b"{}")
        self.calls.append((body.get("key"), body.get("event_type"), status[0],
                           json.loads(b"".join(answer) or b"null")))

    def delivered(self, path: str, event_type: str) -> bool:
        return any(k == path and e == event_type for k, e, _, _ in self.calls)


def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.05)


def _events(ctx: Any) -> list[tuple[str, str]]:
    with ctx.session() as s:
        return [(e.key, e.state) for e in s.query(Event).order_by(Event.id)]


@pytest.mark.s3
def test_filer_webhook_live(tmp_path):
    """A real ``weed mini`` whose filer posts to AquaLens over HTTP: an S3 PUT under the
    trigger's prefix becomes one event and one processed image; the same content put again is a
    duplicate; a delete, other prefixes and the filer's internal paths are answered 202 and
    ignored."""
    import httpx

    from aqualens.api.app import create_app
    from aqualens.catalog.context import Context
    from tests.conftest import make_ctx, make_settings
    from tests.servers import serve_app, start_s3_server

    ctx, admin_token = make_ctx(make_settings(tmp_path / "data"))
    register_brightness_model(ctx, tmp_path)
    app = _Recorder(create_app(ctx))
    with ExitStack() as stack:  # unwinds weed first, then uvicorn
        url = stack.enter_context(serve_app(app))
        http = stack.enter_context(httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10))
        r = http.post("/api/v1/services", json=DEFINITION)
        assert r.status_code == 201, r.text
        toml = NOTIFICATION_TOML.format(url=url, hook=HOOK, token=r.json()["trigger_token"])
        weed = start_s3_server({"notification.toml": toml})
        stack.callback(weed.stop)

        s3 = weed.client()
        s3.create_bucket(Bucket=BUCKET)
        data = png_bytes(250)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
        s3.put_object(Bucket=BUCKET, Key="elsewhere/x.png", Body=png_bytes(10))
        _until(lambda: app.delivered(f"/buckets/{BUCKET}/{KEY}", "create")
               and app.delivered(f"/buckets/{BUCKET}/elsewhere/x.png", "create"),
               "create events from the filer")
        etag = hashlib.md5(data).hexdigest()  # the S3 ETag
        assert _events(ctx) == [(f"s3:{BUCKET}/{KEY}@{etag}", "pending")]

        # The job downloads the object from this weed's S3 gateway.
        run_ctx = Context(make_settings(tmp_path / "data", s3={
            "endpoint_url": weed.endpoint_url, "access_key": weed.access_key,
            "secret_key": weed.secret_key}))
        with Runner(run_ctx, poll_s=0.05):
            job_ids = TriggerManager(run_ctx).tick()
            (job,) = [wait_state(run_ctx, j, ("succeeded", "failed", "cancelled"), timeout=15)
                      for j in job_ids]
        assert job["state"] == "succeeded" and job["done"] == 1, job
        with ctx.session() as s:
            ann = s.query(Annotation).filter_by(job_id=job["id"]).one()
            assert ann.label.name == "bright"
            assert s.get(Image, ann.image_id).original_name == KEY

        # The same content again: the filer says "update", the identity (ETag) is unchanged.
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
        _until(lambda: app.delivered(f"/buckets/{BUCKET}/{KEY}", "update"), "the update event")
        s3.delete_object(Bucket=BUCKET, Key=KEY)
        _until(lambda: app.delivered(f"/buckets/{BUCKET}/{KEY}", "delete"), "the delete event")
        assert _events(ctx) == [(f"s3:{BUCKET}/{KEY}@{etag}", "done")]
        assert TriggerManager(run_ctx).tick() == []

        answers = {(k, e): a for k, e, _, a in app.calls}
        assert answers[(f"/buckets/{BUCKET}/{KEY}", "update")] == \
            {"accepted": 0, "duplicates": 1, "ignored": 0}
        assert answers[(f"/buckets/{BUCKET}/{KEY}", "delete")] == \
            {"accepted": 0, "duplicates": 0, "ignored": 1}
        assert answers[(f"/buckets/{BUCKET}/elsewhere/x.png", "create")]["ignored"] == 1
        # Every delivery, the filer's own bookkeeping (/buckets/.system/...) and directories
        # included, was answered 202: nothing for the filer to retry.
        assert any(k.startswith("/buckets/.system/") for k, _, _, _ in app.calls)
        assert {status for _, _, status, _ in app.calls} == {202}, app.calls
        assert "failed to send message to webhook" not in weed.log.read_text(errors="replace")


def test_filer_payloads(client, ctx, tmp_path):
    """The filer's payloads through the route: what counts, what is ignored, what is refused."""
    register_brightness_model(ctx, tmp_path)
    r = client.post("/api/v1/services", json=DEFINITION)
    token = {"Authorization": f"Bearer {r.json()['trigger_token']}"}

    def post(body: Any) -> tuple[int, Any]:
        resp = client.post(HOOK, json=body, headers=token)
        return resp.status_code, resp.json()

    assert post(CREATE) == (202, {"accepted": 1, "duplicates": 0, "ignored": 0})
    assert post(_event("update")) == (202, {"accepted": 0, "duplicates": 1, "ignored": 0})
    new_content = _event("update", extended={"Seaweed-X-Amz-ETag": "YmJi"})  # "bbb"
    assert post(new_content) == (202, {"accepted": 1, "duplicates": 0, "ignored": 0})
    ignored = {"accepted": 0, "duplicates": 0, "ignored": 1}
    for body in (_event("delete"),
                 _event("create", f"/buckets/{BUCKET}/cam1", is_directory=True),
                 _event("create", f"/buckets/{BUCKET}/elsewhere/x.png"),
                 _event("create", "/buckets/.system/owners/aqualens/fish-cams"),
                 _event("create", f"/buckets/{BUCKET}/.uploads/0a1b/0001_x.part"),
                 _event("update", "/etc/iam/identity.json"),
                 _event("create", "/topics/.system/log/2026-05-01/00-00.abcd"),
                 _event("create", "/buckets")):
        assert post(body) == (202, ignored), body
    with ctx.session() as s:
        keys = sorted(e.key for e in s.query(Event))
    assert keys == [f"s3:{BUCKET}/{KEY}@{ABC_MD5}", f"s3:{BUCKET}/{KEY}@bbb"]

    # A missing part of the real format is refused with 422 naming it, never a 500.
    no_entry = copy.deepcopy(CREATE)
    del no_entry["message"]["new_entry"]
    no_attrs = copy.deepcopy(CREATE)
    del no_attrs["message"]["new_entry"]["attributes"]
    no_key = copy.deepcopy(CREATE)
    del no_key["key"]
    for body, field in ((no_entry, "message.new_entry"),
                        (no_attrs, "message.new_entry.attributes"),
                        (no_key, "key"),
                        ({**CREATE, "message": "x"}, "message"),
                        ({**CREATE, "event_type": "moved"}, "event_type"),
                        ({**CREATE, "message": {**CREATE["message"], "new_entry": []}},
                         "message.new_entry"),
                        ({"nope": 1}, "body")):
        status, answer = post(body)
        assert status == 422 and answer["field"] == field, (field, answer)


def test_filer_record_shapes():
    """Renames name the new path; filers before ``event_type`` still work; no identity is ever
    empty; AWS ``Records`` are unchanged."""
    (rec,) = s3_records(CREATE)
    assert rec == {"bucket": BUCKET, "key": KEY, "etag": ABC_MD5,
                   "sequencer": "1795253311.0", "size": 3}
    rename = _event("rename", f"/buckets/{BUCKET}/incoming/tmp.png")
    rename["message"]["new_parent_path"] = f"/buckets/{BUCKET}/cam1"
    rename["message"]["new_entry"]["name"] = "moved.png"
    rename["message"]["old_entry"] = copy.deepcopy(rename["message"]["new_entry"])
    assert [r["key"] for r in s3_records(rename)] == ["cam1/moved.png"]
    legacy = {"key": CREATE["key"], "message": {"new_entry": CREATE["message"]["new_entry"]}}
    assert s3_records(legacy)[0]["key"] == KEY
    assert s3_records({"key": CREATE["key"], "message": {"old_entry": {"name": "x"}}}) == []
    bare = _event("create")
    bare["message"]["new_entry"].pop("extended")
    assert s3_records(bare)[0]["etag"] == ABC_MD5  # from the md5 attribute
    bare["message"]["new_entry"]["attributes"] = {"mtime": 17, "mtime_ns": 5}
    assert s3_records(bare)[0]["etag"] == "" and s3_records(bare)[0]["sequencer"] == "17.5"
    aws = {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {
        "bucket": {"name": BUCKET}, "object": {"key": "cam1/frame+1.png", "eTag": ABC_MD5}}},
        {"eventName": "s3:ObjectRemoved:Delete", "s3": {}}]}
    assert s3_records(aws) == [{"bucket": BUCKET, "key": KEY, "etag": ABC_MD5, "sequencer": "",
                                "size": None}]
