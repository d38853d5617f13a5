"""REST: /api/v1/models, predict (JSON and PNG overlay), identify, and bad input."""

from __future__ import annotations

import io
import json

from PIL import Image

from tests.models.nets import (add_image, classifier_info, export_classifier, png_bytes,
                               register_classifier)


def _upload(client, tmp_path, **meta):  # noqa: ANN001, ANN003, ANN202
    onnx_path, _ = export_classifier(tmp_path)
    info = {**classifier_info(), **meta}
    return client.post("/api/v1/models", data={"metadata": json.dumps(info)},
                       files={"artefact": ("model.onnx", onnx_path.read_bytes())})


def test_model_crud_and_package_round_trip(client, anon_client, tmp_path) -> None:  # noqa: ANN001
    r = _upload(client, tmp_path)
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["pid"] == f"sha256:{m['artefact_sha256']}" and m["visibility"] == "private"
    assert m["labels"][0] == {"name": "Calanoida", "aphia_id": 1100}
    assert anon_client.get(f"/api/v1/models/{m['id']}").status_code == 404
    r = client.patch(f"/api/v1/models/{m['id']}", json={"visibility": "public",
                                                        "card": "# Card"})
    assert r.status_code == 200 and r.json()["card"] == "# Card"
    assert anon_client.get("/api/v1/models").json()["items"][0]["id"] == m["id"]
    pkg = client.get(f"/api/v1/models/{m['id']}/package")
    assert pkg.status_code == 200 and pkg.headers["x-model-pid"] == m["pid"]
    assert client.delete(f"/api/v1/models/{m['id']}").status_code == 200
    r = client.post("/api/v1/models", files={"package": ("m.aqlmodel", pkg.content)})
    assert r.status_code == 201, r.text
    assert r.json()["artefact_sha256"] == m["artefact_sha256"]
    bad = pkg.content[:-40] + b"\0" * 40
    r = client.post("/api/v1/models", files={"package": ("m.aqlmodel", bad)})
    assert r.status_code == 422 and r.json()["error"] == "integrity"


def test_model_bad_input(client, anon_client, tmp_path) -> None:  # noqa: ANN001
    r = _upload(client, tmp_path, version="latest")
    assert r.status_code == 422 and r.json()["field"] == "version"
    r = client.post("/api/v1/models", data={"metadata": "{nope"},
                    files={"artefact": ("m.onnx", b"x")})
    assert r.status_code == 422 and "metadata is not valid JSON" in r.json()["message"]
    r = client.post("/api/v1/models", data={"metadata": json.dumps(classifier_info())},
                    files={"artefact": ("m.onnx", b"garbage")})
    assert r.status_code == 422 and "cannot load ONNX model" in r.json()["message"]
    r = _upload(client, tmp_path, input_spec={"height": 64, "width": 64})
    assert r.status_code == 422 and r.json()["field"] == "input_spec.height"
    assert client.post("/api/v1/models", json={}).status_code == 415
    assert _upload(anon_client, tmp_path).status_code == 401
    assert client.get("/api/v1/models/404").status_code == 404
    assert "no model 'ghost'" in client.post("/api/v1/models/ghost/predict",
                                              files={"files": ("a.png", png_bytes((1, 2, 3)))}
                                              ).json()["message"]
    r = client.patch("/api/v1/models/404", json={"visibility": "x"})
    assert r.status_code == 404


def test_predict_files_json_png_and_errors(client, ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    files = [("files", ("red.png", png_bytes((250, 0, 0)))),
             ("files", ("big.png", png_bytes((0, 0, 250), 500, 700)))]
    r = client.post(f"/api/v1/models/{mid}/predict", files=files, data={"top_k": "2"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["result"]["top"][0]["label"] for x in res] == ["Calanoida", "detritus"]
    assert res[1]["width"] == 700 and len(res[0]["result"]["top"]) == 2
    r = client.post(f"/api/v1/models/{mid}/predict", files=files[:1],
                    headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    r = client.post(f"/api/v1/models/{mid}/predict",
                    files={"files": ("notes.txt", b"hello")})
    assert r.status_code == 415 and "notes.txt" in r.json()["message"]
    r = client.post(f"/api/v1/models/{mid}/predict", files=files, data={"top_k": "zero"})
    assert r.status_code == 422 and r.json()["field"] == "top_k"
    r = client.post(f"/api/v1/models/{mid}/predict", files=files,
                    headers={"Accept": "image/png"})
    assert r.status_code == 422 and "one file" in r.json()["message"]
    r = client.post(f"/api/v1/models/{mid}/predict", data={"top_k": "1"})
    assert r.status_code == 422 and r.json()["field"] == "files"


def test_predict_catalogue_ids_stores_annotations(client, ctx, tmp_path) -> None:  # noqa: ANN001
    mid = register_classifier(ctx, tmp_path)
    img = add_image(ctx, (0, 250, 0))
    r = client.post(f"/api/v1/models/{mid}/predict", json={"image_ids": [img], "top_k": 1})
    assert r.status_code == 200, r.text
    row = r.json()["results"][0]
    assert row["payload"]["top"][0]["label"] == "Oithona" and row["annotation_ids"]
    r = client.post(f"/api/v1/models/{mid}/predict", json={"image_ids": [img]},
                    headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    r = client.post(f"/api/v1/models/{mid}/predict", json={"image_ids": ["x"]})
    assert r.status_code == 422 and r.json()["field"] == "image_ids"
    r = client.post(f"/api/v1/models/{mid}/predict", json={"image_ids": [424242]})
    assert r.status_code == 404


def test_identify(client, ctx, tmp_path) -> None:  # noqa: ANN001
    from sqlalchemy import select

    from aqualens.catalog.tables import UsageEvent

    register_classifier(ctx, tmp_path)
    r = client.post("/api/v1/identify", files={"image": ("x.png", png_bytes((250, 0, 0)))},
                    data={"lat": "41.2", "lon": "2.1", "date": "2026-05-01", "depth": "12.5",
                          "top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0] == {"rank": 1, "label": "Calanoida", "aphia_id": 1100,
                                  "score": body["results"][0]["score"],
                                  "worms_url": "https://www.marinespecies.org/aphia.php?"
                                               "p=taxdetails&id=1100"}
    assert body["model"]["version"] == "1.0.0" and len(body["results"]) == 3
    from aqualens.services.usage import flush_usage

    flush_usage()  # the predict routes buffer their usage events (written within a second)
    with ctx.session() as s:
        ev = s.scalars(select(UsageEvent).where(UsageEvent.kind == "predict")).all()[-1]
        assert ev.details["lat"] == 41.2 and ev.details["depth"] == 12.5
    r = client.post("/api/v1/identify", files={"image": ("x.png", png_bytes((1, 1, 1)))},
                    data={"lat": "95", "lon": "0"})
    assert r.status_code == 422 and r.json()["field"] == "lat"
    r = client.post("/api/v1/identify", files={"image": ("x.png", png_bytes((1, 1, 1)))},
                    data={"date": "yesterday"})
    assert r.status_code == 422 and r.json()["field"] == "date"
    r = client.post("/api/v1/identify", data={"lat": "1"})
    assert r.status_code == 422 and r.json()["field"] == "image"


def test_predict_usage_events_are_buffered(client, ctx, tmp_path) -> None:  # noqa: ANN001
    """Upload predictions queue their usage event (no commit per request); flush_usage writes
    them, a deleted model's events are still written (model cleared), shutdown flushes."""
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from aqualens.api.app import create_app
    from aqualens.catalog.tables import UsageEvent
    from aqualens.services.usage import buffer_usage, flush_usage, pending_usage

    def count() -> int:
        with ctx.session() as s:
            return s.scalar(select(func.count()).select_from(UsageEvent)
                            .where(UsageEvent.kind == "predict"))

    flush_usage()
    mid = register_classifier(ctx, tmp_path, visibility="public")
    before = count()
    for route, part in ((f"/api/v1/models/{mid}/predict", "files"),
                        ("/v2/models/tiny-plankton/predict/", "data")):
        r = client.post(route, files={part: ("red.png", png_bytes((250, 0, 0)))})
        assert r.status_code == 200, r.text
    flush_usage()  # (the flusher thread may have written them already: count rows instead)
    assert pending_usage() == 0 and count() == before + 2
    with ctx.session() as s:
        rows = s.scalars(select(UsageEvent).where(UsageEvent.kind == "predict")
                         .order_by(UsageEvent.id)).all()[-2:]
        assert [(e.model_id, e.images, e.user_id is not None) for e in rows] == \
            [(mid, 1, True), (mid, 1, True)]
        assert rows[1].details == {"route": "deepaas-v2"} and rows[0].bytes > 0
    buffer_usage(ctx.db_url, user_id=None, kind="predict", images=3, model_id=987654)
    flush_usage()   # an unknown model (deleted meanwhile): written, model reference cleared
    with ctx.session() as s:
        last = s.scalars(select(UsageEvent).order_by(UsageEvent.id.desc())).first()
        assert (last.model_id, last.images) == (None, 3)
    with TestClient(create_app(ctx)) as anon:  # leaving the client runs the app's shutdown
        assert anon.post(f"/api/v1/models/{mid}/predict",
                         files={"files": ("x.png", png_bytes((1, 1, 1)))}).status_code == 200
    assert pending_usage() == 0 and count() == before + 4
