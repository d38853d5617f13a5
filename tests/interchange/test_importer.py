"""Validation on import: outside/degenerate geometry, bad references, duplicates, unknown labels,
all-or-nothing versus --partial, annotation-only URL images, the label vocabulary."""

from __future__ import annotations

import json

import pytest

from aqualens.core.errors import FormatError
from aqualens.interchange.importer import ImportOptions, import_annotations
from aqualens.interchange.vocabulary import import_taxa
from tests.interchange.helpers import make_image, snapshot, stored


def _csv(tmp_path, rows: list[str]):  # noqa: ANN202
    make_image(tmp_path / "a.png", 64, 48, seed=1)
    make_image(tmp_path / "b.png", 64, 48, seed=2)
    lines = ["image,label,geometry_type,geometry,score,status"] + rows
    (tmp_path / "annotations.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_outside_box_is_clipped_or_rejected(ctx, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,box,"[50, 40, 30, 20]",,'])
    refused = import_annotations(ctx, "csv", src, collection="c", user=1,
                                 options=ImportOptions(on_outside="reject"))
    assert refused.refused and "outside the 64x48 image" in refused.errors[0].reason
    assert refused.errors[0].file == "annotations.csv" and refused.errors[0].location == "line 2"
    ok = import_annotations(ctx, "csv", src, collection="c", user=1)
    assert not ok.refused and "clipped" in ok.warnings[0].reason
    assert json.loads(stored(ctx, "c")[0][3].split(":", 1)[1]) == [50.0, 40.0, 14.0, 8.0]


def test_all_or_nothing_leaves_the_catalogue_unchanged(ctx, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,box,"[1, 1, 5, 5]",,',
                          'a.png,Fish,box,"[1, 1, 0, 5]",,',          # degenerate
                          'a.png,Fish,polygon,"[[1, 1, 2, 2, 3, 3]]",,',  # zero area
                          'missing.png,Fish,none,,,',                 # resolves to nothing
                          'b.png,Fish,box,"[1, 1, 5, 5]",1.5,'])      # score out of range
    before = snapshot(ctx)
    report = import_annotations(ctx, "csv", src, collection="c", user=1)
    assert report.refused
    assert snapshot(ctx) == before
    reasons = " | ".join(f"{p.location}: {p.reason}" for p in report.errors)
    for text in ("line 3: box: degenerate box", "line 4: polygon: degenerate polygon",
                 "missing.png", "line 6: score 1.5"):
        assert text in reasons
    partial = import_annotations(ctx, "csv", src, collection="c", user=1,
                                 options=ImportOptions(partial=True))
    assert not partial.refused and partial.annotations_added == 1
    assert partial.annotations_skipped == 3
    after = snapshot(ctx)
    assert after["annotations"] == before["annotations"] + 1
    assert after["images"] == before["images"] + 2


def test_corrupt_image_refuses_and_partial_skips_it(ctx, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,none,,,', 'b.png,Fish,none,,,'])
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    before = snapshot(ctx)
    report = import_annotations(ctx, "csv", src, collection="c", user=1)
    assert report.refused and "b.png" in report.errors[0].reason and snapshot(ctx) == before
    report = import_annotations(ctx, "csv", src, collection="c", user=1,
                                options=ImportOptions(partial=True))
    assert report.annotations_added == 1 and report.images_added == 1


def test_duplicates_in_file_and_on_reimport(ctx, tmp_path):
    src = _csv(tmp_path, ['a.png,Fish,box,"[1, 1, 5, 5]",,', 'a.png,Fish,box,"[1, 1, 5, 5]",,'])
    first = import_annotations(ctx, "csv", src, collection="c", user=1)
    assert first.annotations_added == 1 and "duplicate" in first.warnings[0].reason
    again = import_annotations(ctx, "csv", src, collection="c", user=1)
    assert again.annotations_added == 0 and "already stored" in again.warnings[0].reason
    assert len(stored(ctx, "c")) == 1


def test_unknown_labels_policies_and_synonyms(ctx, tmp_path):
    taxa = tmp_path / "taxa.csv"
    taxa.write_text("name,AphiaID,rank,parent,synonyms\nCopepoda,1080,Subclass,,copepod;Copepods\n"
                    "Calanus,104464,Genus,Copepoda,\n")
    with ctx.session() as s:
        rep = import_taxa(s, taxa)
    assert (rep.created, rep.synonyms) == (2, 2)
    src = _csv(tmp_path, ['a.png,copepod,none,,,', 'b.png,COPEPODA,none,,,', 'b.png,Salp,none,,,'])
    rej = import_annotations(ctx, "csv", src, collection="c", user=1,
                             options=ImportOptions(unknown_labels="reject"))
    assert rej.refused
    assert {p.reason.split("'")[1] for p in rej.errors} == {"COPEPODA", "Salp"}
    mapped = import_annotations(ctx, "csv", src, collection="c", user=1,
                                options=ImportOptions(unknown_labels="map", partial=True))
    assert mapped.annotations_added == 2 and "Salp" in mapped.errors[0].reason
    assert {r[1] for r in stored(ctx, "c")} == {"Copepoda"}
    created = import_annotations(ctx, "csv", src, collection="d", user=1)
    assert created.labels_created == ["COPEPODA", "Salp"] or set(created.labels_created) == \
        {"COPEPODA", "Salp"}


def test_taxa_file_is_all_or_nothing(ctx, tmp_path):
    taxa = tmp_path / "taxa.csv"
    taxa.write_text("name,aphia_id,parent\nA,12,\nB,xx,\nC,3,Nowhere\n")
    before = snapshot(ctx)
    with ctx.session() as s, pytest.raises(FormatError) as exc:
        import_taxa(s, taxa)
    assert "line 3" in str(exc.value) and "line 4" in str(exc.value)
    assert snapshot(ctx) == before


def test_aphia_ids_travel_into_exports(ctx, tmp_path):
    import csv

    from aqualens.interchange.exporter import export_dataset

    taxa = tmp_path / "taxa.csv"
    taxa.write_text("name,aphia_id\nFish,11676\n")
    with ctx.session() as s:
        import_taxa(s, taxa)
    src = _csv(tmp_path, ['a.png,Fish,none,,,validated'])
    import_annotations(ctx, "csv", src, collection="c", user=1)
    from tests.interchange.test_roundtrip import _admin

    admin = _admin(ctx)
    export_dataset(ctx, "coco", tmp_path / "coco", user=admin, collection="c")
    cats = json.loads((tmp_path / "coco" / "annotations.json").read_text())["categories"]
    assert cats[0]["aphia_id"] == 11676
    export_dataset(ctx, "dwca", tmp_path / "dwca", user=admin, collection="c")
    row = next(csv.DictReader(open(tmp_path / "dwca" / "occurrence.txt"), delimiter="\t"))
    assert row["scientificNameID"] == "urn:lsid:marinespecies.org:taxname:11676"
    export_dataset(ctx, "ecotaxa", tmp_path / "eco", user=admin, collection="c")
    tsv = next((tmp_path / "eco").glob("ecotaxa_*.tsv")).read_text().splitlines()
    head, types, first = (line.split("\t") for line in tsv[:3])
    assert first[head.index("object_aphia_id")] == "11676"
    assert types[head.index("object_aphia_id")] == "[f]"


def test_url_only_images_become_annotation_only_records(ctx, tmp_path):
    from sqlalchemy import select

    from aqualens.catalog.tables import Collection

    make_image(tmp_path / "a.png", 20, 20)
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20},
                      {"id": 2, "file_name": "r.jpg", "coco_url": "http://x.org/r.jpg",
                       "width": 50, "height": 50}],
           "categories": [{"id": 1, "name": "Fish"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                           {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    report = import_annotations(ctx, "coco", tmp_path, collection="c", user=1)
    assert report.annotations_added == 1 and report.annotation_only == 1
    assert any("only a URL" in p.reason for p in report.warnings)
    with ctx.session() as s:
        meta = s.scalar(select(Collection).where(Collection.name == "c")).meta
    assert meta["annotation_only"][0]["url"] == "http://x.org/r.jpg"


def test_unreadable_file_raises_format_error(ctx, tmp_path):
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(FormatError, match="line 1"):
        import_annotations(ctx, "coco", tmp_path / "annotations.json", collection="c", user=1)
