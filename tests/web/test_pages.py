"""HTML pages through TestClient: home lists visible collections with counts and thumbnails,
a collection page shows a grid and searches, an image page shows metadata."""

from __future__ import annotations

from tests.api.helpers import seed


def test_home_lists_public_collections(anon_client, client, ctx):
    seed(ctx, 3, collection="pub")
    seed(ctx, 1, collection="secretset")
    cid = client.get("/api/v1/collections/pub").json()["id"]
    client.patch(f"/api/v1/collections/{cid}", json={"visibility": "public"})
    r = anon_client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "pub" in r.text and "secretset" not in r.text
    assert '<span class="count">3</span>' in r.text
    assert r.text.count("/thumbnail") == 3
    assert "secretset" in client.get("/").text  # the admin's token shows private ones


def test_empty_home(anon_client):
    r = anon_client.get("/")
    assert r.status_code == 200 and 'id="empty"' in r.text


def test_collection_page_grid_search_and_errors(anon_client, client, ctx):
    ids = seed(ctx, 3, collection="pub", instrument="UVP6")
    seed(ctx, 2, collection="pub", instrument="IFCB", meta={"cruise": "MED7"})
    cid = client.get("/api/v1/collections/pub").json()["id"]
    client.patch(f"/api/v1/collections/{cid}", json={"visibility": "public"})
    r = anon_client.get(f"/collections/{cid}")
    assert r.status_code == 200 and r.text.count('class="result"') == 5
    r = anon_client.get(f"/collections/{cid}", params={"instrument": "UVP6"})
    assert r.text.count('class="result"') == 3 and 'value="UVP6"' in r.text
    r = anon_client.get(f"/collections/{cid}", params={"text": "med7"})
    assert r.text.count('class="result"') == 2
    r = anon_client.get(f"/collections/{cid}", params={"bbox": "1,2,3"})
    assert r.status_code == 422 and "bbox" in r.text and 'role="alert"' in r.text
    assert anon_client.get("/collections/99999").status_code == 404
    r = anon_client.get(f"/images/{ids[0]}")
    assert r.status_code == 200 and "sha256:" in r.text and "UVP6" in r.text
    assert anon_client.get("/images/abc").status_code == 404
