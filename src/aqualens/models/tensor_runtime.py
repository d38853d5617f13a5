"""The predict path shared by runtimes whose model maps a preprocessed batch to named arrays.

ONNX Runtime and TorchScript differ only in how one NCHW float32 batch becomes output arrays
(:meth:`TensorRuntime.run`); checking arguments, batched preprocessing, error wrapping and decoding
to typed results are the same and live here once.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from aqualens.core.errors import ModelError
from aqualens.models.base import ModelRuntime, Result, check_predict_args
from aqualens.models.postprocess import decode
from aqualens.models.preprocess import preprocess_batch


class TensorRuntime(ModelRuntime):
    """A runtime whose model is a function from an input batch to output arrays by name."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (named per the ONNX conventions in models/base.py) for one batch."""

    def predict(self, images: list[np.ndarray], top_k: int = 5,
                threshold: float = 0.0) -> list[Result]:
        check_predict_args(images, top_k, threshold)
        if not images:
            return []
        batch, transforms = preprocess_batch(images, self.info.input_spec)
        try:
            outputs = self.run(batch)
        except ModelError:
            raise
        except Exception as exc:  # runtimes raise their own types, often with long C++ traces
            raise ModelError(f"model {self.info.name} {self.info.version} failed: "
                             f"{str(exc).splitlines()[0][:300]}", field="images") from None
        return decode(self.info, outputs, transforms, top_k, float(threshold))
