"""``settings.models.intra_op_threads`` (AQUALENS_MODELS__INTRA_OP_THREADS): config, the ONNX
Runtime session options, torch's thread count, and the default Dask worker processes get."""

from __future__ import annotations

import pytest

from aqualens.core.config import load_settings, reset_settings
from aqualens.core.errors import ConfigError, ModelError
from aqualens.models.base import ModelInfo
from aqualens.models.onnx_runtime import OnnxModel, configured_threads
from aqualens.processing.cluster import THREADS_ENV, worker_env
from tests.models.nets import classifier_info, export_classifier


@pytest.fixture
def env_threads(monkeypatch):
    """Set the variable for this process's settings; cached settings are dropped around it."""
    def set_(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(THREADS_ENV, raising=False)
        else:
            monkeypatch.setenv(THREADS_ENV, value)
        reset_settings()

    yield set_
    reset_settings()


def test_setting_default_env_and_bad_values(env_threads, tmp_path) -> None:
    env_threads(None)
    assert load_settings(data_dir=tmp_path).models.intra_op_threads == 0
    env_threads("3")
    assert load_settings(data_dir=tmp_path).models.intra_op_threads == 3
    assert configured_threads() == 3
    assert configured_threads(1) == 1  # an explicit value wins
    for bad in ("-1", "two"):
        env_threads(bad)
        with pytest.raises(ConfigError) as err:
            load_settings(data_dir=tmp_path)
        assert err.value.field == THREADS_ENV
    with pytest.raises(ModelError):
        configured_threads(-2)


def test_onnx_session_options_get_the_setting(env_threads, tmp_path) -> None:
    onnx_path, _ = export_classifier(tmp_path)
    info = ModelInfo.from_dict(classifier_info())
    env_threads(None)
    default = OnnxModel.load(onnx_path, info, device="cpu")
    assert default.session.get_session_options().intra_op_num_threads == 0  # ORT's default
    env_threads("1")
    one = OnnxModel.load(onnx_path, info, device="cpu")
    opts = one.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    two = OnnxModel.load(onnx_path, info, device="cpu", threads=2)
    assert two.session.get_session_options().intra_op_num_threads == 2
    # Same predictions whatever the thread count.
    import numpy as np

    img = np.zeros((40, 50, 3), np.uint8)
    img[..., 1] = 200
    assert [r.to_dict() for r in one.predict([img])] == [r.to_dict() for r in two.predict([img])]


def test_torchscript_sets_torch_threads(env_threads, tmp_path) -> None:
    import torch

    from aqualens.models.torchscript_runtime import TorchScriptModel

    _, ts_path = export_classifier(tmp_path)
    before = torch.get_num_threads()
    try:
        env_threads("1")
        TorchScriptModel.load(ts_path, ModelInfo.from_dict(classifier_info()), device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_worker_processes_default_to_their_threads(env_threads, tmp_path) -> None:
    env_threads(None)
    assert worker_env(load_settings(data_dir=tmp_path), 2) == {THREADS_ENV: "2"}
    assert worker_env(None, 1) == {THREADS_ENV: "1"}
    assert worker_env(load_settings(data_dir=tmp_path, models={"intra_op_threads": 0}), 2) \
        == {THREADS_ENV: "0"}
    configured = load_settings(data_dir=tmp_path, models={"intra_op_threads": 4})
    assert worker_env(configured, 1) == {THREADS_ENV: "4"}
    env_threads("3")  # set in the environment of the process that starts the workers: kept
    assert worker_env(load_settings(data_dir=tmp_path), 1) == {THREADS_ENV: "3"}
    env_threads("0")  # explicitly the runtime's default: kept too
    assert worker_env(load_settings(data_dir=tmp_path), 2) == {THREADS_ENV: "0"}
