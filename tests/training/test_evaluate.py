"""Metrics against hand-computed cases and against pycocotools run directly."""

from __future__ import annotations

import numpy as np
import pytest

from aqualens.training.evaluate import (classification_metrics, coco_dicts, confusion_png,
                                        detection_metrics, pr_png)
from aqualens.training.nms import batched_nms, box_iou, nms


def test_classification_metrics_hand_computed(tmp_path):
    # true: a a a b b c ; predicted: a a b b c c
    y = [0, 0, 0, 1, 1, 2]
    pred = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[pred] * 0.6 + 0.1
    scores[2] = [0.35, 0.45, 0.2]         # a predicted b, a second
    m = classification_metrics(y, scores, ["a", "b", "c"], top_k=2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls: a 2/3, b 1/2, c 1/1
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3,
                                                 "f1": 0.8, "support": 3})
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["c"]["precision"] == pytest.approx(1 / 2)
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["top1_accuracy"] == pytest.approx(4 / 6)
    assert m["top2_accuracy"] == pytest.approx(5 / 6)   # image 2 has 'a' second; image 4 not
    png = confusion_png(m, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detection_ap_hand_computed_and_pr_png(tmp_path):
    gt = [(np.array([[10, 10, 30, 30]], float), np.array([0]))]
    # A false positive ranked above the true positive: precision 0.5 at recall 1 -> AP50 0.5.
    dt = [(np.array([[60, 60, 80, 80], [10, 10, 30, 30]], float), np.array([0.9, 0.8]),
           np.array([0, 0]))]
    m = detection_metrics(gt, dt, [(100, 100)], ["fish"])
    assert m["AP50"] == pytest.approx(0.5, abs=1e-6)
    assert m["AP75"] == pytest.approx(0.5, abs=1e-6)
    assert m["per_class"]["fish"]["AP50"] == pytest.approx(0.5, abs=1e-6)
    perfect = detection_metrics(gt, [(gt[0][0], np.array([0.9]), np.array([0]))], [(100, 100)],
                                ["fish"])
    assert perfect["AP"] == pytest.approx(1.0)
    none = detection_metrics(gt, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))],
                             [(100, 100)], ["fish"])
    assert none["AP50"] == 0.0
    assert pr_png(m, tmp_path / "pr.png").stat().st_size > 1000


def test_detection_matches_pycocotools_directly():
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    gt, dt = [], []
    for _ in range(8):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 80, (n, 2))
        wh = rng.uniform(8, 20, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 2, n)
        gt.append((boxes, labels))
        jitter = boxes + rng.normal(0, 2, boxes.shape)
        extra = np.concatenate([rng.uniform(0, 80, (2, 2)), rng.uniform(0, 80, (2, 2)) + 10], 1)
        dt.append((np.concatenate([jitter, extra]), rng.uniform(0.1, 1, n + 2),
                   np.concatenate([labels, rng.integers(0, 2, 2)])))
    ours = detection_metrics(gt, dt, [(100, 100)] * 8, ["a", "b"])
    g, d = coco_dicts(gt, dt, [(100, 100)] * 8, ["a", "b"])
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = g
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(d), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["AP"] == pytest.approx(ev.stats[0])
    assert ours["AP50"] == pytest.approx(ev.stats[1])
    assert ours["AP75"] == pytest.approx(ev.stats[2])
    assert 0 < ours["AP50"] <= 1


def test_nms_hand_cases():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    # class-wise: the same box in another class survives
    assert sorted(batched_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5).tolist()) == [0, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []
