"""REST: image metadata, bytes, thumbnail, metadata changes, delete with blob clean-up (both
tiers), search and facets, and garbage input that must never give a 500."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from aqualens.api.app import create_app
from tests.api.helpers import other_user, seed


def test_get_file_thumbnail_patch(client, anon_client, ctx):
    (iid,) = seed(ctx, 1)
    meta = client.get(f"/api/v1/images/{iid}").json()
    assert meta["pid"] == f"sha256:{meta['sha256']}" and meta["collections"][0]["name"] == "c1"
    assert client.get(f"/api/v1/images/{meta['pid']}").json()["id"] == iid
    r = anon_client.get(f"/api/v1/images/{iid}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert hashlib.sha256(r.content).hexdigest() == meta["sha256"]
    assert anon_client.get(f"/api/v1/images/{iid}/file",
                           headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    r = anon_client.get(f"/api/v1/images/{iid}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    r = client.patch(f"/api/v1/images/{iid}", json={
        "captured_at": "2024-05-01T12:00:00+02:00", "lat": 43.5, "lon": -3.2, "depth": 25,
        "instrument": "UVP6", "station": "A1", "meta": {"cruise": "ATL42"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["captured_at"].startswith("2024-05-01T10:00:00") and out["lat"] == 43.5
    hits = client.get("/api/v1/search", params={"text": "atl42"}).json()["items"]
    assert [h["id"] for h in hits] == [iid]  # metadata changes reach free-text search
    assert client.get(f"/api/v1/images/{iid}/collections").json()[0]["name"] == "c1"
    assert anon_client.patch(f"/api/v1/images/{iid}", json={"lat": 1}).status_code == 401
    bob = {"Authorization": f"Bearer {other_user(ctx)}"}
    assert anon_client.patch(f"/api/v1/images/{iid}", json={"lat": 1},
                             headers=bob).status_code == 403
    client.patch(f"/api/v1/images/{iid}", json={"visibility": "private"})
    assert anon_client.get(f"/api/v1/images/{iid}").status_code == 404
    assert anon_client.get(f"/api/v1/images/{iid}/file").status_code == 404


def test_delete_removes_blob_only_when_unreferenced(any_ctx):
    ctx, token = any_ctx
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        a, b = seed(ctx, 2)
        with ctx.session() as s:
            from aqualens.catalog.tables import Image

            img_a, img_b = s.get(Image, a), s.get(Image, b)
            sha_a, thumb_a = img_a.sha256, img_a.thumb_sha256
            img_b.thumb_sha256 = thumb_a  # b shares a's thumbnail bytes
        r = client.delete(f"/api/v1/images/{a}")
        assert r.status_code == 200, r.text
        assert r.json()["details"]["blobs_removed"] == [sha_a]
        assert not ctx.store.exists(sha_a) and ctx.store.exists(thumb_a)
        assert client.get(f"/api/v1/images/{a}").status_code == 404
        assert client.get(f"/api/v1/images/{b}/thumbnail").status_code == 200
        assert client.get("/api/v1/collections/c1").json()["image_count"] == 1
        r = client.delete(f"/api/v1/images/{b}")
        assert thumb_a in r.json()["details"]["blobs_removed"]
        assert client.delete(f"/api/v1/images/{b}").status_code == 404


def test_search_and_facets(client, anon_client, ctx):
    pub = seed(ctx, 3, instrument="UVP6", depth=50.0)
    priv = seed(ctx, 2, visibility="private", instrument="UVP6", collection="c2")
    r = client.get("/api/v1/search", params={"instrument": "UVP6", "limit": 4,
                                             "with_total": "true"})
    body = r.json()
    assert r.status_code == 200 and body["total"] == 5 and len(body["items"]) == 4
    r2 = client.get("/api/v1/search", params={"instrument": "UVP6", "limit": 4,
                                              "cursor": body["next_cursor"]}).json()
    assert [i["id"] for i in body["items"] + r2["items"]] == pub + priv
    assert r2["next_cursor"] is None
    assert [i["id"] for i in anon_client.get("/api/v1/search").json()["items"]] == pub
    f = client.get("/api/v1/search/facets", params={"instrument": "UVP6"}).json()
    assert {e["value"]: e["count"] for e in f["collection"]} == {"c1": 3, "c2": 2}
    f = anon_client.get("/api/v1/search/facets").json()
    assert f["instrument"] == [{"value": "UVP6", "count": 3, "id": None, "aphia_id": None}]
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/search" in spec["paths"] and "SearchPage" in spec["components"]["schemas"]


GARBAGE = [
    ("get", "/api/v1/images/abc", None, "image_id"),
    ("get", "/api/v1/images/-1", None, "image_id"),
    ("get", "/api/v1/images/sha256:xyz", None, "image_id"),
    ("get", "/api/v1/images/99999999999999999999999", None, "image_id"),
    ("get", "/api/v1/images/424242/file", None, "image_id"),
    ("patch", "/api/v1/images/{id}", {"lat": 200}, "lat"),
    ("patch", "/api/v1/images/{id}", {"lon": -181}, "lon"),
    ("patch", "/api/v1/images/{id}", {"lat": "north"}, "lat"),
    ("patch", "/api/v1/images/{id}", {"captured_at": "last tuesday"}, "captured_at"),
    ("patch", "/api/v1/images/{id}", {"meta": [1, 2]}, "meta"),
    ("patch", "/api/v1/images/{id}", {"visibility": "secret"}, "visibility"),
    ("patch", "/api/v1/images/{id}", {"owner_id": 5}, "owner_id"),
    ("get", "/api/v1/search?bbox=1,2,3", None, "bbox"),
    ("get", "/api/v1/search?bbox=1,2,3,x", None, "bbox"),
    ("get", "/api/v1/search?captured_from=2024-13-45", None, "captured_from"),
    ("get", "/api/v1/search?captured_from=2024-02-01&captured_to=2024-01-01", None,
     "captured_from"),
    ("get", "/api/v1/search?depth_min=deep", None, "depth_min"),
    ("get", "/api/v1/search?label=Unicornus", None, "label"),
    ("get", "/api/v1/search?status=great", None, "status"),
    ("get", "/api/v1/search?collection=nope", None, "collection"),
    ("get", "/api/v1/search?limit=0", None, "limit"),
    ("get", "/api/v1/search?limit=ten", None, "limit"),
    ("get", "/api/v1/search?cursor=garbage", None, "cursor"),
    ("get", "/api/v1/search?colour=red", None, "colour"),
    ("get", "/api/v1/search?instrument=a&instrument=b", None, "instrument"),
    ("get", "/api/v1/search?text=" + "x" * 300, None, "text"),
    ("get", "/api/v1/search/facets?top=0", None, "top"),
    ("get", "/api/v1/search/facets?cursor=abc", None, "cursor"),
]


def test_garbage_gets_4xx_naming_the_field(client, ctx):
    (iid,) = seed(ctx, 1)
    for method, url, body, field in GARBAGE:
        kw = {"json": body} if body is not None else {}
        r = getattr(client, method)(url.replace("{id}", str(iid)), **kw)
        assert 400 <= r.status_code < 500, (url, body, r.text)
        assert field in (r.json().get("field") or ""), (url, body, r.json())
