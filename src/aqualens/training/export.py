"""ONNX export of trained networks (CONTRACTS.md conventions) and a parity check.

Input ``input`` float32 NCHW (resized + normalised), dynamic batch, opset 17. Classifiers output
``logits`` (N, C); detectors output ``boxes`` (N, K, 4 xyxy input px), ``scores`` (N, K) and
``labels`` (N, K int64), decoded inside the graph (see :class:`~aqualens.training.nets.DetectorExport`).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqualens.core.errors import ModelError
from aqualens.training.nets import Classifier, Detector, DetectorExport

OPSET = 17


def export_module(net: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """The module to export and its output names."""
    if isinstance(net, Detector):
        return DetectorExport(net), ["boxes", "scores", "labels"]
    if isinstance(net, Classifier):
        return net, ["logits"]
    raise ModelError(f"cannot export {type(net).__name__}", field="model")


def export_onnx(net: torch.nn.Module, path: Path, channels: int, height: int, width: int) -> Path:
    """Write ``net`` (eval mode, CPU copy) as ONNX at ``path``; batch size is dynamic."""
    net = copy.deepcopy(net).cpu().eval()
    mod, outputs = export_module(net)
    dummy = torch.zeros(2, channels, height, width)
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: no onnxscript dependency, single self-contained file.
        torch.onnx.export(mod, (dummy,), str(path), input_names=["input"], output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(path))
    return path


def parity_check(net: torch.nn.Module, path: Path, x: np.ndarray, atol: float = 1e-3
                 ) -> dict[str, Any]:
    """Run ``x`` (N,C,H,W float32) through PyTorch and onnxruntime; compare every output.

    Detection scores/boxes are compared where both rank the same peaks (ties in top-k may
    reorder equal scores); a mismatch beyond ``atol`` raises :class:`ModelError`.
    """
    import onnxruntime as ort

    net = copy.deepcopy(net).cpu().eval()
    mod, outputs = export_module(net)
    with torch.no_grad():
        ref = mod(torch.from_numpy(x))
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(outputs, {"input": x.astype(np.float32)})
    report: dict[str, Any] = {"n": int(x.shape[0])}
    if outputs == ["logits"]:
        d = float(np.abs(ref[0].numpy() - got[0]).max())
        report["logits_max_abs_diff"] = d
        if d > atol:
            raise ModelError(f"ONNX logits differ from PyTorch by {d:g}", field=str(path),
                             details=report)
    else:
        report.update(_match_detections([r.numpy() for r in ref], got, atol))
        if report["unmatched"]:
            raise ModelError(f"{report['unmatched']} ONNX detections differ from PyTorch",
                             field=str(path), details=report)
    report["ok"] = True
    return report


def _match_detections(ref: list[np.ndarray], got: list[np.ndarray], atol: float
                      ) -> dict[str, Any]:
    """Every PyTorch detection scoring clearly above the K-th score must appear in the ONNX
    output with the same label, score within ``atol`` and box within 1e-2 px (relative 1e-4).

    Peaks tied at the top-k boundary may be picked differently by the two runtimes; they are not
    compared.
    """
    rb, rs, rl = ref
    gb, gs, gl = got
    checked = unmatched = 0
    worst_box = worst_score = 0.0
    for i in range(rb.shape[0]):
        floor = rs[i].min() + 1e-4
        for j in np.nonzero(rs[i] > floor)[0]:
            checked += 1
            cand = np.nonzero((gl[i] == rl[i, j]) & (np.abs(gs[i] - rs[i, j]) <= atol))[0]
            if not len(cand):
                unmatched += 1
                continue
            d = np.abs(gb[i, cand] - rb[i, j]).max(axis=1)
            k = int(d.argmin())
            tol = 1e-2 + 1e-4 * float(np.abs(rb[i, j]).max())
            if d[k] > tol:
                unmatched += 1
            worst_box = max(worst_box, float(d[k]))
            worst_score = max(worst_score, float(np.abs(gs[i, cand[k]] - rs[i, j])))
    return {"checked": checked, "unmatched": unmatched, "boxes_max_abs_diff": worst_box,
            "scores_max_abs_diff": worst_score}
