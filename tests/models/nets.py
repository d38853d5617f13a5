"""Tiny torch nets exported inside the tests (no downloads): a classifier and a detector that
follow the AquaLens ONNX conventions, saved as ONNX and TorchScript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

LABELS = [{"name": "Calanoida", "aphia_id": 1100}, {"name": "Oithona", "aphia_id": 106485},
          {"name": "detritus", "aphia_id": None}]
SIZE = 32


class TinyClassifier(nn.Module):
    """Mean colour → logits, so the predicted class is controllable: a red image is class 0,
    green class 1, blue class 2 (inputs normalised with mean 0, std 1, scale 1/255)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3) * 10)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)  # a real conv layer in the graph; its value does not drive the class
        return self.fc(x.mean(dim=(2, 3))) + 0.0 * feat.mean()


class TinyDetector(nn.Module):
    """Emits fixed boxes in network pixels: two overlapping boxes of class 0 (NMS keeps one),
    one box of class 1, and padding rows with score 0."""

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        n = x.shape[0]
        boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [5.0, 5.0, 21.0, 21.0],
                              [16.0, 8.0, 28.0, 16.0], [0.0, 0.0, 0.0, 0.0]])
        scores = torch.tensor([0.9, 0.8, 0.7, 0.0])
        labels = torch.tensor([0, 0, 1, 0], dtype=torch.int64)
        k = x.mean() * 0  # keep the input in the graph
        return (boxes.expand(n, 4, 4) + k, scores.expand(n, 4) + k, labels.expand(n, 4))


def export_classifier(folder: Path) -> tuple[Path, Path]:
    """Returns (model.onnx, model.pt)."""
    torch.manual_seed(0)
    net = TinyClassifier().eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    onnx_path, ts_path = folder / "classifier.onnx", folder / "classifier.pt"
    torch.onnx.export(net, x, str(onnx_path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    torch.jit.save(torch.jit.trace(net, x), str(ts_path))
    return onnx_path, ts_path


def export_detector(folder: Path) -> tuple[Path, Path]:
    net = TinyDetector().eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    onnx_path, ts_path = folder / "detector.onnx", folder / "detector.pt"
    torch.onnx.export(net, x, str(onnx_path), input_names=["input"],
                      output_names=["boxes", "scores", "labels"],
                      dynamic_axes={"input": {0: "n"}, "boxes": {0: "n"}, "scores": {0: "n"},
                                    "labels": {0: "n"}}, dynamo=False)
    torch.jit.save(torch.jit.trace(net, x), str(ts_path))
    return onnx_path, ts_path


def colour_image(rgb: tuple[int, int, int], h: int = 48, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:] = rgb
    return img


def classifier_info(name: str = "tiny-plankton", version: str = "1.0.0",
                    runtime: str = "onnx") -> dict:
    return {"name": name, "version": version, "task": "classify", "runtime": runtime,
            "labels": LABELS, "input_spec": {"height": SIZE, "width": SIZE, "channels": 3},
            "licence": "CC-BY-4.0", "keywords": ["plankton", "test"],
            "description": "A tiny test classifier", "card": "# Tiny\nTest model."}


def detector_info(runtime: str = "onnx") -> dict:
    return {"name": "tiny-fish", "version": "0.1.0", "task": "detect", "runtime": runtime,
            "labels": [{"name": "fish", "aphia_id": 11676}, {"name": "crab", "aphia_id": None}],
            "input_spec": {"height": SIZE, "width": SIZE, "channels": 3,
                           "resize": "letterbox"}}


def register_classifier(ctx, folder: Path, *, name: str = "tiny-plankton",  # noqa: ANN001
                        version: str = "1.0.0", visibility: str = "private",
                        runtime: str = "onnx"):  # noqa: ANN201
    """Register the tiny classifier in ``ctx`` as the admin; returns the model id."""
    from aqualens.catalog.users import get_admin
    from aqualens.models.base import ModelInfo
    from aqualens.models.registry import register_model

    onnx_path, ts_path = export_classifier(folder)
    with ctx.session() as s:
        m = register_model(s, ctx.store, onnx_path if runtime == "onnx" else ts_path,
                           ModelInfo.from_dict(classifier_info(name, version, runtime)),
                           get_admin(s).id, metrics={"overall": {"accuracy": 0.9},
                                                     "per_class": {"Oithona": {"f1": 0.8}}},
                           visibility=visibility)
        return m.id


def png_bytes(rgb: tuple[int, int, int], h: int = 48, w: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(colour_image(rgb, h, w)).save(buf, format="PNG")
    return buf.getvalue()


def add_image(ctx, rgb: tuple[int, int, int], visibility: str = "private") -> int:  # noqa: ANN001
    """Store a PNG of one colour as a catalogue image owned by the admin; returns its id."""
    import hashlib

    from aqualens.catalog.tables import Image
    from aqualens.catalog.users import get_admin

    data = png_bytes(rgb)
    sha = ctx.store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    with ctx.session() as s:
        row = Image(sha256=sha, size=len(data), width=64, height=48, format="PNG",
                    owner_id=get_admin(s).id, visibility=visibility, original_name=f"{rgb}.png")
        s.add(row)
        s.flush()
        return row.id
