"""Dataset versions: freezing, immutability, versions, diff, export, bad input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from aqualens.catalog import datasets as ds
from aqualens.catalog.annotations import add_annotation
from aqualens.catalog.labels import get_or_create_label
from aqualens.catalog.tables import DatasetVersion
from aqualens.catalog.users import get_admin
from aqualens.core.errors import Conflict, NotFound, ValidationError
from aqualens.training.datasets import freeze
from tests.training.helpers import make_classify_collection


@pytest.fixture
def admin(ctx):  # noqa: ANN001, ANN201
    with ctx.session() as s:
        user = get_admin(s)
        s.expunge(user)
    return user


def test_freeze_snapshot_and_checksum(ctx, admin):
    ids = make_classify_collection(ctx, admin, n=30, station_every=3)
    with ctx.session() as s:
        # a predicted annotation is not part of the default (validated-only) snapshot
        lab = get_or_create_label(s, "disc")
        add_annotation(s, ids[1], label_id=lab.id, status="predicted", owner_id=admin.id)
        dv = freeze(s, admin, "vig", collection="vignettes", group_by="station", seed=1)
        assert dv.ref == "vig@1"
        m = dv.manifest
        assert len(m["images"]) == 30 and len(m["annotations"]) == 30
        assert {a["status"] for a in m["annotations"]} == {"validated"}
        assert [x["name"] for x in dv.label_map["labels"]] == ["disc", "hbar", "vbar"]
        assert ds.verify(dv) and dv.manifest_sha256 == ds.manifest_sha256(m)
        # group-aware: each station in a single split
        where = {k: sp for sp, keys in m["splits"].items() for k in keys}
        stations = {}
        for rec in m["images"]:
            stations.setdefault(rec["group"], set()).add(where[rec["sha256"]])
        assert all(len(v) == 1 for v in stations.values())
        dv2 = freeze(s, admin, "vig", collection="vignettes", statuses=["validated", "predicted"])
        assert dv2.ref == "vig@2" and len(dv2.manifest["annotations"]) == 31
        assert ds.get_version(s, "vig", admin).version == 2
        assert ds.get_version(s, "vig@1", admin).id == dv.id


def test_frozen_versions_cannot_change(ctx, admin):
    make_classify_collection(ctx, admin, n=9)
    with ctx.session() as s:
        dv_id = freeze(s, admin, "vig", collection="vignettes").id
    with pytest.raises(Conflict, match="frozen"):
        with ctx.session() as s:
            dv = s.get(DatasetVersion, dv_id)
            dv.manifest = {**dv.manifest, "images": []}
    with pytest.raises(Conflict, match="frozen"):
        with ctx.session() as s:
            s.get(DatasetVersion, dv_id).description = "changed"
    with pytest.raises(Conflict, match="frozen"):
        with ctx.session() as s:
            s.delete(s.get(DatasetVersion, dv_id))
    with ctx.session() as s:                 # publication fields may change
        s.get(DatasetVersion, dv_id).visibility = "public"
    with ctx.session() as s:
        dv = s.get(DatasetVersion, dv_id)
        assert ds.verify(dv) and dv.visibility == "public"
        # a raw UPDATE bypassing the ORM is caught by the checksum
        s.execute(update(DatasetVersion).where(DatasetVersion.id == dv_id)
                  .values(manifest={"tampered": True}))
        s.expire_all()
        assert not ds.verify(s.get(DatasetVersion, dv_id))


def test_diff_export_delete(ctx, admin, tmp_path):
    ids = make_classify_collection(ctx, admin, n=12)
    with ctx.session() as s:
        freeze(s, admin, "vig", collection="vignettes")
        lab = get_or_create_label(s, "blob")
        from aqualens.catalog.annotations import correct_annotation
        from aqualens.catalog.tables import Annotation
        from sqlalchemy import select

        ann = s.scalar(select(Annotation).where(Annotation.image_id == ids[0]))
        correct_annotation(s, ann.id, admin, label_id=lab.id)
    make_classify_collection(ctx, admin, n=3, classes=("disc",), size=33)
    with ctx.session() as s:
        a, b = ds.get_version(s, "vig@1", admin), freeze(s, admin, "vig", collection="vignettes")
        d = ds.diff_versions(a, b)
        assert len(d["images_added"]) == 3 and d["images_removed"] == []
        assert d["labels_added"] == ["blob"]
        assert d["images_relabelled"][0]["to"] == ["blob"]
    out = ds.export_version(ctx, "vig@1", admin, tmp_path / "exp", with_images=True)
    assert out["images_written"] == 12
    data = (tmp_path / "exp" / "manifest.json").read_bytes()
    with ctx.session() as s:
        assert ds.manifest_sha256(json.loads(data)) == ds.get_version(s, "vig@1", admin).manifest_sha256
    assert len((tmp_path / "exp" / "SHA256SUMS").read_text().splitlines()) == 13
    with ctx.session() as s:
        ds.delete_version(s, "vig@2", admin)
    with ctx.session() as s, pytest.raises(NotFound):
        ds.get_version(s, "vig@2", admin)


def test_bad_input(ctx, admin):
    make_classify_collection(ctx, admin, n=6)
    with ctx.session() as s:
        with pytest.raises(ValidationError) as e:
            freeze(s, admin, "bad name!", collection="vignettes")
        assert e.value.field == "name"
        with pytest.raises(NotFound):
            freeze(s, admin, "x", collection="nope")
        with pytest.raises(ValidationError, match="either a collection or a query"):
            freeze(s, admin, "x")
        with pytest.raises(ValidationError) as e:
            freeze(s, admin, "x", collection="vignettes", statuses=["great"])
        assert e.value.field == "status"
        with pytest.raises(ValidationError) as e:
            freeze(s, admin, "x", collection="vignettes", group_by="colour")
        assert e.value.field == "group_by"
        with pytest.raises(ValidationError) as e:
            ds.parse_ref("vig@zero")
        assert e.value.field == "dataset"
        with pytest.raises(NotFound):
            ds.get_version(s, "vig@9", admin)
