"""Network outputs (numpy, batched) → typed results, shared by the ONNX and TorchScript runtimes.

Tensor conventions are in :mod:`aqualens.models.base`. All maths is vectorised over the batch;
the per-image loop only builds the small result objects.
"""

from __future__ import annotations

import numpy as np

from aqualens.core.errors import ModelError
from aqualens.models.base import (ONNX_BOXES, ONNX_EMBEDDING, ONNX_LABELS, ONNX_LOGITS,
                                  ONNX_MASKS, ONNX_SCORES, Box, Classification, Detection,
                                  Embedding, Mask, ModelInfo, Result, Segmentation, TaxonScore)
from aqualens.models.preprocess import (Transform, boxes_to_original, classwise_nms,
                                        mask_to_original, softmax)

DEFAULT_NMS_IOU = 0.5


def _label(info: ModelInfo, idx: int) -> tuple[str, int | None]:
    if 0 <= idx < len(info.labels):
        lab = info.labels[idx]
        return lab.name, lab.aphia_id
    return f"class_{idx}", None


def _need(outputs: dict[str, np.ndarray], name: str, info: ModelInfo) -> np.ndarray:
    if name in outputs:
        return outputs[name]
    if len(outputs) == 1 and name in (ONNX_LOGITS, ONNX_MASKS, ONNX_EMBEDDING):
        return next(iter(outputs.values()))
    raise ModelError(f"model {info.name} {info.version} has no output {name!r} "
                     f"(outputs: {', '.join(outputs) or 'none'})", field="artefact",
                     valid=f"outputs named per the AquaLens {info.task} convention")


def classify(info: ModelInfo, outputs: dict[str, np.ndarray], top_k: int,
             threshold: float) -> list[Result]:
    logits = np.asarray(_need(outputs, ONNX_LOGITS, info), dtype=np.float32)
    if logits.ndim != 2:
        raise ModelError(f"classifier output must be (N, C), got {logits.shape}", field="logits")
    if info.labels and logits.shape[1] != len(info.labels):
        raise ModelError(f"model outputs {logits.shape[1]} classes but declares "
                         f"{len(info.labels)} labels", field="labels")
    probs = softmax(logits)
    k = min(top_k, probs.shape[1])
    if probs.shape[1] <= 256:  # a full sort of few classes costs less than the extra passes
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(probs, idx, axis=1)
    else:  # argpartition + sort of the k best only: O(C) per row, vectorised
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(probs, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        scores = np.take_along_axis(part_scores, order, axis=1)
    out: list[Result] = []
    for row_i, row_s in zip(idx.tolist(), scores.tolist()):
        top = []
        for i, s in zip(row_i, row_s):
            if s < threshold and top:
                break
            name, aphia = _label(info, i)
            top.append(TaxonScore(name, aphia, round(float(s), 6), i))
        if top and top[0].score < threshold:
            top = []
        out.append(Classification(top))
    return out


def detect(info: ModelInfo, outputs: dict[str, np.ndarray], transforms: list[Transform],
           threshold: float) -> list[Result]:
    boxes = np.asarray(_need(outputs, ONNX_BOXES, info), dtype=np.float32)
    scores = np.asarray(_need(outputs, ONNX_SCORES, info), dtype=np.float32)
    labels = np.asarray(_need(outputs, ONNX_LABELS, info)).astype(np.int64)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] \
            or labels.shape != boxes.shape[:2]:
        raise ModelError(f"detector outputs must be boxes (N,K,4), scores (N,K), labels (N,K); "
                         f"got {boxes.shape}, {scores.shape}, {labels.shape}", field="boxes")
    iou = float(info.options.get("nms_iou", DEFAULT_NMS_IOU))
    floor = max(threshold, 1e-6)  # padding rows have score 0
    out: list[Result] = []
    for b, s, lab, t in zip(boxes, scores, labels, transforms):
        keep = s >= floor
        b, s, lab = b[keep], s[keep], lab[keep]
        kept = classwise_nms(b, s, lab, iou)
        xywh = boxes_to_original(b[kept], t)
        items = []
        for (x, y, w, h), sc, li in zip(xywh.tolist(), s[kept].tolist(), lab[kept].tolist()):
            name, aphia = _label(info, li)
            items.append(Box(round(x, 2), round(y, 2), round(w, 2), round(h, 2), name, aphia,
                             round(float(sc), 6), li))
        out.append(Detection(items))
    return out


def segment(info: ModelInfo, outputs: dict[str, np.ndarray], transforms: list[Transform],
            threshold: float) -> list[Result]:
    from pycocotools import mask as mask_utils

    logits = np.asarray(_need(outputs, ONNX_MASKS, info), dtype=np.float32)
    if logits.ndim != 4:
        raise ModelError(f"segmenter output must be (N, C, h, w), got {logits.shape}",
                         field="masks")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    argmax = probs.argmax(axis=1).astype(np.uint8)                  # N,h,w
    conf = probs.max(axis=1)
    skip_bg = bool(info.labels) and info.labels[0].name.lower() == "background"
    out: list[Result] = []
    for amap, cmap, t in zip(argmax, conf, transforms):
        full = mask_to_original(amap, t, info.input_spec)
        masks = []
        for c in np.unique(full).tolist():
            if skip_bg and c == 0:
                continue
            m = full == c
            score = float(cmap[amap == c].mean()) if (amap == c).any() else 0.0
            if score < threshold:
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            name, aphia = _label(info, c)
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            masks.append(Mask(name, aphia, round(score, 6), rle=rle, box=[x, y, w, h],
                              area=float(m.sum()), index=c))
        out.append(Segmentation(masks))
    return out


def embed(info: ModelInfo, outputs: dict[str, np.ndarray]) -> list[Result]:
    vec = np.asarray(_need(outputs, ONNX_EMBEDDING, info), dtype=np.float32)
    vec = vec.reshape(vec.shape[0], -1)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = vec / np.where(norms > 0, norms, 1)
    return [Embedding(v) for v in vec]


def decode(info: ModelInfo, outputs: dict[str, np.ndarray], transforms: list[Transform],
           top_k: int, threshold: float) -> list[Result]:
    """Dispatch on ``info.task``."""
    if info.task == "classify":
        return classify(info, outputs, top_k, threshold)
    if info.task == "detect":
        return detect(info, outputs, transforms, threshold)
    if info.task == "segment":
        return segment(info, outputs, transforms, threshold)
    return embed(info, outputs)
