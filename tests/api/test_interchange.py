"""REST: upload + import (report, 422 when refused), export download, formats, taxa."""

from __future__ import annotations

import io
import zipfile

from tests.interchange.helpers import make_image, snapshot


def _zip(tmp_path, csv_text: str) -> bytes:  # noqa: ANN001
    img = make_image(tmp_path / "a.png", 32, 32, seed=5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(img, "images/a.png")
        zf.writestr("annotations.csv", csv_text)
    return buf.getvalue()


def test_formats(client):
    r = client.get("/api/v1/formats")
    assert r.status_code == 200 and "ecotaxa" in {f["name"] for f in r.json()}


def test_import_then_export(client, tmp_path):
    data = _zip(tmp_path, 'image,label,geometry_type,geometry\nimages/a.png,Fish,box,"[1,1,5,5]"\n')
    r = client.post("/api/v1/imports", files={"file": ("ann.zip", data)},
                    data={"format": "csv", "collection": "web"})
    assert r.status_code == 200, r.text
    assert r.json()["annotations_added"] == 1
    r = client.get("/api/v1/exports", params={"format": "coco", "collection": "web"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "annotations.json" in names and "images/a.png" in names
    r = client.get("/api/v1/exports", params={"format": "yolo", "label": "Fish"})
    assert r.status_code == 200 and r.headers["x-aqualens-annotations"] == "1"


def test_refused_import_is_422_with_report(client, ctx, tmp_path):
    data = _zip(tmp_path, 'image,label,geometry_type,geometry\nimages/a.png,Fish,box,"[1,1,0,5]"\n')
    before = snapshot(ctx)
    r = client.post("/api/v1/imports", files={"file": ("ann.zip", data)},
                    data={"format": "csv", "collection": "web"})
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "annotations.csv"
    assert body["details"]["problems"][0]["location"] == "line 2"
    assert "degenerate box" in body["details"]["problems"][0]["reason"]
    assert snapshot(ctx) == before


def test_bad_uploads_are_4xx(client, anon_client):
    r = client.post("/api/v1/imports", files={"file": ("x.json", b"\x00\xff garbage")},
                    data={"format": "coco", "collection": "w"})
    assert r.status_code == 422 and "x.json" in r.json()["message"]
    r = client.post("/api/v1/imports", files={"file": ("x.zip", b"PK\x03\x04broken")},
                    data={"format": "yolo", "collection": "w"})
    assert 400 <= r.status_code < 500
    r = client.post("/api/v1/imports", files={"file": ("x.csv", b"a")},
                    data={"format": "nope", "collection": "w"})
    assert r.status_code == 404 and "csv" in r.json()["message"]
    r = client.post("/api/v1/imports", files={"file": ("x.csv", b"a")},
                    data={"format": "csv", "collection": "w", "on_outside": "x"})
    assert r.status_code == 422 and r.json()["field"] == "on_outside"
    r = client.post("/api/v1/imports", files={"file": ("x.csv", b"")},
                    data={"format": "csv", "collection": "w"})
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = client.get("/api/v1/exports", params={"format": "coco"})
    assert r.status_code == 422
    r = client.get("/api/v1/exports", params={"format": "coco", "collection": "nope"})
    assert r.status_code == 404
    assert anon_client.post("/api/v1/imports", files={"file": ("x.csv", b"a")},
                            data={"format": "csv", "collection": "w"}).status_code == 401


def test_taxa_upload(client):
    r = client.post("/api/v1/labels/taxa",
                    files={"file": ("t.csv", b"name,aphia_id\nCopepoda,1080\n")})
    assert r.status_code == 200 and r.json()["created"] == 1
    r = client.post("/api/v1/labels/taxa", files={"file": ("t.csv", b"name,aphia_id\nX,abc\n")})
    assert r.status_code == 422 and "line 2" in r.json()["message"]
