"""ONNX and TorchScript runtimes with tiny nets exported inside the tests."""

from __future__ import annotations

import numpy as np
import pytest

from aqualens.core.errors import ModelError, ValidationError
from aqualens.models.base import InputSpec, ModelInfo, result_from_dict
from aqualens.models.onnx_runtime import OnnxModel
from aqualens.models.preprocess import (boxes_to_original, classwise_nms, fit_one,
                                        preprocess_batch)
from aqualens.models.torchscript_runtime import TorchScriptModel
from tests.models.nets import (classifier_info, colour_image, detector_info, export_classifier,
                               export_detector)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):  # noqa: ANN001, ANN201
    d = tmp_path_factory.mktemp("nets")
    return {"classify": export_classifier(d), "detect": export_detector(d)}


@pytest.mark.parametrize("cls,idx", [(OnnxModel, 0), (TorchScriptModel, 1)])
def test_classify_batch_topk_aphia(nets, cls, idx) -> None:  # noqa: ANN001
    info = ModelInfo.from_dict(classifier_info(runtime=cls.name))
    rt = cls.load(nets["classify"][idx], info, device="cpu")
    imgs = [colour_image((255, 0, 0)), colour_image((0, 255, 0), 10, 90),
            colour_image((0, 0, 255), 300, 20)[:, :, 0]]  # greyscale HxW input is accepted
    res = rt.predict(imgs, top_k=2)
    assert [r.best.label for r in res[:2]] == ["Calanoida", "Oithona"]
    assert res[0].best.aphia_id == 1100 and len(res[0].top) == 2
    assert res[0].top[0].score > res[0].top[1].score
    # threshold drops low-scoring classes
    assert len(rt.predict(imgs[:1], top_k=3, threshold=0.5)[0].top) == 1
    # round trip of the result dict
    assert result_from_dict(res[0].to_dict()) == res[0]


@pytest.mark.parametrize("cls,idx", [(OnnxModel, 0), (TorchScriptModel, 1)])
def test_detect_nms_and_letterbox_mapping(nets, cls, idx) -> None:  # noqa: ANN001
    info = ModelInfo.from_dict(detector_info(runtime=cls.name))
    rt = cls.load(nets["detect"][idx], info, device="cpu")
    (det,) = rt.predict([colour_image((9, 9, 9), 64, 128)], threshold=0.1)
    # two overlapping class-0 boxes → one after NMS; one class-1 box; padding rows dropped
    assert [(b.label, b.score) for b in det.boxes] == [("fish", 0.9), ("crab", 0.7)]
    # letterbox: 128x64 → scale 0.25, 8 px bars top/bottom; [4,4,20,20] → x 16, y 0 (clipped)
    assert det.boxes[0].xywh == [16.0, 0.0, 64.0, 48.0]
    assert det.boxes[0].aphia_id == 11676
    assert rt.predict([colour_image((9, 9, 9))], threshold=0.95)[0].boxes == []


def test_preprocess_vectorised_policies() -> None:
    spec = InputSpec(height=32, width=32, channels=3, mean=(0.5,), std=(0.5,), resize="letterbox")
    batch, ts = preprocess_batch([colour_image((255, 255, 255), 16, 64),
                                  colour_image((0, 0, 0), 64, 16)], spec)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert batch[0, :, 16, 16].tolist() == [1.0, 1.0, 1.0]      # image pixel normalised
    assert batch[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]     # letterbox bar (pad 0)
    assert ts[0].offset_y == 12 and ts[1].offset_x == 12
    grey = InputSpec(height=8, width=8, channels=1, mean=(0,), std=(1,), resize="pad")
    b, t = preprocess_batch([colour_image((255, 0, 0), 4, 4)], grey)
    assert b.shape == (1, 1, 8, 8) and t[0].scale_x == 1.0       # pad never enlarges
    out, t2 = fit_one(colour_image((1, 2, 3), 10, 20), InputSpec(height=5, width=5))
    assert out.shape == (5, 5, 3) and (t2.scale_x, t2.scale_y) == (0.25, 0.5)
    xywh = boxes_to_original(np.array([[0, 0, 5, 5]], np.float32), t2)
    assert xywh.tolist() == [[0, 0, 20, 10]]


def test_classwise_nms_keeps_other_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = classwise_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 2]


def test_bad_inputs_and_artefacts(nets, tmp_path) -> None:  # noqa: ANN001
    info = ModelInfo.from_dict(classifier_info())
    rt = OnnxModel.load(nets["classify"][0], info, device="cpu")
    with pytest.raises(ValidationError, match="top_k"):
        rt.predict([colour_image((1, 1, 1))], top_k=0)
    with pytest.raises(ValidationError, match="threshold"):
        rt.predict([colour_image((1, 1, 1))], threshold=2)
    with pytest.raises(ValidationError, match=r"images\[0\]"):
        rt.predict([np.zeros((4, 4, 3), np.float32)])
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load ONNX model broken.onnx"):
        OnnxModel.load(bad, info)
    with pytest.raises(ModelError, match="cannot load TorchScript"):
        TorchScriptModel.load(bad, info)
    # declared labels that do not match the outputs
    two = ModelInfo.from_dict({**classifier_info(), "labels": ["a", "b"]})
    with pytest.raises(ModelError, match="3 classes but declares 2 labels"):
        OnnxModel.load(nets["classify"][0], two).predict([colour_image((1, 1, 1))])


def test_model_info_validation() -> None:
    with pytest.raises(ValidationError, match="semantic version"):
        ModelInfo.from_dict({**classifier_info(), "version": "v1"})
    with pytest.raises(ValidationError, match="task"):
        ModelInfo.from_dict({**classifier_info(), "task": "guess"})
    with pytest.raises(ValidationError, match="duplicate labels"):
        ModelInfo.from_dict({**classifier_info(), "labels": ["a", "a"]})
    with pytest.raises(ValidationError, match="input_spec.channels"):
        InputSpec(channels=2)
    with pytest.raises(ValidationError, match="unknown input_spec keys"):
        InputSpec.from_dict({"hieght": 3})
    assert ModelInfo.from_dict({**classifier_info(), "version": "2.0.0-rc.1+build.5"})


def test_single_thread_twin_for_small_batches(nets, monkeypatch) -> None:  # noqa: ANN001
    """A small model may get a one-thread twin session for batches of 1-2 images; answers are
    the same whichever session runs; a model slower than the limit gets no twin."""
    import onnxruntime as ort

    from aqualens.models import onnx_runtime
    from aqualens.models.onnx_runtime import session_options, single_thread_twin

    info = ModelInfo.from_dict(classifier_info())
    rt = OnnxModel.load(nets["classify"][0], info, device="cpu", threads=0)
    imgs = [colour_image((255, 0, 0)), colour_image((0, 0, 255))]
    multi = rt.predict(imgs[:1], top_k=3) + rt.predict(imgs[1:], top_k=3)
    rt.small_session = ort.InferenceSession(str(nets["classify"][0]),
                                            sess_options=session_options(1),
                                            providers=["CPUExecutionProvider"])
    twin = rt.predict(imgs[:1], top_k=3) + rt.predict(imgs[1:], top_k=3)
    assert [r.best.label for r in twin] == [r.best.label for r in multi]
    assert [t.score for r in twin for t in r.top] == \
        pytest.approx([t.score for r in multi for t in r.top], abs=1e-5)
    assert [r.best.label for r in rt.predict(imgs * 3, top_k=1)] == \
        [r.best.label for r in multi] * 3  # a full batch runs on the default session
    monkeypatch.setattr(onnx_runtime, "TWIN_MAX_RUN_S", 0.0)
    assert single_thread_twin(nets["classify"][0], rt) is None
    assert OnnxModel.load(nets["classify"][0], info, device="cpu", threads=1).small_session \
        is None  # an explicit thread count is kept as it is
