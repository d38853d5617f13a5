"""The error hierarchy and its one mapping to HTTP (aqualens.api.errors)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aqualens.api.errors import STATUS, install, status_for
from aqualens.core import errors as E

EXPECTED = [
    (E.ValidationError, 422), (E.TooLarge, 413), (E.UnsupportedMedia, 415),
    (E.FormatError, 422), (E.NotFound, 404), (E.Conflict, 409), (E.Unauthorized, 401),
    (E.PermissionDenied, 403), (E.IntegrityError, 422), (E.StorageError, 503),
    (E.ModelError, 422), (E.JobError, 409), (E.ConfigError, 500),
]


def test_every_error_class_is_mapped():
    classes = {c for c in vars(E).values() if isinstance(c, type)
               and issubclass(c, E.AquaLensError) and c is not E.AquaLensError}
    assert classes == set(STATUS)
    assert {c for c, _ in EXPECTED} == classes


@pytest.mark.parametrize(("cls", "status"), EXPECTED, ids=[c.__name__ for c, _ in EXPECTED])
def test_status_for(cls, status):
    assert status_for(cls("x")) == status


def test_subclass_of_a_mapped_error_inherits_its_status():
    class Custom(E.NotFound):
        pass

    class Plain(E.AquaLensError):
        pass

    assert status_for(Custom("x")) == 404
    assert status_for(Plain("x")) == 400  # unmapped: a client error, never a 500


def test_message_names_field_and_valid():
    exc = E.ValidationError("unknown value", field="tier", valid="active, archive")
    assert str(exc) == "tier: unknown value (valid: active, archive)"
    assert exc.to_dict() == {"error": "invalid", "message": str(exc), "field": "tier",
                             "valid": "active, archive"}
    # The field is not repeated when the message names it already.
    assert str(E.NotFound("no collection 'x'", field="collection")) == "no collection 'x'"
    assert E.Conflict("dup", details={"id": 3}).to_dict()["details"] == {"id": 3}


def test_subclasses():
    assert issubclass(E.TooLarge, E.ValidationError)
    assert issubclass(E.UnsupportedMedia, E.ValidationError)
    assert issubclass(E.FormatError, E.ValidationError)


class Body(BaseModel):
    count: int


@pytest.fixture(scope="module")
def app_client():
    app = FastAPI()
    install(app)

    @app.get("/raise/{name}")
    def _raise(name: str) -> None:
        cls = getattr(E, name)
        raise cls(f"{name} happened", field="thing", valid="something else")

    @app.post("/body")
    def _body(body: Body) -> dict:
        return {"count": body.count}

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(("cls", "status"), EXPECTED, ids=[c.__name__ for c, _ in EXPECTED])
def test_http_mapping(app_client, cls, status):
    r = app_client.get(f"/raise/{cls.__name__}")
    assert r.status_code == status
    body = r.json()
    assert body["error"] == cls.code
    assert body["field"] == "thing"
    assert body["valid"] == "something else"
    assert f"{cls.__name__} happened" in body["message"]
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_request_validation_names_the_field(app_client):
    r = app_client.post("/body", json={"count": "many"})
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "count"
    assert body["message"].startswith("count:")
    assert body["details"][0]["field"] == "count"


def test_missing_body_is_422_not_500(app_client):
    r = app_client.post("/body", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
