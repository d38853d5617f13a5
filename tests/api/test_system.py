"""The app starts and authenticates."""


def test_health(anon_client):
    r = anon_client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["database"] == "sqlite"


def test_me_needs_token(anon_client):
    r = anon_client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["field"] == "Authorization"


def test_me_bad_token(anon_client):
    r = anon_client.get("/api/v1/me", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_me(client):
    assert client.get("/api/v1/me").json()["is_admin"] is True
