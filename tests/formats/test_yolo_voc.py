"""YOLO names/variants/edge cases, VOC flags and XML safety, class folders, masks, DwC, CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from aqualens.core.errors import FormatError
from aqualens.formats import get_format
from tests.interchange.helpers import make_image


def _yolo(tmp_path, names_yaml: str, labels: dict[str, str]):  # noqa: ANN202
    (tmp_path / "data.yaml").write_text(names_yaml)
    for stem, text in labels.items():
        make_image(tmp_path / "images" / "train" / f"{stem}.jpg", 100, 50, seed=len(stem))
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        if text is not None:
            (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    return tmp_path


def test_yolo_dict_names_with_numeric_strings_and_gaps(tmp_path):
    src = _yolo(tmp_path, "names:\n  '0': '12'\n  '3': '7'\n  5: Fish\n",
                {"a": "3 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1", "b": "", "c": "5 0.5 0.5 0.5 0.5 0.8"})
    ds = get_format("yolo").read(src)
    assert not ds.problems
    assert sorted(a.label for a in ds.annotations) == ["12", "7", "Fish"]
    fish = next(a for a in ds.annotations if a.label == "Fish")
    assert fish.score == 0.8 and fish.status == "predicted"
    seven = next(a for a in ds.annotations if a.label == "7")
    assert seven.geometry == pytest.approx([40.0, 20.0, 20.0, 10.0])
    assert ds.images[0].metadata["split"] == "train"


def test_yolo_polygons_list_names_and_bad_lines(tmp_path):
    src = _yolo(tmp_path, "names: [a, b]\n",
                {"p": "1 0.1 0.1 0.5 0.1 0.5 0.5\n9 0.1 0.1 0.1 0.1\nx y\n0 0.5 0.5\n"})
    ds = get_format("yolo").read(src)
    assert [a.geometry_type for a in ds.annotations] == ["polygon"]
    assert ds.annotations[0].geometry == [pytest.approx([10.0, 5.0, 50.0, 5.0, 50.0, 25.0])]
    reasons = " ".join(p.reason for p in ds.problems)
    assert "class index 9" in reasons and "integer" in reasons and "expected 4" in reasons
    assert {p.location for p in ds.problems} == {"2", "3", "4"}


def test_yolo_bad_yaml_names_the_file(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [a\n")
    make_image(tmp_path / "images" / "x.jpg")
    with pytest.raises(FormatError, match="data.yaml"):
        get_format("yolo").read(tmp_path)
    (tmp_path / "data.yaml").write_text("names: 5\n")
    with pytest.raises(FormatError, match="names"):
        get_format("yolo").read(tmp_path)


VOC = """<annotation><filename>a.jpg</filename><size><width>100</width><height>50</height>
<depth>3</depth></size><object><name>Fish</name><truncated>1</truncated><difficult>1</difficult>
<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>
<object><name>Fish</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"""


def test_voc_flags_and_problems(tmp_path):
    make_image(tmp_path / "JPEGImages" / "a.jpg", 100, 50)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(VOC)
    ds = get_format("voc").read(tmp_path)
    assert ds.annotations[0].geometry == [10.0, 5.0, 20.0, 20.0]
    assert ds.annotations[0].attributes == {"difficult": 1, "truncated": 1}
    assert ds.problems[0].location == "object 2"


def test_voc_refuses_entities(tmp_path):
    (tmp_path / "bomb.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        "<annotation><filename>&y;</filename></annotation>")
    with pytest.raises(FormatError, match="entities"):
        get_format("voc").read(tmp_path)


def test_class_folders_suffix_modes(tmp_path):
    make_image(tmp_path / "Copepoda__1080" / "1.png", 10, 10, seed=1)
    make_image(tmp_path / "detritus" / "2.png", 10, 10, seed=2)
    (tmp_path / "meta.tsv").write_text("objid\tacq_threshold\n1\t21\n")
    ds = get_format("folders").read(tmp_path)
    assert sorted(a.label for a in ds.annotations) == ["Copepoda", "detritus"]
    assert next(i for i in ds.images if i.ref.endswith("1.png")).metadata == {"acq_threshold": 21.0}
    ds = get_format("folders").read(tmp_path, {"suffix": "aphia"})
    assert ds.label_index()["Copepoda"].aphia_id == 1080
    ds = get_format("folders").read(tmp_path, {"suffix": "keep"})
    assert "Copepoda__1080" in ds.label_index()


def test_semantic_masks_with_label_table(tmp_path):
    make_image(tmp_path / "images" / "a.png", 20, 10)
    (tmp_path / "masks").mkdir()
    arr = np.zeros((10, 20), dtype=np.uint8)
    arr[1:4, 1:4] = 1
    arr[5:8, 10:15] = 2
    arr[0, 19] = 9
    Image.fromarray(arr).save(tmp_path / "masks" / "a.png")
    (tmp_path / "labels.csv").write_text("index,name,aphia_id\n1,Copepoda,1080\n2,Fish,\n")
    ds = get_format("masks").read(tmp_path)
    assert sorted(a.label for a in ds.annotations) == ["Copepoda", "Fish"]
    assert ds.problems[0].location == "value 9"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    ds = get_format("masks").read(tmp_path)
    assert "image is 20x10" in ds.problems[0].reason


def test_dwca_has_scientific_name_id_and_meta(tmp_path):
    from aqualens.formats.base import AnnotationRecord, Dataset, ImageRecord, LabelRecord

    img = make_image(tmp_path / "x.png")
    ds = Dataset(images=[ImageRecord("x.png", img, width=64, height=48,
                                     metadata={"lat": 1.5, "lon": 2.5, "depth_min": 10.0,
                                               "depth_max": 20.0, "captured_at": "2020-01-02"})],
                 labels=[LabelRecord("Calanus", aphia_id=104464)],
                 annotations=[AnnotationRecord("x.png", "Calanus"),
                              AnnotationRecord("x.png", "Calanus", status="predicted")])
    get_format("dwca").write(ds, tmp_path / "out", {"media_base_url": "https://m.org/img"})
    rows = list(csv.DictReader(open(tmp_path / "out" / "occurrence.txt"), delimiter="\t"))
    assert len(rows) == 1  # validated only
    r = rows[0]
    assert r["scientificNameID"] == "urn:lsid:marinespecies.org:taxname:104464"
    assert (r["decimalLatitude"], r["minimumDepthInMeters"], r["maximumDepthInMeters"]) == \
        ("1.5", "10.0", "20.0")
    assert r["associatedMedia"] == "https://m.org/img/x.png"
    assert r["basisOfRecord"] == "MachineObservation" and r["eventDate"] == "2020-01-02"
    meta = (tmp_path / "out" / "meta.xml").read_text()
    assert "http://rs.tdwg.org/dwc/terms/scientificNameID" in meta
    assert (tmp_path / "out" / "eml.xml").is_file()


def test_csv_wrong_column_types(tmp_path):
    make_image(tmp_path / "a.png")
    (tmp_path / "annotations.csv").write_text(
        "image,label,geometry_type,geometry,score,status\n"
        "a.png,Fish,box,\"[1,2,3,4]\",high,validated\n"
        "a.png,Fish,blob,,0.5,validated\n"
        "a.png,Fish,box,\"[1,2,3,4]\",0.5,maybe\n"
        "nope.png,Fish,none,,,\n")
    ds = get_format("csv").read(tmp_path)
    reasons = [(p.location, p.reason) for p in ds.problems]
    assert reasons[0] == ("line 2", "column score: 'high' is not a number")
    assert "geometry_type" in reasons[1][1] and "status" in reasons[2][1]
    assert "nope.png" in reasons[3][1]
    (tmp_path / "annotations.csv").write_bytes(b"image,label\n\xff\xfe,x\n")
    with pytest.raises(FormatError, match="bad encoding"):
        get_format("csv").read(tmp_path)


def test_ecotaxa_latin1_and_bom(tmp_path):
    make_image(tmp_path / "v.png")
    text = "img_file_name\tobject_id\tobject_annotation_category\tsample_comment\n" \
           "[t]\t[t]\t[t]\t[t]\nv.png\to1\tCopépode\tcôte\n"
    (tmp_path / "ecotaxa_a.tsv").write_bytes(text.encode("latin-1"))
    ds = get_format("ecotaxa").read(tmp_path)
    assert ds.annotations[0].label == "Copépode"
    assert ds.images[0].metadata["sample_comment"] == "côte"
    (tmp_path / "ecotaxa_a.tsv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ds = get_format("ecotaxa").read(tmp_path)
    assert ds.annotations[0].label == "Copépode"
    assert json.dumps(ds.images[0].metadata)
