"""REST: dataset versions (freeze, list, show, manifest, diff, frozen), train, evaluate."""

from __future__ import annotations

import hashlib

from aqualens.catalog.users import get_admin
from aqualens.processing.runner import run_job_now
from tests.training.helpers import make_classify_collection


def _admin(ctx):  # noqa: ANN001, ANN202
    with ctx.session() as s:
        user = get_admin(s)
        s.expunge(user)
    return user


def test_dataset_routes(ctx, client, anon_client):
    make_classify_collection(ctx, _admin(ctx), n=12)
    r = client.post("/api/v1/datasets", json={"name": "vig", "collection": "vignettes",
                                              "split": "80/10/10", "seed": 2})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ref"] == "vig@1" and body["images"] == 12 and body["verified"]
    assert client.get("/api/v1/datasets").json()[0]["ref"] == "vig@1"
    shown = client.get("/api/v1/datasets/vig@1?manifest=true").json()
    assert len(shown["manifest"]["images"]) == 12
    raw = client.get("/api/v1/datasets/vig@1/manifest")
    assert hashlib.sha256(raw.content).hexdigest() == body["manifest_sha256"]
    names = [rec["name"] for rec in shown["manifest"]["images"]]
    r2 = client.post("/api/v1/datasets", json={"name": "vig", "collection": "vignettes",
                                               "splits": {"train": names[:10],
                                                          "test": names[10:]}})
    assert r2.status_code == 201 and r2.json()["splits"] == {"train": 10, "test": 2}
    assert client.get("/api/v1/datasets/vig@1/diff/vig@2").json()["images_added"] == []
    # frozen: any change is refused
    r = client.patch("/api/v1/datasets/vig@1", json={"description": "x"})
    assert r.status_code == 409 and "frozen" in r.json()["message"]
    # bad input: named field, 4xx
    r = client.post("/api/v1/datasets", json={"name": "vig", "collection": "vignettes",
                                              "split": {"train": 0.5}})
    assert r.status_code == 422 and r.json()["field"] == "fractions"
    r = client.post("/api/v1/datasets", json={"name": "a b", "collection": "vignettes"})
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = client.post("/api/v1/datasets", json={"name": "v", "collection": "vignettes",
                                              "splits": {"train": ["ghost.png"]}})
    assert r.status_code == 422 and "ghost.png" in r.json()["message"]
    assert client.get("/api/v1/datasets/vig@7").status_code == 404
    assert anon_client.get("/api/v1/datasets/vig@1").status_code == 404   # private
    assert anon_client.post("/api/v1/datasets", json={"name": "x"}).status_code == 401
    assert client.delete("/api/v1/datasets/vig@2").json()["deleted"] == "vig@2"


def test_train_and_evaluate_routes(ctx, client):
    make_classify_collection(ctx, _admin(ctx), n=30)
    assert client.post("/api/v1/datasets", json={"name": "vig", "collection": "vignettes"}
                       ).status_code == 201
    r = client.post("/api/v1/train", json={"dataset": "vig@1", "epochs": 1, "input_size": 32,
                                           "options": {"threads": 1, "batch_size": 8}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "train" and r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    run_job_now(ctx, job["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done["error"]
    model_id = done["outputs"]["model_id"]
    r = client.post(f"/api/v1/models/{model_id}/evaluate", json={"dataset": "vig@1",
                                                                 "split": "test"})
    assert r.status_code == 200 and "balanced_accuracy" in r.json()["overall"]
    # the model's lineage keeps the dataset: deleting it is refused
    assert client.delete("/api/v1/datasets/vig@1").status_code == 409
    r = client.post("/api/v1/train", json={"dataset": "vig@1", "options": {"colour": 1}})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    r = client.post("/api/v1/train", json={"dataset": "nope@1"})
    assert r.status_code == 404
    r = client.post(f"/api/v1/models/{model_id}/evaluate", json={"dataset": "vig@1",
                                                                 "split": "holdout"})
    assert r.status_code == 422 and r.json()["field"] == "split"
