"""COCO: RLE (compressed and uncompressed), iscrowd, gapped ids, results, pycocotools/COCOeval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aqualens.core.errors import FormatError
from aqualens.formats import get_format
from aqualens.formats.geometry import rle_encode
from tests.interchange.helpers import make_image, sample_dataset


def _coco(tmp_path, anns, cats=None, images=None):  # noqa: ANN001, ANN202
    make_image(tmp_path / "images" / "a.png", 40, 30, seed=1)
    doc = {"images": images or [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
           "categories": cats or [{"id": 0, "name": "Copepoda", "supercategory": "Crustacea",
                                   "aphia_id": 1080}, {"id": 5, "name": "Fish"}],
           "annotations": anns}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    return tmp_path


def test_reads_rle_polygons_iscrowd_and_gapped_ids(tmp_path):
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:10, 5:15] = 1
    # Uncompressed RLE: column-major run lengths starting with zeros.
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    src = _coco(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 0, "bbox": [1, 2, 3, 4]},
        {"id": 2, "image_id": 7, "category_id": 5,
         "segmentation": [[1, 1, 5, 1, 5, 5], [10, 10, 12, 10, 12, 12]]},
        {"id": 3, "image_id": 7, "category_id": 5, "iscrowd": 1,
         "segmentation": {"size": [30, 40], "counts": counts}},
        {"id": 4, "image_id": 7, "category_id": 0, "segmentation": rle_encode(mask)},
    ])
    ds = get_format("coco").read(src)
    assert not ds.problems
    kinds = [a.geometry_type for a in ds.annotations]
    assert kinds == ["box", "polygon", "mask", "mask"]
    assert ds.annotations[2].attributes["iscrowd"] == 1
    assert ds.annotations[2].geometry == ds.annotations[3].geometry  # same mask, both encodings
    assert ds.label_index()["Copepoda"].aphia_id == 1080
    assert ds.label_index()["Copepoda"].supercategory == "Crustacea"


def test_bad_records_are_problems_naming_the_object(tmp_path):
    src = _coco(tmp_path, [{"id": 9, "image_id": 99, "category_id": 0, "bbox": [1, 2, 3, 4]},
                           {"id": 10, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]},
                           {"id": 11, "image_id": 7, "category_id": 0,
                            "segmentation": {"size": [30, 40], "counts": [1, 2]}}])
    ds = get_format("coco").read(src)
    msgs = {p.location: p.reason for p in ds.problems}
    assert "image_id 99" in msgs["annotation id 9"]
    assert "category_id 3" in msgs["annotation id 10"]
    assert "counts" in msgs["annotation id 11"]


def test_results_file_comes_in_as_predictions(tmp_path):
    src = _coco(tmp_path, [])
    (tmp_path / "results.json").write_text(json.dumps(
        [{"image_id": 7, "category_id": 5, "bbox": [1, 1, 5, 5], "score": 0.9}]))
    ds = get_format("coco").read(src)
    assert [(a.status, a.score) for a in ds.annotations] == [("predicted", 0.9)]
    # A bare result list needs the instances file.
    with pytest.raises(FormatError, match="result list"):
        get_format("coco").read(tmp_path / "results.json")
    ds = get_format("coco").read(tmp_path / "results.json", {"gt": tmp_path / "annotations.json"})
    assert len(ds.annotations) == 1


def test_url_only_images_are_kept_without_path(tmp_path):
    src = _coco(tmp_path, [{"id": 1, "image_id": 8, "category_id": 0, "bbox": [1, 1, 2, 2]}],
                images=[{"id": 8, "file_name": "remote.jpg", "coco_url": "http://x.org/remote.jpg",
                         "width": 100, "height": 80}])
    ds = get_format("coco").read(src)
    assert ds.images[0].path is None and ds.images[0].url == "http://x.org/remote.jpg"
    assert len(ds.annotations) == 1


def test_export_loads_in_pycocotools_and_cocoeval_runs(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = sample_dataset(tmp_path / "imgs")
    get_format("coco").write(ds, tmp_path / "out", {})
    gt = COCO(str(tmp_path / "out" / "annotations.json"))
    assert len(gt.getAnnIds()) == len(ds.annotations)
    assert {c["name"]: c.get("aphia_id") for c in gt.loadCats(gt.getCatIds())}["Copepoda"] == 1080
    for ann in gt.loadAnns(gt.getAnnIds()):
        gt.annToMask(ann)  # every segmentation decodes
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt.loadAnns(gt.getAnnIds())]
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] > 0.9  # detections equal to the ground truth
