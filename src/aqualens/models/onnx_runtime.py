"""ONNX Runtime: the default serving runtime (CUDA when available, else CPU)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from aqualens.core.errors import ModelError
from aqualens.models.base import (ONNX_INPUT, ModelInfo)
from aqualens.models.tensor_runtime import TensorRuntime


def configured_threads(threads: int | None = None) -> int:
    """Intra-op threads for a runtime: ``threads`` when given, else this process's setting
    ``AQUALENS_MODELS__INTRA_OP_THREADS`` (``settings.models.intra_op_threads``; 0 = the
    runtime's default, all cores). Dask worker processes started by AquaLens get it set to their
    thread count (see :mod:`aqualens.processing.cluster`)."""
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ModelError(f"threads must be an integer >= 0, got {threads!r}",
                             field="intra_op_threads", valid="0 (runtime default), 1, 2, ...")
        return threads
    from aqualens.core.config import get_settings

    return get_settings().models.intra_op_threads


def session_options(threads: int | None = None):  # noqa: ANN201 - onnxruntime.SessionOptions
    """ONNX Runtime session options: full graph optimisation, intra-op threads per
    :func:`configured_threads` (left to ORT's default when 0)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads that find no work sleep instead of spinning: the cores are shared with a server's
    # event loop, other worker processes or the client (spinning halved the predict API's
    # throughput with a small model; bench/RESULTS.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    n = configured_threads(threads)
    if n > 0:  # several worker processes share the cores: each session gets its share
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
    return opts


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu", "cuda")."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError("device 'cuda' asked for but onnxruntime has no CUDA provider",
                         field="device", valid="auto, cpu")
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel(TensorRuntime):
    """An ONNX model following the AquaLens tensor conventions (see :mod:`models.base`)."""

    name = "onnx"
    suffixes = (".onnx",)

    def __init__(self, info: ModelInfo, session, device: str) -> None:  # noqa: ANN001
        super().__init__(info, device)
        self.session = session
        self.small_session = None  # see single_thread_twin
        inputs = session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = ONNX_INPUT if ONNX_INPUT in names else names[0]
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        # A model exported with a fixed batch of 1 is run image by image.
        self.max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.output_names = [o.name for o in session.get_outputs()]
        spec = info.input_spec
        if len(shape) != 4:
            raise ModelError(f"ONNX input {self.input_name!r} must be NCHW (4-D), got {shape}",
                             field="artefact")
        fixed = [(d, want, what) for d, want, what in
                 ((shape[1], spec.channels, "channels"), (shape[2], spec.height, "height"),
                  (shape[3], spec.width, "width")) if isinstance(d, int) and d != want]
        if fixed:
            d, want, what = fixed[0]
            raise ModelError(f"the ONNX model expects {what} {d} but input_spec says {want}",
                             field=f"input_spec.{what}", valid=str(d))

    @classmethod
    def load(cls, artefact: Path, info: ModelInfo, device: str = "auto", *,
             threads: int | None = None) -> OnnxModel:
        """Load an ONNX artefact; ``threads`` overrides ``settings.models.intra_op_threads``."""
        import onnxruntime as ort

        opts = session_options(threads)
        providers = providers_for(device)
        try:
            session = ort.InferenceSession(str(artefact), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {Path(artefact).name}: "
                             f"{str(exc).splitlines()[0][:300]}", field="artefact") from None
        used = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
        model = cls(info, session, used)
        if used == "cpu" and configured_threads(threads) == 0 and (os.cpu_count() or 1) > 1:
            model.small_session = single_thread_twin(artefact, model)
        return model

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed batch, by output name."""
        step = self.max_batch or len(batch)
        session = self.small_session if self.small_session is not None \
            and len(batch) <= SMALL_BATCH else self.session
        parts = [session.run(None, {self.input_name: batch[i:i + step]})
                 for i in range(0, len(batch), step)]
        return {name: np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
                for j, name in enumerate(self.output_names)}

    def close(self) -> None:
        self.session = self.small_session = None


SMALL_BATCH = 2       # batches this small may run on the single-thread twin
TWIN_MAX_RUN_S = 0.02  # a model slower than this per image is big enough for every thread


def _median_run_s(session, name: str, x: np.ndarray, n: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def single_thread_twin(artefact: Path, model: OnnxModel):  # noqa: ANN201 - InferenceSession | None
    """A one-thread session of the same model for batches of one or two images, kept only when
    it runs one image clearly faster than the default (all-cores) session, as measured here.

    For a small model, waking ONNX Runtime's thread pool for each operator costs more than
    splitting the work gains (a 64x64 plankton classifier: 0.14 ms on one thread against
    0.21-0.31 ms on two, bench/RESULTS.md), which is what single-image API requests pay; big
    models and full batches keep every thread. A model slower than TWIN_MAX_RUN_S per image is
    not measured further (and gets no twin), so loading a big model costs two runs at most.
    """
    import onnxruntime as ort

    spec = model.info.input_spec
    x = np.zeros((1, spec.channels, spec.height, spec.width), dtype=np.float32)
    try:
        model.session.run(None, {model.input_name: x})  # warm-up
        if _median_run_s(model.session, model.input_name, x, 1) > TWIN_MAX_RUN_S:
            return None
        single = ort.InferenceSession(str(artefact), sess_options=session_options(1),
                                      providers=["CPUExecutionProvider"])
        _median_run_s(single, model.input_name, x, 3)  # warm-up
        multi_s = _median_run_s(model.session, model.input_name, x, 7)
        single_s = _median_run_s(single, model.input_name, x, 7)
    except Exception:  # noqa: BLE001 - a model that cannot run a blank image: no twin
        return None
    return single if single_s < 0.8 * multi_s else None
