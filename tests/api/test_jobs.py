"""Jobs over HTTP: create, list with filters, get, cancel, retry, logs, results, predict,
compare (JSON and PNG), and bad input."""

from __future__ import annotations

import pytest

from aqualens.processing.runner import Runner
from tests.processing.helpers import add_images, register_brightness_model, wait_state


@pytest.fixture
def runner(ctx):
    r = Runner(ctx, poll_s=0.05, heartbeat_s=0.2).start()
    yield r
    r.stop()


def test_job_lifecycle_over_http(ctx, client, anon_client, runner):
    _, ids = add_images(ctx, [40, 90], missing_blob=(1,))
    r = client.post("/api/v1/jobs", json={"kind": "image-stats",
                                          "params": {"collection": "cam1"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/jobs/{job_id}"
    job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and (job["done"], job["failed"], job["total"]) == (1, 1, 2)
    got = client.get(f"/api/v1/jobs/{job_id}").json()
    assert got["state"] == "succeeded" and got["rate_per_s"] > 0 and got["eta_s"] is None
    assert [j["id"] for j in client.get("/api/v1/jobs?state=succeeded&kind=image-stats").json()] \
        == [job_id]
    assert client.get("/api/v1/jobs?state=running").json() == []
    failed = client.get(f"/api/v1/jobs/{job_id}/results?ok=false").json()
    assert failed[0]["image_id"] == ids[1] and "not in the store" in failed[0]["error"]
    logs = client.get(f"/api/v1/jobs/{job_id}/logs").json()
    assert logs[-1]["message"].startswith("succeeded")
    assert client.get(f"/api/v1/jobs/{job_id}/logs?after={logs[-1]['id']}").json() == []
    r = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already succeeded" in r.json()["message"]
    r = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert r.status_code == 409 and r.json()["field"] == "state"
    # private: the anonymous caller sees nothing
    assert anon_client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert anon_client.get("/api/v1/jobs").json() == []
    assert anon_client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 401


def test_cancel_queued_then_retry(ctx, client, runner):
    add_images(ctx, [1, 2, 3])
    runner.stop()  # nobody runs jobs: the job stays queued
    job_id = client.post("/api/v1/jobs", json={"kind": "image-stats",
                                               "params": {"collection": "cam1"}}).json()["id"]
    r = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert r.status_code == 202 and r.json()["state"] == "queued"
    with Runner(client.app.state.ctx, poll_s=0.05):
        job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and job["done"] == 3


def test_bad_job_requests(client):
    cases = [
        ({"kind": "nope", "params": {}}, "kind", "unknown job kind"),
        ({"kind": "image-stats", "params": {}}, "image_ids/collection/query", "exactly one"),
        ({"kind": "image-stats", "params": {"image_ids": "1,2"}}, "image_ids", "list of integers"),
        ({"kind": "image-stats", "params": {"image_ids": ["a"]}}, "image_ids", "integers"),
        ({"kind": "image-stats", "params": {"image_ids": [2**40]}}, "image_ids", "2147483647"),
        ({"params": {}}, "kind", "Field required"),
    ]
    for body, field, words in cases:
        r = client.post("/api/v1/jobs", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["field"] == field and words in r.json()["message"], r.json()
    assert client.get("/api/v1/jobs/nope").status_code == 404
    r = client.get("/api/v1/jobs?state=sleeping")
    assert r.status_code == 422 and r.json()["field"] == "state"
    assert client.get("/api/v1/jobs?limit=0").status_code == 422
    r = client.post("/api/v1/predict", json={"model": "nope", "collection": "c"})
    assert r.status_code == 404 and r.json()["field"] == "model"
    r = client.post("/api/v1/predict", json={"collection": "c"})
    assert r.status_code == 422 and r.json()["field"] == "model"
    for field, value in (("chunk_size", 0), ("chunk_size", 10**6), ("chunk_size", "x"),
                         ("batch_size", 5000)):
        r = client.post("/api/v1/predict", json={"model": "nope", "collection": "c",
                                                 field: value})
        assert r.status_code in (404, 422), r.text


def test_predict_and_compare(ctx, client, runner, tmp_path):
    add_images(ctx, [10, 100, 200])
    register_brightness_model(ctx, tmp_path, "1.0.0")
    register_brightness_model(ctx, tmp_path, "2.0.0", threshold_shift=-0.15)
    a = client.post("/api/v1/predict", json={"model": "bright@1.0.0", "collection": "cam1"})
    b = client.post("/api/v1/predict", json={"model": "bright@2.0.0",
                                             "query": {"collection": "cam1"}})
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    a, b = a.json()["id"], b.json()["id"]
    assert wait_state(ctx, a, ("succeeded", "failed"))["state"] == "succeeded"
    assert wait_state(ctx, b, ("succeeded", "failed"))["state"] == "succeeded"
    report = client.get(f"/api/v1/compare?job_a={a}&job_b={b}").json()
    assert report["common_images"] == 3 and report["changed_count"] == 1
    assert report["agreement"] == pytest.approx(2 / 3)
    png = client.get(f"/api/v1/compare?job_a={a}&job_b={b}", headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert client.get(f"/api/v1/compare?job_a={a}&job_b=nope").status_code == 404
    assert client.get(f"/api/v1/compare?job_a={a}").status_code == 422
