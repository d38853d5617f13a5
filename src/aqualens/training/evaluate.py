"""Standard metrics: classification (accuracy, balanced accuracy, P/R/F1, top-k, confusion matrix)
and detection (COCO AP, AP50, AP75, per-class AP, PR curves) through pycocotools.

Pure functions over arrays; plots are drawn with matplotlib's Agg backend into PNG files.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], scores: np.ndarray, names: Sequence[str],
                           top_k: int = 5) -> dict[str, Any]:
    """Metrics from true class indices and per-class scores (N, C) (or predicted indices (N,)).

    Balanced accuracy is the mean recall over classes present in ``y_true``; macro F1 averages
    the same classes. Classes without support get precision from their false positives only.
    """
    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores)
    c = len(names)
    if s.ndim == 1:
        pred = s.astype(np.int64)
        ranked = pred[:, None]
    else:
        pred = s.argmax(axis=1)
        ranked = np.argsort(-s, axis=1, kind="stable")
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    present = support > 0
    n = len(y)
    out: dict[str, Any] = {
        "n": int(n),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {names[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                 "f1": float(f1[i]), "support": int(support[i])}
                      for i in range(c)},
        "confusion_matrix": {"labels": list(names), "matrix": cm.tolist()},
    }
    if ranked.shape[1] > 1:
        for k in sorted({1, min(top_k, c)}):
            hit = (ranked[:, :k] == y[:, None]).any(axis=1)
            out[f"top{k}_accuracy"] = float(hit.mean()) if n else 0.0
    return out


def confusion_png(metrics: dict[str, Any], path: Path, title: str = "Confusion matrix") -> Path:
    """Draw the confusion matrix (row-normalised colours, raw counts as text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metrics["confusion_matrix"]["labels"]
    cm = np.asarray(metrics["confusion_matrix"]["matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(names) <= 30:
        for i in range(len(names)):
            for j in range(len(names)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def coco_dicts(gt: Sequence[tuple[np.ndarray, np.ndarray]],
               dt: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
               sizes: Sequence[tuple[int, int]], names: Sequence[str]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """In-memory COCO ground truth dict and detection list.

    ``gt[i]`` = (boxes xyxy, labels); ``dt[i]`` = (boxes xyxy, scores, labels); ``sizes[i]`` =
    (width, height). Category ids are label index + 1 (COCO reserves 0).
    """
    images, anns, dets = [], [], []
    aid = 1
    for i, ((gb, gl), (w, h)) in enumerate(zip(gt, sizes), start=1):
        images.append({"id": i, "width": int(w), "height": int(h)})
        for box, lab in zip(_xywh(gb), np.asarray(gl).reshape(-1)):
            anns.append({"id": aid, "image_id": i, "category_id": int(lab) + 1,
                         "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                         "iscrowd": 0})
            aid += 1
    for i, (db, ds, dl) in enumerate(dt, start=1):
        for box, score, lab in zip(_xywh(db), np.asarray(ds).reshape(-1),
                                   np.asarray(dl).reshape(-1)):
            dets.append({"image_id": i, "category_id": int(lab) + 1,
                         "bbox": [float(v) for v in box], "score": float(score)})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def detection_metrics(gt: Sequence[tuple[np.ndarray, np.ndarray]],
                      dt: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      sizes: Sequence[tuple[int, int]], names: Sequence[str]) -> dict[str, Any]:
    """COCO AP (IoU .50:.95), AP50, AP75, per-class AP/AP50 and PR curves at IoU 0.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, dets = coco_dicts(gt, dt, sizes, names)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        n_gt = len(gt_dict["annotations"])
        out: dict[str, Any] = {"n_images": len(gt_dict["images"]), "n_boxes": n_gt,
                               "n_detections": len(dets)}
        if not dets or not n_gt:
            out.update({"AP": 0.0, "AP50": 0.0, "AP75": 0.0,
                        "per_class": {n: {"AP": None, "AP50": None} for n in names},
                        "pr_curves": {}})
            return out
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    out.update({"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2]),
                "AP_small": float(stats[3]), "AP_medium": float(stats[4]),
                "AP_large": float(stats[5]), "AR100": float(stats[8])})
    # precision: [T iou, R recall, K cat, A area, M maxdets]; area "all", maxDets 100.
    prec = ev.eval["precision"][:, :, :, 0, -1]
    rec_thrs = ev.params.recThrs
    per_class, curves = {}, {}
    for k, name in enumerate(names):
        p = prec[:, :, k]
        valid = p[p > -1]
        p50 = p[0]
        per_class[name] = {"AP": float(valid.mean()) if valid.size else None,
                           "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None}
        if (p50 > -1).any():
            curves[name] = {"recall": [float(r) for r in rec_thrs],
                            "precision": [float(max(v, 0.0)) for v in p50]}
    out["per_class"] = per_class
    out["pr_curves"] = curves
    return out


def pr_png(metrics: dict[str, Any], path: Path, title: str = "Precision-recall (IoU 0.5)") -> Path:
    """Draw the per-class precision-recall curves at IoU 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, curve in metrics.get("pr_curves", {}).items():
        ap = metrics["per_class"][name]["AP50"]
        ax.plot(curve["recall"], curve["precision"], label=f"{name} (AP50 {ap:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    if metrics.get("pr_curves"):
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
