"""The DEEPaaS demo module (deepaas 2.6.0's ``deepaas-test``) hosted by the real ``deepaas-run``
and by AquaLens: the same requests must get the same answers.

Known, deliberate differences (documented in docs/models.md): AquaLens needs an API token to
start or cancel a training; a cancelled training stays listed (deepaas-run forgets it, and its
DELETE answers 500 in 2.6.0); error bodies use the AquaLens error shape with the same field names.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.models.nets import png_bytes

pytest.importorskip("deepaas")
DEEPAAS_RUN = Path(sys.executable).with_name("deepaas-run")
M = "/v2/models/deepaas-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deepaas(tmp_path_factory):  # noqa: ANN001, ANN201
    if not DEEPAAS_RUN.exists() and not shutil.which("deepaas-run"):
        pytest.skip("deepaas-run not installed")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DEEPAAS_V2_MODEL"}
    log = tmp_path_factory.mktemp("deepaas") / "deepaas.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(DEEPAAS_RUN), "--listen-ip", "127.0.0.1", "--listen-port",
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        for _ in range(300):
            try:
                if client.get("/v2/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("deepaas-run did not start: " + log.read_text()[-2000:])
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def aql(client, anon_client):  # noqa: ANN001, ANN201
    meta = {"runtime": "deepaas", "module": "deepaas-test"}
    r = client.post("/api/v1/models", data={"metadata": json.dumps(meta),
                                            "visibility": "public"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "deepaas-test" and r.json()["version"] == "0.0.1"
    return client, anon_client


def _predict(c, accept: str | None = None, **params):  # noqa: ANN001, ANN003, ANN202
    headers = {"Accept": accept} if accept else {}
    return c.post(f"{M}/predict/", params=params, headers=headers,
                  files={"data": ("x.png", png_bytes((1, 2, 3)), "image/png")})


def _wait_done(c, uuid: str, path_list: bool = False) -> dict:  # noqa: ANN001
    for _ in range(300):
        recs = {r["uuid"]: r for r in c.get(f"{M}/train/").json()}
        if recs[uuid]["status"] != "running":
            return recs[uuid]
        time.sleep(0.1)
    raise AssertionError(f"training {uuid} did not finish")


def test_same_answers_as_deepaas_run(deepaas, aql) -> None:  # noqa: ANN001
    client, anon = aql
    # routes and metadata, as a DEEPaaS client sees them (no token)
    for path in ("/v2/", "/v2/models/", f"{M}/"):
        a, b = deepaas.get(path), anon.get(path)
        assert (a.status_code, a.json()) == (b.status_code, b.json()), path
    # ("/" is AquaLens's home page; DEEPaaS's root version list is /v2/'s version doc)
    assert deepaas.get("/v2/models/nope/").status_code == anon.get(
        "/v2/models/nope/").status_code == 404
    # predict: JSON, PNG and text answers, by Accept negotiation
    a, b = _predict(deepaas, parameter=1), _predict(anon, parameter=1)
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    a, b = _predict(deepaas, "image/png", parameter=1), _predict(anon, "image/png", parameter=1)
    assert a.headers["content-type"] == b.headers["content-type"] == "image/png"
    assert a.content == b.content and a.content[:4] == b"\x89PNG"
    a, b = _predict(deepaas, "text/plain", parameter=1), _predict(anon, "text/plain",
                                                                  parameter=1)
    assert a.text == b.text and a.text.startswith("data:image/png;base64,")
    # argument validation from the module's webargs declarations: same status, same fields
    for accept, params in ((None, {}), (None, {"parameter": "x"}),
                           (None, {"parameter": 1, "parameter_three": "baz"}),
                           ("text/html", {"parameter": 1})):
        a, b = _predict(deepaas, accept, **params), _predict(anon, accept, **params)
        assert a.status_code == b.status_code == 422, (params, b.text)
        assert set(a.json()) == set(b.json()["details"]), (a.json(), b.json())
    r = anon.post(f"{M}/predict/", params={"parameter": 1})
    assert r.status_code == 422 and r.json()["details"] == {
        "data": ["Missing data for required field."]}


def test_training_records_match_and_persist(deepaas, aql, ctx) -> None:  # noqa: ANN001
    from aqualens.catalog.tables import Job

    client, _ = aql
    a = deepaas.post(f"{M}/train/", params={"sleep": 1, "parameter_two": "a"}).json()
    b = client.post(f"{M}/train/", params={"sleep": 1, "parameter_two": "a"}).json()
    assert set(a) == set(b) == {"date", "args", "uuid", "status"}
    assert (a["status"], a["args"]) == (b["status"], b["args"]) == ("running",
                                                                    {"sleep": 1,
                                                                     "parameter_two": "a"})
    assert len(b["uuid"]) == len(a["uuid"]) == 32
    da, db = _wait_done(deepaas, a["uuid"]), _wait_done(client, b["uuid"])
    assert da["status"] == db["status"] == "done"
    assert set(da["result"]) == set(db["result"]) == {"output", "finish_date", "duration"}
    assert da["result"]["output"] == db["result"]["output"] is None
    assert client.get(f"{M}/train/{b['uuid']}").json() == db
    # a failing training is marked as failed ("error") in both
    a = deepaas.post(f"{M}/train/", params={"sleep": -1}).json()
    b = client.post(f"{M}/train/", params={"sleep": -1}).json()
    da, db = _wait_done(deepaas, a["uuid"]), _wait_done(client, b["uuid"])
    assert da["status"] == db["status"] == "error"
    assert "non-negative" in da["message"] and "non-negative" in db["message"]
    # bad training arguments
    ra, rb = deepaas.post(f"{M}/train/"), client.post(f"{M}/train/")
    assert ra.status_code == rb.status_code == 422 and set(ra.json()) == set(rb.json()["details"])
    # cancel: the training process is killed and the job row says cancelled
    b = client.post(f"{M}/train/", params={"sleep": 60}).json()
    t0 = time.monotonic()
    r = client.delete(f"{M}/train/{b['uuid']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert time.monotonic() - t0 < 10
    with ctx.session() as s:
        states = {j.id.replace("-", ""): j.state for j in s.query(Job)
                  .filter(Job.kind == "deepaas-train")}
    assert sorted(states.values()) == ["cancelled", "failed", "succeeded"]
    assert client.get(f"{M}/train/{'0' * 32}").status_code == 404
    assert client.get(f"{M}/train/not-a-uuid").status_code == 404


def test_platform_models_appear_in_v2(aql, ctx, tmp_path) -> None:  # noqa: ANN001
    from tests.models.nets import register_classifier

    client, _ = aql
    register_classifier(ctx, tmp_path)
    names = [m["name"] for m in client.get("/v2/models/").json()["models"]]
    assert names == ["deepaas-test", "tiny-plankton"]
    meta = client.get("/v2/models/tiny-plankton/").json()
    assert meta["version"] == "1.0.0" and meta["labels"][0]["aphia_id"] == 1100
    r = client.post("/v2/models/tiny-plankton/predict/", params={"top_k": 1},
                    files={"data": ("r.png", png_bytes((250, 0, 0)))})
    assert r.status_code == 200 and r.json()["status"] == "OK"
    assert r.json()["predictions"]["top"][0]["label"] == "Calanoida"
    r = client.post("/v2/models/tiny-plankton/predict/", headers={"Accept": "image/png"},
                    files={"data": ("r.png", png_bytes((250, 0, 0)))})
    assert r.headers["content-type"] == "image/png"
    r = client.post("/v2/models/tiny-plankton/predict/")
    assert r.status_code == 422 and r.json()["field"] == "data"
    spec = client.get("/v2/swagger.json").json()
    params = spec["paths"][f"{M}/predict/"]["post"]["parameters"]
    assert {p["name"]: p["in"] for p in params} == {"parameter": "query",
                                                    "parameter_three": "query",
                                                    "accept": "header"}
    assert spec["paths"][f"{M}/predict/"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]["required"] == ["data"]
