"""TorchScript runtime: a ``torch.jit.save``d module following the ONNX tensor conventions.

The module takes the NCHW float batch and returns either one tensor (classify: logits; segment:
masks; embed: embedding), a tuple in convention order (detect: boxes, scores, labels), or a dict
keyed by the convention names.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from aqualens.core.errors import ModelError
from aqualens.models.base import (ONNX_BOXES, ONNX_EMBEDDING, ONNX_LABELS, ONNX_LOGITS,
                                  ONNX_MASKS, ONNX_SCORES, ModelInfo)
from aqualens.models.tensor_runtime import TensorRuntime

SINGLE_OUTPUT = {"classify": ONNX_LOGITS, "segment": ONNX_MASKS, "embed": ONNX_EMBEDDING}


class TorchScriptModel(TensorRuntime):
    """A TorchScript model on CPU or CUDA."""

    name = "torchscript"
    suffixes = (".pt", ".pth", ".torchscript", ".ts")

    def __init__(self, info: ModelInfo, module, device: str) -> None:  # noqa: ANN001
        super().__init__(info, device)
        self.module = module
        self._lock = threading.Lock()

    @classmethod
    def load(cls, artefact: Path, info: ModelInfo, device: str = "auto", *,
             threads: int | None = None) -> TorchScriptModel:
        """Load a TorchScript artefact. ``threads`` (else ``settings.models.intra_op_threads``),
        when > 0, sets torch's intra-op threads: process-wide, as torch has one pool."""
        import torch

        from aqualens.models.onnx_runtime import configured_threads

        n = configured_threads(threads)
        if n > 0 and torch.get_num_threads() != n:
            torch.set_num_threads(n)

        if device == "cuda" and not torch.cuda.is_available():
            raise ModelError("device 'cuda' asked for but torch sees no GPU", field="device",
                             valid="auto, cpu")
        dev = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        try:
            module = torch.jit.load(str(artefact), map_location=dev)
        except Exception as exc:  # torch raises RuntimeError with long C++ traces
            raise ModelError(f"cannot load TorchScript model {Path(artefact).name}: "
                             f"{str(exc).splitlines()[0][:300]}", field="artefact") from None
        module.eval()
        return cls(info, module, dev)

    def _outputs(self, raw) -> dict[str, np.ndarray]:  # noqa: ANN001
        def np_(t):  # noqa: ANN001, ANN202
            return t.detach().cpu().numpy()

        if isinstance(raw, dict):
            return {k: np_(v) for k, v in raw.items()}
        if isinstance(raw, (tuple, list)):
            if self.info.task == "detect" and len(raw) == 3:
                return dict(zip((ONNX_BOXES, ONNX_SCORES, ONNX_LABELS), map(np_, raw)))
            raw = raw[0]
        return {SINGLE_OUTPUT.get(self.info.task, ONNX_LOGITS): np_(raw)}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with self._lock, torch.inference_mode():
            raw = self.module(torch.from_numpy(batch).to(self.device))
        return self._outputs(raw)
