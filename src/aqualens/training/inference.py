"""Inference with a network being trained: batched prediction in the exported graph's decoding,
and the validation metrics that pick the best epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aqualens.training.data import TrainData
from aqualens.training.nets import Detector, DetectorExport
from aqualens.training.nms import batched_nms


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict_classify(net: torch.nn.Module, images: np.ndarray, mean: list[float],
                     std: list[float], device: torch.device, batch: int = 128) -> np.ndarray:
    """Softmax probabilities (N, C)."""
    net.eval()
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = (to_tensor(images[i:i + batch], device) - m) / s
        out.append(torch.softmax(net(x), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def predict_detect(net: Detector, images: np.ndarray, mean: list[float], std: list[float],
                   device: torch.device, batch: int = 16, iou: float = 0.5,
                   flip_test: bool | None = None,
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Decoded detections per image (boxes xyxy input px, scores, labels), class-wise NMS.

    Decoding is the exported graph's (:class:`DetectorExport`), flip test included when the
    network's config asks for it (``flip_test`` overrides).
    """
    net.eval()
    graph = DetectorExport(net, flip_test)      # the decoding of the exported ONNX graph
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = (to_tensor(images[i:i + batch], device) - m) / s
        boxes, scores, labels = graph(x)
        for b, sc, lb in zip(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()):
            ok = sc > 0.001
            b, sc, lb = b[ok], sc[ok], lb[ok]
            keep = batched_nms(b, sc, lb, iou)
            out.append((b[keep], sc[keep], lb[keep]))
    return out


def validate(net: torch.nn.Module, task: str, data: TrainData, names: list[str],
             mean: list[float], std: list[float], device: torch.device) -> dict[str, Any]:
    """Validation metrics; the selection metric is ``accuracy`` (classify) or ``AP50``."""
    from aqualens.training.evaluate import classification_metrics, detection_metrics

    if task == "classify":
        probs = predict_classify(net, data.images, mean, std, device)
        return classification_metrics(data.labels, probs, names)
    dets = predict_detect(net, data.images, mean, std, device)
    h, w = data.images.shape[1:3]
    gt = list(zip(data.boxes, data.box_labels))
    return detection_metrics(gt, dets, [(w, h)] * len(data), names)
