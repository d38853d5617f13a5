"""Event-driven services over HTTP: definitions, every trigger kind, duplicates, sync and async
invocation, pause/resume/delete, trigger tokens that survive updates."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from aqualens.catalog.tables import Annotation, Event, UsageEvent
from aqualens.processing.runner import Runner
from aqualens.processing.triggers import TriggerManager
from tests.processing.helpers import (
    add_images,
    png_bytes,
    register_brightness_model,
    wait_state,
)

DEF = """
name: cam-watch
description: brightness of every new camera frame
triggers:
  - {type: collection, collection: cam1}
steps:
  - {model: bright@1.0.0, top_k: 2}
  - {pipeline: image-stats}
outputs:
  annotations: true
  collection: cam1-processed
  files:
    - {type: daily-counts-csv, prefix: counts}
    - {type: results-csv, prefix: runs}
"""
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def model(ctx, tmp_path):
    return register_brightness_model(ctx, tmp_path)


@pytest.fixture
def runner(ctx):
    r = Runner(ctx, poll_s=0.05, heartbeat_s=0.2).start()
    yield r
    r.stop()


def _jobs_done(ctx, job_ids):
    return [wait_state(ctx, j, ("succeeded", "failed", "cancelled")) for j in job_ids]


def test_definitions_are_validated(client, model):
    bad = {
        "name: x\nsteps: []\n": ("steps", "at least 1"),
        "name: x\nsteps: [{model: bright, pipeline: image-stats}]\n": ("steps.0", "exactly one"),
        "name: x\nsteps: [{model: nope@1.0.0}]\n": ("steps.0.model", "no model"),
        "name: x\nsteps: [{pipeline: nope}]\n": ("steps.0.pipeline", "unknown pipeline"),
        "name: x\ntriggers: [{type: folder, collection: c}]\nsteps: [{pipeline: image-stats}]\n":
            ("triggers.0", "needs 'path'"),
        "name: x\ntriggers: [{type: schedule, cron: '99 * * * *'}]\nsteps: [{pipeline: image-stats}]\n":
            ("triggers.0", "outside 0-59"),
        "name: x\ntriggers: [{type: ftp}]\nsteps: [{pipeline: image-stats}]\n":
            ("triggers.0.type", "'collection'"),
        "name: 'a b'\nsteps: [{pipeline: image-stats}]\n": ("name", "letters"),
        "- not a mapping\n": ("definition", "mapping"),
        "name: [unclosed\n": ("definition", "not valid YAML"),
    }
    for text, (field, words) in bad.items():
        r = client.post("/api/v1/services", content=text, headers=YAML)
        assert r.status_code == 422, (text, r.text)
        assert r.json()["field"].startswith(field) and words in r.json()["message"], (text, r.json())
    assert client.post("/api/v1/services", content=b"{", headers={"Content-Type":
                                                                   "application/json"}).status_code == 422


def test_collection_trigger_end_to_end(ctx, client, model, runner):
    from aqualens.ingest import hooks

    r = client.post("/api/v1/services", content=DEF, headers=YAML)
    assert r.status_code == 201, r.text
    token = r.json()["trigger_token"]
    assert token.startswith("aqlt_")
    mgr = TriggerManager(ctx)
    hooks.add_listener(mgr.on_new_images)
    try:
        coll_id, ids = add_images(ctx, [20, 230, 240])
        hooks.fire(ctx, coll_id, ids)
        hooks.fire(ctx, coll_id, ids)  # the same images again: stored once
        with ctx.session() as s:
            assert s.query(Event).count() == 3
        job_ids = mgr.tick()
        assert len(job_ids) == 1 and mgr.tick() == []
    finally:
        hooks.remove_listener(mgr.on_new_images)
    (job,) = _jobs_done(ctx, job_ids)
    assert job["state"] == "succeeded" and job["done"] == 3, job
    mgr.tick()  # closes the events of finished jobs
    with ctx.session() as s:
        assert {e.state for e in s.query(Event)} == {"done"}
        labels = {a.image_id: a.label.name for a in s.query(Annotation).filter_by(job_id=job["id"])}
        assert labels == {ids[0]: "dark", ids[1]: "bright", ids[2]: "bright"}
        usage = s.query(UsageEvent).filter_by(job_id=job["id"]).all()
        assert sum(u.images for u in usage) == 3 and usage[0].service_id == job["service_id"]
    # stats step payload is in the results, files were written
    res = client.get(f"/api/v1/jobs/{job['id']}/results").json()
    assert [s["name"] for s in res[0]["payload"]["steps"]] == ["bright@1.0.0", "image-stats"]
    files = job["outputs"]["files"]
    daily = [f for f in files if "-counts-" in f]
    assert len(daily) == 1
    text = open(daily[0]).read()
    assert "bright,2" in text and "dark,1" in text
    runs = [f for f in files if f.endswith(f"{job['id']}.csv")]
    assert runs and open(runs[0]).read().count("\n") == 4
    svc = client.get("/api/v1/services/cam-watch").json()
    assert svc["events"] == {"done": 3}
    # the processed images were linked into the output collection
    from aqualens.catalog.tables import Collection, CollectionImage
    with ctx.session() as s:
        out = s.query(Collection).filter_by(name="cam1-processed").one()
        assert s.query(CollectionImage).filter_by(collection_id=out.id).count() == 3


def test_catch_up_pause_resume_delete(ctx, client, model, runner):
    client.post("/api/v1/services", content=DEF, headers=YAML)
    assert client.post("/api/v1/services/cam-watch/pause").json()["paused"] is True
    mgr = TriggerManager(ctx)
    add_images(ctx, [10, 200])  # no hook fired: another process ingested them
    assert mgr.tick() == []      # paused: stored, not processed
    with ctx.session() as s:
        assert [e.state for e in s.query(Event)] == ["pending", "pending"]
    assert client.post("/api/v1/services/cam-watch/resume").json()["paused"] is False
    job_ids = mgr.tick()
    assert len(job_ids) == 1
    assert _jobs_done(ctx, job_ids)[0]["done"] == 2
    r = client.delete("/api/v1/services/cam-watch")
    assert r.status_code == 204
    assert client.get("/api/v1/services/cam-watch").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_ids[0]}").json()["service_id"] is None


def test_sync_and_async_invocation(ctx, client, model, runner):
    client.post("/api/v1/services", content=DEF, headers=YAML)
    files = [("file", ("a.png", png_bytes(250), "image/png")),
             ("file", ("b.png", png_bytes(5), "image/png"))]
    r = client.post("/api/v1/services/cam-watch/run", files=files)
    assert r.status_code == 200, r.text
    out = r.json()["results"]
    assert [x["name"] for x in out] == ["a.png", "b.png"]
    assert out[0]["steps"][0]["result"]["top"][0]["label"] == "bright"
    assert out[1]["steps"][1]["result"]["mean"] == pytest.approx(5, abs=0.5)
    bad = client.post("/api/v1/services/cam-watch/run",
                      files=[("file", ("x.png", b"not an image", "image/png"))])
    assert bad.status_code == 422 and "x.png is not a readable image" in bad.json()["message"]
    many = [("file", (f"{n}.png", png_bytes(1), "image/png")) for n in range(17)]
    assert client.post("/api/v1/services/cam-watch/run", files=many).status_code == 413
    assert client.post("/api/v1/services/nope/run", files=files).status_code == 404

    _, ids = add_images(ctx, [100, 120], collection="archive")
    r = client.post("/api/v1/services/cam-watch/jobs", json={"image_ids": ids})
    assert r.status_code == 202 and r.headers["location"].endswith(r.json()["id"])
    assert _jobs_done(ctx, [r.json()["id"]])[0]["done"] == 2
    r = client.post("/api/v1/services/cam-watch/jobs", files=files)
    assert r.status_code == 202
    assert _jobs_done(ctx, [r.json()["id"]])[0]["done"] == 2
    assert client.post("/api/v1/services/cam-watch/jobs", json={}).status_code == 422
    with ctx.session() as s:
        assert s.query(UsageEvent).filter_by(kind="service-run").one().images == 2


def test_folder_trigger(ctx, client, model, runner, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    definition = {"name": "folder-watch", "triggers": [
        {"type": "folder", "path": str(inbox), "collection": "drops", "pattern": "*.png",
         "interval_s": 0.01}], "steps": [{"model": "bright"}]}
    assert client.post("/api/v1/services", json=definition).status_code == 201
    (inbox / "one.png").write_bytes(png_bytes(240))
    (inbox / "skip.txt").write_text("not matched")
    mgr = TriggerManager(ctx)
    mgr.tick()           # first sight: wait until the file has settled
    time.sleep(0.02)
    job_ids = mgr.tick()  # settled: one event, one job
    time.sleep(0.02)
    assert mgr.tick() == []  # same file, same size and mtime: no new event
    (job,) = _jobs_done(ctx, job_ids)
    assert job["state"] == "succeeded" and job["done"] == 1
    with ctx.session() as s:
        ann = s.query(Annotation).filter_by(job_id=job["id"]).one()
        assert ann.label.name == "bright"


def test_schedule_trigger(ctx, client, model, runner):
    _, ids = add_images(ctx, [30, 220], collection="nightly")
    definition = {"name": "nightly", "triggers": [
        {"type": "schedule", "cron": "0 3 * * *", "select": {"collection": "nightly"}},
        {"type": "schedule", "every": "1h"}], "steps": [{"pipeline": "image-stats"}]}
    assert client.post("/api/v1/services", json=definition).status_code == 201
    mgr = TriggerManager(ctx)
    at3 = datetime(2026, 5, 1, 3, 0, 20, tzinfo=UTC)
    job_ids = mgr.tick(now=at3)
    assert mgr.tick(now=at3.replace(second=50)) == []   # same slots: no second run
    assert mgr.tick(now=at3.replace(hour=4, minute=1)) != []  # the hourly slot fires again
    with ctx.session() as s:
        keys = sorted(e.key for e in s.query(Event))
    assert keys == ["schedule:0:2026-05-01T03:00:00+00:00", "schedule:1:2026-05-01T03:00:00+00:00",
                    "schedule:1:2026-05-01T04:00:00+00:00"]
    (job,) = _jobs_done(ctx, job_ids)
    assert job["state"] == "succeeded" and job["done"] == 2


@pytest.mark.s3
@pytest.mark.slow
def test_bucket_notification(tmp_path, s3_server, s3_settings):
    """The real SeaweedFS S3: upload an object, post its S3 event notification (twice) to the
    webhook; the job reads the object from S3, ingests and processes it."""
    from fastapi.testclient import TestClient

    from aqualens.api.app import create_app
    from tests.conftest import make_ctx, make_settings

    ctx, token = make_ctx(make_settings(tmp_path / "data", **s3_settings))
    register_brightness_model(ctx, tmp_path)
    bucket = "aqualens-webhook-" + s3_settings["storage_url"].rsplit("/", 1)[-1].lower()
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="cam1/frame 1.png", Body=png_bytes(250))
    etag = s3.head_object(Bucket=bucket, Key="cam1/frame 1.png")["ETag"].strip('"')
    definition = {"name": "bucket-watch", "triggers": [
        {"type": "s3", "bucket": bucket, "prefix": "cam1/", "collection": "from-s3"}],
        "steps": [{"model": "bright@1.0.0"}]}
    event = {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket},
        "object": {"key": "cam1/frame+1.png", "eTag": etag, "size": 10}}}]}
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client, \
            Runner(ctx, poll_s=0.05) as runner:  # noqa: F841
        r = client.post("/api/v1/services", json=definition)
        trigger_token = r.json()["trigger_token"]
        # an update keeps the trigger token valid (OSCAR lost it)
        definition["steps"][0]["top_k"] = 1
        assert client.put("/api/v1/services/bucket-watch", json=definition).status_code == 200
        hook = "/api/v1/services/bucket-watch/events/s3"
        anon = TestClient(create_app(ctx))
        assert anon.post(hook, json=event).status_code == 401
        assert anon.post(hook + "?token=wrong", json=event).status_code == 401
        assert anon.post(hook, json={"nope": 1},
                         headers={"Authorization": f"Bearer {trigger_token}"}).status_code == 422
        r1 = anon.post(hook, json=event, headers={"Authorization": f"Bearer {trigger_token}"})
        r2 = anon.post(hook + f"?token={trigger_token}", json=event)
        assert r1.status_code == 202 and r1.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
        assert r2.json() == {"accepted": 0, "duplicates": 1, "ignored": 0}
        other = json.loads(json.dumps(event))
        other["Records"][0]["s3"]["object"]["key"] = "elsewhere/x.png"
        assert anon.post(hook, json=other, params={"token": trigger_token}).json()["ignored"] == 1
        job_ids = TriggerManager(ctx).tick()
        (job,) = _jobs_done(ctx, job_ids)
        assert job["state"] == "succeeded" and job["done"] == 1, job
        assert job["params"]["steps"][0]["top_k"] == 1
        with ctx.session() as s:
            ann = s.query(Annotation).filter_by(job_id=job["id"]).one()
            assert ann.label.name == "bright" and ann.image.original_name == "cam1/frame 1.png" \
                if hasattr(ann, "image") else ann.label.name == "bright"
            ev = s.query(Event).one()
            assert ev.payload["image_ids"] == [ann.image_id]
        anon.close()
