"""The real samples in ../shared/data: EcoTaxa import_test and import_issues, UVP6, DeepFish."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from aqualens.catalog.tables import Annotation, Image
from aqualens.interchange.importer import ImportOptions, import_annotations
from tests.interchange.helpers import snapshot

# Each import_issues case: (refused?, a phrase the report must contain).
ISSUES = {
    "breaking_hierarchy": (False, None),
    "classif_without_state": (True, "object_annotation_category_id given without"),
    "corrupted_img": (True, "not a readable image"),
    "duplicate_in_tsv": (False, "duplicate of"),
    "extra_data_without_header": (True, "row has 90 values but the header has 88"),
    "no_classif_id": (False, None),
    "predicted_but_what": (True, "status 'predicted' without object_annotation_category"),
    "tsv_issues": (True, "object_lat 100 is outside"),
    "tsv_too_many_cols": (False, "EcoTaxa accepts at most 30"),
}
FATAL = {"empty_tsv": "type row", "empty_tsv2": "is empty", "no_relevant_file": "no ecotaxa"}


def test_ecotaxa_import_test_with_metadata(ctx, shared_data):
    report = import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_test",
                                collection="m106", user=1)
    assert not report.refused and report.annotations_added == 11
    with ctx.session() as s:
        img = s.scalar(select(Image).where(Image.original_name.like("%m106_mn01_n2_sml_1081.jpg")))
        assert (img.lat, img.lon, img.depth, img.instrument) == (18.0, -24.4166666666667, 300.0,
                                                                 "epson")
        assert img.captured_at.strftime("%Y%m%d %H%M%S") == "20140420 000420"
        assert img.meta["sample_id"] == "m106_mn01_n2_sml" and img.meta["acq_id"]
        ann = s.scalar(select(Annotation).where(Annotation.image_id == img.id))
        assert ann.status == "predicted" and ann.label.name == "detritus"
        assert ann.attributes["object_area"] == 929.0
        assert ann.attributes["ecotaxa_category_id"] == "84963"


@pytest.mark.parametrize("case", sorted(ISSUES))
def test_ecotaxa_import_issues(ctx, shared_data, case):
    refused, phrase = ISSUES[case]
    before = snapshot(ctx)
    report = import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_issues" / case,
                                collection="issues", user=1)
    assert report.refused is refused, [str(p) for p in report.problems]
    text = " | ".join(str(p) for p in report.problems)
    if phrase:
        assert phrase in text
    if refused:
        assert snapshot(ctx) == before  # nothing stored half-way
        assert all(p.file and p.location for p in report.errors if "line" in (p.location or "")
                   ) and any(".tsv" in p.file or ".txt" in p.file or ".jpg" in p.file
                             or ".png" in p.file for p in report.errors)
    else:
        assert report.annotations_added >= 1


@pytest.mark.parametrize("case", sorted(FATAL))
def test_ecotaxa_unreadable_cases(ctx, shared_data, case):
    from aqualens.core.errors import FormatError

    before = snapshot(ctx)
    with pytest.raises(FormatError, match=FATAL[case]):
        import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_issues" / case,
                           collection="issues", user=1)
    assert snapshot(ctx) == before


def test_breaking_hierarchy_after_import_test_warns(ctx, shared_data):
    import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_test", collection="m",
                       user=1)
    report = import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_issues" /
                                "breaking_hierarchy", collection="m", user=1)
    assert not report.refused and report.annotations_added == 1
    assert any("already stored with other values for sample_id" in p.reason
               for p in report.warnings)


def test_partial_imports_the_valid_issue_rows(ctx, shared_data):
    report = import_annotations(ctx, "ecotaxa", shared_data / "ecotaxa" / "import_issues" /
                                "tsv_issues", collection="p", user=1,
                                options=ImportOptions(partial=True))
    assert not report.refused and report.annotations_added == 1 and report.errors


@pytest.mark.slow
def test_uvp6_class_folders(ctx, shared_data):
    report = import_annotations(ctx, "folders", shared_data / "uvp6", collection="uvp6", user=1)
    assert not report.refused and report.annotations_added == 1250
    from aqualens.catalog.tables import Label

    with ctx.session() as s:
        labels = set(s.scalars(select(Label.name)))
    # Folder "Copepoda__6666" -> label "Copepoda" (suffix kept as attribute folder_suffix).
    assert labels == {"Acantharea", "Aulacanthidae", "Aulosphaeridae", "Copepoda",
                      "Trichodesmium", "badfocus", "bubble", "darksphere", "detritus", "fiber"}


@pytest.mark.slow
def test_deepfish_yolo(ctx, shared_data):
    report = import_annotations(ctx, "yolo", shared_data / "deepfish", collection="deepfish",
                                user=1)
    assert not report.refused and report.images_linked == 645
    assert report.annotations_added == 1395
    with ctx.session() as s:
        with_boxes = s.scalar(select(func.count(func.distinct(Annotation.image_id))))
        assert s.scalar(select(func.count()).select_from(Image)) - with_boxes == 219
