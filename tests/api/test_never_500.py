"""The API never answers 500 to bad input: a bounded property test over the main endpoints, plus
one explicit case for every server error the fuzzing found (huge ids, Unicode digits, offsets
past what SQL holds, bodies the framework cannot parse), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqualens.api.app import create_app
from aqualens.catalog.annotations import add_annotation
from aqualens.catalog.labels import get_or_create_label
from aqualens.catalog.users import get_admin
from tests.api.helpers import seed

HUGE = [2**31, 2**63, 10**30, -(2**63) - 1]


@pytest.fixture
def seeded(ctx):
    """Three images in collection c1, a label and one box annotation; returns their ids."""
    images = seed(ctx, 3)
    with ctx.session() as s:
        admin = get_admin(s)
        label = get_or_create_label(s, "Calanoida", 1100)
        ann = add_annotation(s, images[0], label_id=label.id, geometry_type="box",
                             geometry=[1, 1, 5, 5], owner_id=admin.id, author_id=admin.id)
        return {"images": images, "label": label.id, "annotation": ann.id}


def assert_names_field(r, field: str, status: int | tuple[int, ...] = 422) -> None:
    """A 4xx (``status``) whose JSON names ``field`` and says what is valid where it can."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    # Request fields the framework checks are located like "query.offset" or "path.ref".
    assert body["field"] == field or body["field"].split(".", 1)[-1] == field, body
    assert field in body["message"], body


# ------------------------------------------------------------------ every 500 found, explicitly

ID_PATHS = [  # (method, path with {n}, json body, field the answer must name)
    ("GET", "/api/v1/annotations/{n}", None, "annotation_id"),
    ("GET", "/api/v1/annotations/{n}/history", None, "annotation_id"),
    ("PATCH", "/api/v1/annotations/{n}", {"status": "dubious"}, "annotation_id"),
    ("DELETE", "/api/v1/annotations/{n}", None, "annotation_id"),
    ("GET", "/api/v1/images/{n}", None, "image_id"),
    ("GET", "/api/v1/images/{n}/annotations", None, "image_id"),
    ("GET", "/api/v1/collections/{n}", None, "collection"),
    ("DELETE", "/api/v1/collections/{n}", None, "collection"),
    ("GET", "/api/v1/collections/{n}/images", None, "collection"),
    ("DELETE", "/api/v1/collections/c1/images/{n}", None, "image_id"),
    ("GET", "/api/v1/labels/{n}", None, "label"),
    ("GET", "/api/v1/models/{n}", None, "model"),
    ("POST", "/api/v1/predict", "model", "model"),
    ("GET", "/api/v1/collections?owner_id={n}", None, "owner_id"),
    ("GET", "/api/v1/collections?offset={n}", None, "offset"),
    ("GET", "/api/v1/labels?offset={n}", None, "offset"),
    ("GET", "/api/v1/models?offset={n}", None, "offset"),
    ("GET", "/api/v1/jobs?service_id={n}", None, "service_id"),
]


def test_out_of_range_ids_are_422(client, seeded):
    failures = []
    for method, path, body, field in ID_PATHS:
        for n in (2**31, 2**63, 10**30):
            data = {"model": n, "image_ids": seeded["images"][:1]} if body == "model" else body
            r = client.request(method, path.format(n=n), json=data)
            try:
                assert_names_field(r, field)
                assert r.json().get("valid"), r.json()
            except (AssertionError, KeyError, ValueError) as exc:
                failures.append(f"{method} {path.format(n=n)}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("n", HUGE)
def test_huge_ids_in_bodies_are_422(client, seeded, n):
    img, ann = seeded["images"][0], seeded["annotation"]
    assert_names_field(client.post(f"/api/v1/images/{img}/annotations",
                                   json={"label_id": n, "geometry_type": "none"}), "label_id")
    assert_names_field(client.patch(f"/api/v1/annotations/{ann}", json={"label_id": n}),
                       "label_id")
    assert_names_field(client.patch("/api/v1/labels/Calanoida", json={"aphia_id": n}),
                       "aphia_id")
    assert_names_field(client.post("/api/v1/labels", json={"name": "Oithona", "aphia_id": n}),
                       "aphia_id")


def tiny_model(ctx, folder) -> int:
    """Register a 3-class ONNX classifier (mean colour -> logits) built with onnx.helper: no
    torch export, so it takes milliseconds."""
    import onnx
    from onnx import TensorProto, helper

    from aqualens.models.base import ModelInfo
    from aqualens.models.registry import register_model
    from tests.models.nets import classifier_info

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])])
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    with ctx.session() as s:
        return register_model(s, ctx.store, path, ModelInfo.from_dict(classifier_info()),
                              get_admin(s).id).id


def test_huge_image_ids_to_model_predict_are_422(client, ctx, seeded, tmp_path):
    mid = tiny_model(ctx, tmp_path)
    r = client.post(f"/api/v1/models/{mid}/predict",
                    json={"image_ids": seeded["images"][:1], "store": False})
    assert r.status_code == 200, r.text  # the model is real: valid ids work
    for store in (True, False):
        r = client.post(f"/api/v1/models/{mid}/predict",
                        json={"image_ids": [2**63], "store": store})
        assert_names_field(r, "image_ids")


def test_huge_collection_id_upload_is_422(client):
    r = client.post(f"/api/v1/collections/{2**40}/images",
                    files={"files": ("a.png", b"\x89PNG\r\n", "image/png")})
    assert_names_field(r, "collection")


def test_unreadable_tables_name_file_and_line(client, seeded):
    from tests.models.nets import png_bytes

    # A carriage return inside an unquoted field: csv.Error in the sidecar reader.
    r = client.post(f"/api/v1/collections/{1}/images", files=[
        ("files", ("a.png", png_bytes((1, 2, 3)), "image/png")),
        ("metadata", ("m.csv", b"file,depth\na.png,\r5\n", "text/csv"))])
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["field"].startswith("m.csv line"), r.text
    # A field over csv's 128 KiB limit in a taxon list.
    r = client.post("/api/v1/labels/taxa",
                    files={"file": ("t.csv", b"name,rank\n" + b"x" * 200_000 + b",a\n",
                                    "text/csv")})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["field"] == "t.csv:2", r.text


@pytest.mark.parametrize("ref", ["%C2%B2", "%D9%A3"])  # '²' and Arabic-Indic three: isdigit()
def test_unicode_digits_are_names_not_ids(client, seeded, ref):
    assert_names_field(client.get(f"/api/v1/images/{ref}"), "image_id")
    assert_names_field(client.post(f"/api/v1/images/{ref}/annotations",
                                   json={"label": "x", "geometry_type": "none"}), "image_id")
    assert_names_field(client.get(f"/api/v1/collections/{ref}/images"), "collection", 404)
    assert_names_field(client.get(f"/api/v1/labels/{ref}"), "label", 404)
    assert_names_field(client.get(f"/api/v1/models/{ref}"), "model", 404)


def test_bodies_the_framework_rejects_name_the_body(client):
    r = client.post("/api/v1/collections", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"], r.text
    r = client.post("/api/v1/collections", content=b"[1, 2]",
                    headers={"content-type": "application/json"})
    assert_names_field(r, "body")
    r = client.post("/api/v1/collections")
    assert_names_field(r, "body")
    r = client.post("/api/v1/imports", content=b"garbage",
                    headers={"content-type": "multipart/form-data; boundary=xx"})
    assert 400 <= r.status_code < 500 and r.json()["field"], r.text
    r = client.post("/api/v1/imports", content=b"--xx\r\nContent-Disposition: form-data; "
                    b"name=\"file\"; filename=\"a.json\"\r\n\r\nabc",  # never terminated
                    headers={"content-type": "multipart/form-data; boundary=xx"})
    assert 400 <= r.status_code < 500 and r.json()["field"], r.text


def test_unknown_path_and_method_answer_json(client):
    assert_names_field(client.get("/api/v1/nothing-here"), "path", 404)
    r = client.put("/api/v1/collections")
    assert_names_field(r, "method", 405)
    assert "GET" in r.json()["valid"]


# ---------------------------------------------- the class-of-failure net, and real bugs stay 500


def test_database_refusals_are_4xx_but_bugs_stay_500(ctx, token, caplog):
    """A value the database refuses is bad input (4xx, logged so the missing check gets added);
    any other unexpected exception is still a 500."""
    from sqlalchemy import exc as sa_exc

    app = create_app(ctx)

    class _Orig(Exception):
        pass

    def refused() -> None:
        raise sa_exc.DataError("SELECT 1", {}, _Orig("integer out of range"))

    def bug() -> None:
        raise RuntimeError("a real bug")

    app.add_api_route("/test/refused", refused)
    app.add_api_route("/test/bug", bug)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/test/refused")
        assert r.status_code == 422 and r.json()["field"] == "request", r.text
        assert "integer out of range" in r.json()["message"]
        assert any("database refused" in rec.getMessage() for rec in caplog.records)
        assert c.get("/test/bug").status_code == 500


# --------------------------------------------------------------------- PostgreSQL and SQLite


def test_ids_over_int32_on_both_tiers(any_ctx):
    """Values PostgreSQL refuses where SQLite would not (ids over 2**31 - 1, NUL characters,
    NaN/Infinity in JSON columns): both tiers answer 422 naming the field."""
    ctx, token = any_ctx
    img = seed(ctx, 1)[0]
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as c:
        for n in (2**31, 2**40):
            assert_names_field(c.get(f"/api/v1/images/{n}"), "image_id")
            assert_names_field(c.get(f"/api/v1/annotations/{n}"), "annotation_id")
            assert_names_field(c.get(f"/api/v1/collections/{n}/images"), "collection")
            assert_names_field(c.get(f"/api/v1/labels/{n}"), "label")
            assert_names_field(c.get(f"/api/v1/jobs?service_id={n}"), "service_id")
            assert_names_field(c.get(f"/api/v1/collections?owner_id={n}"), "owner_id")
            assert_names_field(c.post("/api/v1/predict", json={"model": n, "image_ids": [img]}),
                               "model")
            assert_names_field(c.post(f"/api/v1/images/{img}/annotations",
                                      json={"label_id": n, "geometry_type": "none"}), "label_id")
        # NUL in text: PostgreSQL cannot store it (a DataError); both tiers refuse it at the
        # door with the field named: path, query and JSON body (nested too).
        assert_names_field(c.get("/api/v1/collections/a%00b"), "collection")
        assert_names_field(c.get("/api/v1/labels", params={"prefix": "a\x00"}), "prefix")
        assert_names_field(c.get("/api/v1/compare", params={"job_a": "\x00", "job_b": "x"}),
                           "job_a")
        assert_names_field(c.post("/api/v1/collections", json={"name": "a\x00b"}), "name")
        assert_names_field(c.patch(f"/api/v1/images/{img}", json={"meta": {"k": ["\x00"]}}),
                           "meta.k.0")
        # NaN / Infinity / 1e400: Python's JSON reader accepts them, PostgreSQL's json refuses.
        for token_ in ("NaN", "-Infinity", "1e400"):
            r = c.patch(f"/api/v1/images/{img}", content=f'{{"meta": {{"a": {token_}}}}}',
                        headers={"content-type": "application/json"})
            assert_names_field(r, "meta.a")
            r = c.post("/api/v1/collections", content=f'{{"name": "n", "meta": [{token_}]}}',
                       headers={"content-type": "application/json"})
            assert_names_field(r, "meta.0")


# --------------------------------------------------------------- property test: never a 5xx

ints = st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70),
                 st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1]))
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), ints, texts,
                    st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(texts, kids, max_size=4)), max_leaves=12)
path_refs = st.one_of(ints.map(str),
                      texts.filter(lambda t: t not in ("", ".", "..")).map(lambda t: quote(t, safe="")),
                      st.sampled_from(["c1", "%C2%B2", "sha256:" + "0" * 64, "1.5", "-1"]))

ENDPOINTS = [  # (method, path template with {ref}, query names, body fields)
    ("GET", "/api/v1/collections", ["limit", "offset", "owner_id"], None),
    ("POST", "/api/v1/collections", [], ["name", "description", "visibility", "meta"]),
    ("GET", "/api/v1/collections/{ref}", [], None),
    ("PATCH", "/api/v1/collections/{ref}", [], ["name", "description", "visibility", "meta"]),
    ("GET", "/api/v1/collections/{ref}/images", ["limit", "cursor"], None),
    ("GET", "/api/v1/images/{ref}", [], None),
    ("PATCH", "/api/v1/images/{ref}", [], ["captured_at", "lat", "lon", "depth", "instrument",
                                            "station", "meta", "visibility"]),
    ("GET", "/api/v1/images/{ref}/annotations", ["history"], None),
    ("POST", "/api/v1/images/{ref}/annotations", [], ["label", "label_id", "geometry_type",
                                                      "geometry", "score", "status",
                                                      "attributes"]),
    ("GET", "/api/v1/annotations/{ref}", [], None),
    ("PATCH", "/api/v1/annotations/{ref}", [], ["label", "label_id", "geometry_type",
                                                "geometry", "score", "status"]),
    ("GET", "/api/v1/labels", ["prefix", "limit", "offset"], None),
    ("POST", "/api/v1/labels", [], ["name", "aphia_id", "rank", "parent", "synonyms"]),
    ("GET", "/api/v1/labels/{ref}", [], None),
    ("GET", "/api/v1/search", ["collection", "label", "status", "captured_from", "captured_to",
                               "bbox", "depth_min", "depth_max", "instrument", "station",
                               "text", "limit", "cursor", "with_total"], None),
    ("GET", "/api/v1/search/facets", ["collection", "label", "status", "bbox", "top"], None),
    ("GET", "/api/v1/models", ["task", "name", "q", "latest", "limit", "offset"], None),
    ("GET", "/api/v1/models/{ref}", [], None),
    ("POST", "/api/v1/predict", [], ["model", "collection", "query", "image_ids", "top_k",
                                     "threshold", "batch_size", "chunk_size"]),
    ("GET", "/api/v1/jobs", ["state", "kind", "service_id", "since", "limit", "offset"], None),
    ("GET", "/api/v1/jobs/{ref}", [], None),
    ("GET", "/api/v1/exports", ["format", "collection", "status"], None),
]


@st.composite
def requests(draw):
    method, template, query_names, fields = draw(st.sampled_from(ENDPOINTS))
    path = template.format(ref=draw(path_refs))
    # Query values as strings, some names given twice.
    query = draw(st.lists(st.tuples(st.sampled_from(query_names), st.one_of(ints.map(str), texts,
                                                                          st.sampled_from(
                                                                              ["nan", "inf"]))),
                          max_size=4)) if query_names else []
    body = None
    if fields is not None:
        body = draw(st.one_of(
            st.dictionaries(st.sampled_from(fields), json_values, max_size=len(fields)),
            json_values))
    return method, path, query, body


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(req=requests())
def test_never_500(client, seeded, req):
    method, path, query, body = req
    kwargs = {}
    if body is not None:
        # json.dumps writes NaN/Infinity, which Python's JSON reader (and so FastAPI) accepts.
        kwargs = {"content": json.dumps(body).encode(),
                  "headers": {"content-type": "application/json"}}
    r = client.request(method, path, params=query, **kwargs)
    assert r.status_code < 500, (method, path, query, body, r.status_code, r.text[:500])
    if 400 <= r.status_code < 500 and r.headers.get("content-type", "").startswith(
            "application/json"):
        assert r.json().get("field") or r.status_code in (401, 403), r.text


def test_too_long_model_fields_on_both_tiers(any_ctx, tmp_path):
    """PostgreSQL refuses text wider than its column (SQLite stores it): both answer 422."""
    from tests.models.nets import classifier_info

    ctx, token = any_ctx
    mid = tiny_model(ctx, tmp_path)
    artefact = (tmp_path / "tiny.onnx").read_bytes()
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as c:
        assert_names_field(c.patch(f"/api/v1/models/{mid}", json={"licence": "x" * 101}),
                           "licence")
        for field, value in (("licence", "x" * 101), ("version", "1.0.0-" + "a" * 60)):
            info = {**classifier_info(version="2.0.0"), field: value}
            r = c.post("/api/v1/models", data={"metadata": json.dumps(info)},
                       files={"artefact": ("m.onnx", artefact, "application/octet-stream")})
            assert_names_field(r, field)
