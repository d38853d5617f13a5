"""REST: collections CRUD, listing with counts, delete semantics, permissions."""

from __future__ import annotations

from tests.api.helpers import other_user, seed


def test_crud(client, anon_client, ctx):
    r = client.post("/api/v1/collections", json={"name": "cruise42", "description": "d"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert client.post("/api/v1/collections", json={"name": "cruise42"}).status_code == 409
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 0
    assert client.get("/api/v1/collections/cruise42").json()["id"] == cid
    # private: anonymous callers do not see it
    assert anon_client.get(f"/api/v1/collections/{cid}").status_code == 404
    assert anon_client.get("/api/v1/collections").json() == []
    r = client.patch(f"/api/v1/collections/{cid}", json={"visibility": "public", "name": "c42"})
    assert r.status_code == 200 and r.json()["name"] == "c42"
    assert [c["name"] for c in anon_client.get("/api/v1/collections").json()] == ["c42"]
    assert anon_client.patch(f"/api/v1/collections/{cid}", json={"name": "x"}).status_code == 401
    assert client.delete(f"/api/v1/collections/{cid}").status_code == 200
    assert client.get(f"/api/v1/collections/{cid}").status_code == 404


def test_list_counts_and_delete_keeps_shared_images(client, ctx):
    a = seed(ctx, 3, collection="a")
    seed(ctx, 2, collection="b")
    # image a[0] is also in b
    cb = client.get("/api/v1/collections/b").json()["id"]
    ca = client.get("/api/v1/collections/a").json()["id"]
    from aqualens.catalog.tables import CollectionImage

    with ctx.session() as s:
        s.add(CollectionImage(collection_id=cb, image_id=a[0]))
    counts = {c["name"]: c["image_count"] for c in client.get("/api/v1/collections").json()}
    assert counts == {"a": 3, "b": 3}
    page = client.get(f"/api/v1/collections/{ca}/images", params={"limit": 2}).json()
    assert [i["id"] for i in page["items"]] == a[:2] and page["next_cursor"]
    r = client.delete(f"/api/v1/collections/{ca}")
    assert r.json()["details"]["images_deleted"] == 2, r.json()
    assert client.get(f"/api/v1/images/{a[0]}").status_code == 200
    assert client.get(f"/api/v1/images/{a[1]}").status_code == 404
    assert client.get(f"/api/v1/collections/{cb}").json()["image_count"] == 3
    # unlink one image: the image stays
    assert client.delete(f"/api/v1/collections/{cb}/images/{a[0]}").status_code == 204
    assert client.delete(f"/api/v1/collections/{cb}/images/{a[0]}").status_code == 404
    assert client.get(f"/api/v1/images/{a[0]}").status_code == 200


def test_ownership(client, anon_client, ctx):
    cid = client.post("/api/v1/collections", json={"name": "mine", "visibility": "public"}
                      ).json()["id"]
    bob = {"Authorization": f"Bearer {other_user(ctx)}"}
    assert anon_client.patch(f"/api/v1/collections/{cid}", json={"name": "x"},
                             headers=bob).status_code == 403
    assert anon_client.delete(f"/api/v1/collections/{cid}", headers=bob).status_code == 403
    r = anon_client.post("/api/v1/collections", json={"name": "mine"}, headers=bob)
    assert r.status_code == 201  # names are unique per owner


def test_bad_input(client):
    cases = [
        ("post", "/api/v1/collections", {"name": ""}, "collection"),
        ("post", "/api/v1/collections", {"name": "a/b"}, "collection"),
        ("post", "/api/v1/collections", {"name": "x", "visibility": "secret"}, "visibility"),
        ("post", "/api/v1/collections", {"name": "x", "colour": 1}, "colour"),
        ("post", "/api/v1/collections", {}, "name"),
        ("get", "/api/v1/collections?limit=abc", None, "limit"),
        ("get", "/api/v1/collections?limit=0", None, "limit"),
        ("get", "/api/v1/collections/12345", None, "collection"),
        ("get", "/api/v1/collections/1/images?cursor=%%%", None, None),
    ]
    for method, url, body, field in cases:
        r = getattr(client, method)(url, **({"json": body} if body is not None else {}))
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.text)
        if field:
            assert field in r.json()["field"], (url, body, r.json())
