"""A DEEPaaS v2 module wrapping the benchmark's ONNX classifier, written the way iMagine modules
are (functions at module level; one file argument; JSON answer). ``bench/predict_api.py`` and
``bench/batch_predict.py`` make deepaas-run find it through a throw-away dist-info with a
``deepaas.v2.model`` entry point.

The preprocessing (:func:`prep`) is the one the benchmarks' raw onnxruntime loops use too, and
matches the model's AquaLens ``input_spec`` (set through ``BENCH_*`` environment variables):
``BENCH_SIZE`` (square input), ``BENCH_CHANNELS`` (1 = greyscale, 3 = RGB), ``BENCH_RESIZE``
(``stretch`` | ``letterbox``), ``BENCH_MEAN`` / ``BENCH_STD`` (0-1 units).
"""

import os

import numpy as np
from webargs import fields

_SESSION = None
LABELS = [f"class_{i}" for i in range(10)]


def _session():
    global _SESSION
    if _SESSION is None:
        import onnxruntime as ort

        _SESSION = ort.InferenceSession(os.environ["BENCH_ONNX_MODEL"],
                                        providers=["CPUExecutionProvider"])
    return _SESSION


def spec_from_env() -> dict:
    return {"size": int(os.environ.get("BENCH_SIZE", "128")),
            "channels": int(os.environ.get("BENCH_CHANNELS", "3")),
            "resize": os.environ.get("BENCH_RESIZE", "stretch"),
            "mean": float(os.environ.get("BENCH_MEAN", "0")),
            "std": float(os.environ.get("BENCH_STD", "1"))}


def read(path_or_bytes, channels: int) -> np.ndarray:
    """Decode to HxW (greyscale) or HxWx3 RGB uint8."""
    import cv2

    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    if isinstance(path_or_bytes, (bytes, bytearray)):
        img = cv2.imdecode(np.frombuffer(path_or_bytes, np.uint8), flag)
    else:
        img = cv2.imread(str(path_or_bytes), flag)
    return img if channels == 1 else img[:, :, ::-1]


def prep(img: np.ndarray, spec: dict) -> np.ndarray:
    """One decoded image -> CHW float32 network input (same result as AquaLens' preprocessing
    for the model's input_spec: stretch or centred letterbox on a 0 canvas, /255, mean/std)."""
    import cv2

    size = spec["size"]
    h, w = img.shape[:2]
    if spec["resize"] == "letterbox":
        s = min(size / w, size / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
    else:
        nw, nh = size, size
    interp = cv2.INTER_AREA if (nw < w or nh < h) else cv2.INTER_LINEAR
    small = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh), interpolation=interp)
    if small.ndim == 2:
        small = small[:, :, None]
    canvas = np.zeros((size, size, small.shape[2]), np.uint8)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas[oy:oy + nh, ox:ox + nw] = small
    x = (canvas.astype(np.float32) / 255.0 - spec["mean"]) / spec["std"]
    return x.transpose(2, 0, 1)


def top5(logits: np.ndarray) -> list[int]:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return list(np.argsort(-p)[:5]), p


def get_metadata():
    return {"name": "bench-onnx", "description": "ONNX classifier for the AquaLens benchmarks",
            "version": "1.0.0", "license": "Apache-2.0", "author": "AquaLens bench"}


def warm():
    _session()


def get_predict_args():
    return {"data": fields.Field(required=True, metadata={"type": "file", "location": "form",
                                                          "description": "image"})}


def predict(**kwargs):
    spec = spec_from_env()
    x = prep(read(kwargs["data"].filename, spec["channels"]), spec)
    logits = _session().run(None, {"input": np.ascontiguousarray(x[None])})[0][0]
    top, p = top5(logits)
    return {"labels": [LABELS[i] for i in top], "probabilities": [float(p[i]) for i in top]}
