"""``POST /api/v1/collections/{id}/images``: multipart uploads, archives, sidecars, limits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aqualens.catalog.tables import CollectionImage, Image, UsageEvent
from aqualens.catalog.users import create_token, create_user, get_admin
from aqualens.ingest.pipeline import resolve_collection
from tests.conftest import make_ctx, make_settings
from tests.ingest.helpers import jpeg_bytes, make_tar, make_zip, noise_jpeg, png_bytes


def _collection(ctx, name: str = "up", visibility: str = "private") -> int:
    with ctx.session() as s:
        admin_id = get_admin(s).id
    return resolve_collection(ctx, name, admin_id, visibility)


def _url(cid: int) -> str:
    return f"/api/v1/collections/{cid}/images"


def test_upload_many_files_then_duplicates(client, ctx):
    cid = _collection(ctx)
    files = [("files", (f"f{i}.jpg", jpeg_bytes(i), "image/jpeg")) for i in range(3)]
    r = client.post(_url(cid), files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["summary"]["accepted"] == 3 and body["summary"]["new_images"] == 3
    assert {a["name"] for a in body["accepted"]} == {"f0.jpg", "f1.jpg", "f2.jpg"}
    again = client.post(_url(cid), files=files)
    assert again.status_code == 200
    assert again.json()["summary"]["duplicates"] == 3
    with ctx.session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 3
        assert s.scalar(select(func.count()).select_from(UsageEvent)
                        .where(UsageEvent.kind == "ingest")) == 2


def test_upload_archives_sidecar_and_map(client, ctx, tmp_path: Path):
    cid = _collection(ctx)
    z = make_zip(tmp_path / "a.zip", {"z/one.png": png_bytes(1), "../evil.jpg": png_bytes(2)})
    t = make_tar(tmp_path / "b.tar.gz", {"two.png": png_bytes(3)}, mode="w:gz")
    sidecar = b"pic,site,lat\none.png,Quay,45.5\ntwo.png,Reef,-12\n"
    r = client.post(_url(cid), files=[
        ("files", ("a.zip", z.read_bytes(), "application/zip")),
        ("files", ("b.tar.gz", t.read_bytes(), "application/gzip")),
        ("metadata", ("stations.csv", sidecar, "text/csv"))],
        data={"map": ["file=pic", "station=site"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert {a["name"] for a in body["accepted"]} == {"z/one.png", "two.png"}
    assert body["rejected"] == [{"name": "a.zip:../evil.jpg", "code": "unsafe_path",
                                 "reason": body["rejected"][0]["reason"]}]
    with ctx.session() as s:
        stations = dict(s.execute(select(Image.original_name, Image.station)).all())
        assert stations == {"z/one.png": "Quay", "two.png": "Reef"}


def test_upload_bad_sidecar_is_422_naming_row_and_column(client, ctx):
    cid = _collection(ctx)
    r = client.post(_url(cid), files=[
        ("files", ("a.jpg", jpeg_bytes(1), "image/jpeg")),
        ("metadata", ("m.csv", b"file,date\na.jpg,31/02/2021\n", "text/csv"))])
    assert r.status_code == 422
    assert r.json()["field"] == "m.csv row 2 column 'date'"
    with ctx.session() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 0


@pytest.mark.parametrize("files, status, code", [
    ([("files", ("x.jpg", b"plain text", "image/jpeg"))], 415, "not_an_image"),
    ([("files", ("t.jpg", jpeg_bytes(1, size=(300, 300))[:400], "image/jpeg"))], 422, "truncated"),
    ([("files", ("../up.jpg", jpeg_bytes(1), "image/jpeg"))], 422, "unsafe_path"),
])
def test_upload_all_rejected(client, ctx, files, status, code):
    r = client.post(_url(_collection(ctx)), files=files)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == "files"
    assert [x["code"] for x in body["details"]["rejected"]] == [code]
    assert files[0][1][0] in body["message"]


def test_upload_size_limit_413_and_bomb(tmp_path: Path):
    from fastapi.testclient import TestClient

    from aqualens.api.app import create_app

    ctx, token = make_ctx(make_settings(tmp_path / "data", limits={
        "max_file_bytes": 20_000, "max_image_pixels": 40_000}))
    cid = _collection(ctx)
    big = noise_jpeg((120, 120))
    assert 20_000 < len(big) < 30_000
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post(_url(cid), files=[("files", ("big.jpg", big, "image/jpeg"))])
        assert r.status_code == 413
        assert r.json()["details"]["rejected"][0]["code"] == "too_large"
        # A good file beside a too-large and a too-many-pixels one still goes in.
        r = c.post(_url(cid), files=[("files", ("big.jpg", big, "image/jpeg")),
                                     ("files", ("bomb.png", png_bytes(1, (300, 200)), "image/png")),
                                     ("files", ("ok.png", png_bytes(2), "image/png"))])
        assert r.status_code == 201
        body = r.json()
        assert [a["name"] for a in body["accepted"]] == ["ok.png"]
        assert {x["name"]: x["code"] for x in body["rejected"]} == {
            "big.jpg": "too_large", "bomb.png": "too_many_pixels"}
        # The whole body is capped at 4x the file limit.
        r = c.post(_url(cid), files=[("files", (f"{i}.jpg", big, "image/jpeg"))
                                     for i in range(5)])
        assert r.status_code == 413 and r.json()["field"] == "Content-Length"
    assert not any((tmp_path / "data" / "tmp").iterdir())  # temp uploads removed


def test_upload_needs_token_and_write_access(client, anon_client, ctx):
    cid = _collection(ctx)
    files = [("files", ("a.jpg", jpeg_bytes(1), "image/jpeg"))]
    assert anon_client.post(_url(cid), files=files).status_code == 401
    with ctx.session() as s:
        other = create_user(s, "eve")
        token = create_token(s, other)
    headers = {"Authorization": f"Bearer {token}"}
    r = client.post(_url(cid), files=files, headers=headers)
    assert r.status_code == 404  # a private collection of someone else is invisible
    pub = _collection(ctx, "shared", "public")
    r = client.post(_url(pub), files=files, headers=headers)
    assert r.status_code == 403 and r.json()["field"] == "collection"
    assert client.post(_url(99999), files=files).status_code == 404
    with ctx.session() as s:
        assert s.scalar(select(func.count()).select_from(CollectionImage)) == 0


def test_upload_bad_requests(client, ctx):
    cid = _collection(ctx)
    r = client.post(_url(cid), content=b"raw", headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = client.post(_url(cid), data={"note": "no files"})
    assert r.status_code in (415, 422)
    r = client.post(_url(cid), files=[("metadata", ("m.json", json.dumps([{"file": "a.jpg"}]).encode(),
                                                    "application/json"))])
    assert r.status_code == 422 and r.json()["field"] == "files"
    r = client.post(_url(cid), files=[("files", ("a.jpg", jpeg_bytes(1), "image/jpeg"))],
                    data={"map": "nonsense"})
    assert r.status_code == 422 and r.json()["field"] == "--map"
    r = client.post(_url(cid), files=[("files", ("a.jpg", io.BytesIO(b"x"), "image/jpeg"))],
                    headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert r.status_code in (415, 422)
    cut = (b"--b1\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
           b"\r\n" + jpeg_bytes(1)[:100])
    r = client.post(_url(cid), content=cut,
                    headers={"Content-Type": "multipart/form-data; boundary=b1"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    garbage = b"--b1\r\n\x00\x01 not headers at all\r\n\r\n--b1--\r\n"
    r = client.post(_url(cid), content=garbage,
                    headers={"Content-Type": "multipart/form-data; boundary=b1"})
    assert r.status_code == 422
