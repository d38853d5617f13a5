"""A DEEPaaS v2 module wrapping the benchmark's ONNX classifier, written the way iMagine modules
are (functions at module level; one file argument; JSON answer). ``bench/predict_api.py`` makes
deepaas-run find it through a throw-away dist-info with a ``deepaas.v2.model`` entry point."""

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


def get_metadata():
    return {"name": "bench-onnx", "description": "ONNX classifier for bench/predict_api.py",
            "version": "1.0.0", "license": "Apache-2.0", "author": "AquaLens bench"}


def warm():
    _session()


def get_predict_args():
    return {"data": fields.Field(required=True, metadata={"type": "file", "location": "form",
                                                          "description": "image"})}


def predict(**kwargs):
    import cv2

    img = cv2.imread(kwargs["data"].filename, cv2.IMREAD_COLOR)[:, :, ::-1]
    size = int(os.environ.get("BENCH_SIZE", "128"))
    x = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    logits = _session().run(None, {"input": x})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:5]
    return {"labels": [LABELS[i] for i in top], "probabilities": [float(p[i]) for i in top]}
