"""Every format round-trips: import -> export -> import gives the same images, labels,
geometry, scores and statuses."""

from __future__ import annotations

import pytest

from aqualens.formats import get_format
from aqualens.interchange.exporter import export_dataset
from aqualens.interchange.importer import import_annotations
from tests.interchange.helpers import collection_shas, sample_dataset, stored

FORMATS = ["coco", "voc", "yolo", "masks", "folders", "ecotaxa", "dwca", "csv"]


def _restrict(fmt: str, ds):  # noqa: ANN001, ANN202
    plugin = get_format(fmt)
    ds.annotations = [a for a in ds.annotations if a.geometry_type in plugin.geometries]
    if fmt == "dwca":
        ds.annotations = [a for a in ds.annotations if a.status == "validated"]
        for a in ds.annotations:
            a.geometry_type, a.geometry = "none", None
    if fmt == "folders":  # one class per image, whole-image labels
        firsts = {}
        for a in ds.annotations:
            firsts.setdefault(a.image_ref, a)
        ds.annotations = list(firsts.values())
    return ds


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(ctx, tmp_path, fmt):
    plugin = get_format(fmt)
    ds = _restrict(fmt, sample_dataset(tmp_path / "orig"))
    if fmt == "folders":  # folders carry no geometry: relabel as whole-image annotations
        for a in ds.annotations:
            a.geometry_type, a.geometry, a.score, a.status = "none", None, None, "validated"
    src = tmp_path / "src"
    plugin.write(ds, src, {})
    first = import_annotations(ctx, fmt, src, collection="a", user=1)
    assert not first.refused, [str(p) for p in first.problems]
    assert first.annotations_added == len(stored(ctx, "a")) > 0
    out = tmp_path / ("export.zip" if plugin.default_output == "zip" else "export")
    res = export_dataset(ctx, fmt, out, user=None if False else _admin(ctx), collection="a")
    assert res.annotations == first.annotations_added
    second = import_annotations(ctx, fmt, out, collection="b", user=1)
    assert not second.refused, [str(p) for p in second.problems]
    assert stored(ctx, "a") == stored(ctx, "b")
    assert collection_shas(ctx, "a") == collection_shas(ctx, "b")
    labels = {row[1] for row in stored(ctx, "a")}
    assert labels == {a.label for a in ds.annotations}
    if fmt in ("coco", "csv", "voc", "yolo", "ecotaxa"):
        scores = sorted(row[4] for row in stored(ctx, "b") if row[4] is not None)
        assert scores == sorted(a.score for a in ds.annotations if a.score is not None)


def _admin(ctx):  # noqa: ANN001, ANN202
    from aqualens.catalog.users import get_admin

    with ctx.session() as s:
        user = get_admin(s)
        s.expunge(user)
        return user
