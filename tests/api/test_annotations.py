"""REST: annotations CRUD with history, and labels."""

from __future__ import annotations

from tests.api.helpers import other_user, seed


def test_annotation_lifecycle(client, anon_client, ctx):
    (iid,) = seed(ctx, 1)
    assert client.post("/api/v1/labels", json={"name": "Copepoda", "aphia_id": 1080,
                                               "rank": "Subclass"}).status_code == 201
    r = client.post(f"/api/v1/images/{iid}/annotations",
                    json={"label": "Copepoda", "geometry_type": "box",
                          "geometry": [2, 3, 10, 8], "score": 0.8, "status": "predicted"})
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["author_id"] is not None and a["source"] == "human" and a["created_at"]
    r = client.patch(f"/api/v1/annotations/{a['id']}", json={"geometry": [2, 3, 12, 8]})
    b = r.json()
    assert r.status_code == 200 and b["supersedes_id"] == a["id"] and b["status"] == "validated"
    assert client.patch(f"/api/v1/annotations/{a['id']}",
                        json={"status": "dubious"}).status_code == 409
    r = client.delete(f"/api/v1/annotations/{b['id']}")
    c = r.json()
    assert r.status_code == 200 and c["status"] == "rejected" and c["supersedes_id"] == b["id"]
    hist = client.get(f"/api/v1/annotations/{a['id']}/history").json()
    assert [h["id"] for h in hist] == [a["id"], b["id"], c["id"]]
    assert [h["is_current"] for h in hist] == [False, False, True]
    cur = client.get(f"/api/v1/images/{iid}/annotations").json()
    assert [x["id"] for x in cur] == [c["id"]]
    assert len(client.get(f"/api/v1/images/{iid}/annotations?history=true").json()) == 3
    # public image: anonymous readers see its annotations, cannot write
    assert anon_client.get(f"/api/v1/annotations/{a['id']}").status_code == 200
    assert anon_client.post(f"/api/v1/images/{iid}/annotations",
                            json={"label": "Copepoda"}).status_code == 401
    bob = {"Authorization": f"Bearer {other_user(ctx)}"}
    assert anon_client.patch(f"/api/v1/annotations/{c['id']}", json={"status": "validated"},
                             headers=bob).status_code == 403
    # the rejected annotation no longer makes the image a Copepoda hit
    assert client.get("/api/v1/search", params={"label": "Copepoda"}).json()["items"] == []


def test_annotation_garbage(client, ctx):
    (iid,) = seed(ctx, 1)
    client.post("/api/v1/labels", json={"name": "Copepoda"})
    url = f"/api/v1/images/{iid}/annotations"
    cases = [
        ({"label": "Unicornus"}, "label"),
        ({"label_id": 999}, "label_id"),
        ({"label": "Copepoda", "geometry_type": "box", "geometry": [1, 2, 3]}, "geometry"),
        ({"label": "Copepoda", "geometry_type": "hexagon"}, "geometry_type"),
        ({"label": "Copepoda", "score": 3}, "score"),
        ({"label": "Copepoda", "score": "high"}, "score"),
        ({"label": "Copepoda", "status": "great"}, "status"),
        ({"label": "Copepoda", "author_id": 3}, "author_id"),
    ]
    for body, field in cases:
        r = client.post(url, json=body)
        assert r.status_code == 422 and field in r.json()["field"], (body, r.text)
    assert client.post("/api/v1/images/abc/annotations", json={}).status_code == 422
    assert client.get("/api/v1/annotations/abc").status_code == 422
    assert client.get("/api/v1/annotations/12345").status_code == 404
    a = client.post(url, json={"label": "Copepoda"}).json()
    r = client.patch(f"/api/v1/annotations/{a['id']}", json={})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = client.patch(f"/api/v1/annotations/{a['id']}", json={"status": None})
    assert r.status_code == 422 and r.json()["field"] == "status"


def test_labels(client, anon_client, ctx):
    r = client.post("/api/v1/labels", json={"name": "Crustacea", "aphia_id": 1066})
    root = r.json()
    r = client.post("/api/v1/labels", json={"name": "Calanus", "parent": "Crustacea",
                                            "rank": "Genus", "synonyms": ["calanus sp."]})
    assert r.status_code == 201 and r.json()["parent_id"] == root["id"]
    assert r.json()["synonyms"] == ["calanus sp."]
    assert anon_client.get("/api/v1/labels/calanus sp.").json()["name"] == "Calanus"
    assert [x["name"] for x in anon_client.get("/api/v1/labels?prefix=cal").json()] == ["Calanus"]
    assert client.patch(f"/api/v1/labels/{root['id']}", json={"rank": "Subphylum"}
                        ).json()["rank"] == "Subphylum"
    assert anon_client.post("/api/v1/labels", json={"name": "x"}).status_code == 401
    bob = {"Authorization": f"Bearer {other_user(ctx)}"}
    assert anon_client.patch(f"/api/v1/labels/{root['id']}", json={"rank": "x"},
                             headers=bob).status_code == 403
    for body, field in [({"name": "Crustacea"}, "name"), ({"name": ""}, "name"),
                        ({"name": "a", "aphia_id": -1}, "aphia_id"),
                        ({"name": "a", "aphia_id": "x"}, "aphia_id"),
                        ({"name": "a", "parent": "nope"}, "parent")]:
        r = client.post("/api/v1/labels", json=body)
        assert 400 <= r.status_code < 500 and field in r.json()["field"], (body, r.text)
    assert client.get("/api/v1/labels/nope").status_code == 404
