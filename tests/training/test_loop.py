"""The training loop on tiny data: it learns, it checkpoints, and it resumes after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aqualens.core.errors import ValidationError
from aqualens.training.data import TrainData
from aqualens.training.config import TrainConfig
from aqualens.training.loop import TrainingCancelled, train
from tests.training.helpers import classify_image, detect_image

ROOT = Path(__file__).resolve().parents[2]


def _classify_data(n: int = 30) -> TrainData:
    imgs = np.stack([classify_image(i % 3, i)[:, :, None] for i in range(n)])
    return TrainData(images=imgs, labels=np.arange(n) % 3)


def test_tiny_classifier_trains_and_checkpoints(tmp_path):
    torch.set_num_threads(1)
    data = _classify_data()
    seen = []
    cfg = TrainConfig(task="classify", epochs=2, input_size=(32, 32), batch_size=8, threads=1)
    res = train(cfg, data, data, ["disc", "hbar", "vbar"], tmp_path, progress=seen.append)
    assert [p["epoch"] for p in seen] == [1, 2]
    assert {"loss", "val_metric", "eta_s", "epochs"} <= set(seen[0])
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ck["epoch"] == 2 and {"optimizer", "scheduler", "rng", "best_metric"} <= set(ck)
    assert (tmp_path / "best.pt").exists() and res.epochs_run == 2


def _detect_data(n: int) -> TrainData:
    """``n`` synthetic frames with their fish boxes (x1, y1, x2, y2)."""
    pairs = [detect_image(i) for i in range(n)]
    return TrainData(images=np.stack([p[0] for p in pairs]),
                     boxes=[np.array([[x, y, x + w, y + h] for x, y, w, h in p[1]],
                                     np.float32).reshape(-1, 4) for p in pairs],
                     box_labels=[np.zeros(len(p[1]), np.int64) for p in pairs])


def test_tiny_detector_trains(tmp_path):
    torch.set_num_threads(1)
    data = _detect_data(12)
    cfg = TrainConfig(task="detect", epochs=1, input_size=(64, 64), batch_size=4, threads=1,
                      train_crop=32)
    res = train(cfg, data, data, ["fish"], tmp_path)
    assert res.history[0]["metric"] == "AP50" and np.isfinite(res.history[0]["loss"])


def test_time_cap_fits_the_cosine_schedule(tmp_path, monkeypatch):
    """With ``max_minutes`` the schedule shrinks to the epochs that fit: the run still anneals."""
    import aqualens.training.loop as loop

    clock = {"t": 0.0}

    def fake_monotonic() -> float:           # every clock reading advances 1 s
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=fake_monotonic))
    torch.set_num_threads(1)
    data = _classify_data(16)
    seen = []
    cfg = TrainConfig(task="classify", epochs=40, input_size=(32, 32), batch_size=8, threads=1,
                      max_minutes=0.25, augment=False)
    res = train(cfg, data, data, ["a", "b", "c"], tmp_path, progress=seen.append)
    assert res.stopped == "time" and 3 <= res.epochs_run < 40
    assert seen[-1]["epochs"] == res.epochs_run          # the horizon it planned, reached
    assert seen[-1]["lr"] < 0.1 * cfg.resolved().lr      # annealed, not cut off at full speed
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ck["planned_epochs"] == res.epochs_run


def test_auto_balance_weights_only_skewed_classes():
    from aqualens.training.loop import resolve_balance

    assert resolve_balance(np.array([250, 200, 100, 100]), "auto") == "none"
    assert resolve_balance(np.array([500, 20, 100, 0]), "auto") == "loss"
    assert resolve_balance(np.array([250, 100]), "sampler") == "sampler"
    with pytest.raises(ValidationError) as e:
        TrainConfig(balance="heavy").resolved()
    assert e.value.field == "balance" and "auto" in e.value.valid


def test_cancel_keeps_the_checkpoint(tmp_path):
    torch.set_num_threads(1)
    data = _classify_data()
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 5               # after the first epoch's 4 batches + 1

    cfg = TrainConfig(task="classify", epochs=5, input_size=(32, 32), batch_size=8, threads=1)
    with pytest.raises(TrainingCancelled):
        train(cfg, data, data, ["a", "b", "c"], tmp_path, cancel=cancel)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1


def test_bad_config_is_refused(tmp_path):
    data = _classify_data(6)
    with pytest.raises(ValidationError) as e:
        train(TrainConfig(input_size=(30, 30)), data, None, ["a", "b", "c"], tmp_path)
    assert e.value.field == "input_size"
    with pytest.raises(ValidationError, match="task"):
        TrainConfig(task="segment").resolved()


SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from pathlib import Path
    from aqualens.training.data import TrainData
    from aqualens.training.config import TrainConfig
    from aqualens.training.loop import train
    from tests.training.helpers import classify_image
    imgs = np.stack([classify_image(i % 3, i)[:, :, None] for i in range(30)])
    data = TrainData(images=imgs, labels=np.arange(30) % 3)
    slow = sys.argv[2] == "slow"
    def progress(p):
        print("EPOCH", p["epoch"], flush=True)
        if slow:
            time.sleep(30)                 # stay killable after the first checkpoint
    cfg = TrainConfig(task="classify", epochs=4, input_size=(32, 32), batch_size=8, threads=1)
    res = train(cfg, data, data, ["a", "b", "c"], Path(sys.argv[1]), progress=progress)
    print("DONE", [h["epoch"] for h in res.history], flush=True)
""")


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    work = tmp_path / "work"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, str(script), str(work), "slow"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("EPOCH"):
            break
    assert line.startswith("EPOCH 1"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    ck = torch.load(work / "last.pt", weights_only=False)
    assert ck["epoch"] == 1
    out = subprocess.run([sys.executable, str(script), str(work), "fast"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    epochs = [int(x.split()[1]) for x in out.stdout.splitlines() if x.startswith("EPOCH")]
    assert epochs == [2, 3, 4]              # continued from the checkpoint epoch, not from 1
    assert "DONE [1, 2, 3, 4]" in out.stdout


def test_early_stopping_waits_for_the_end_of_the_detector_schedule():
    from aqualens.training.loop import early_stop

    det = TrainConfig(task="detect", patience=20).resolved()
    cls = TrainConfig(task="classify", patience=20).resolved()
    assert det.patience_from == 0.75 and cls.patience_from == 0.5
    # Best at epoch 48 of 100 (the DeepFish run the old rule cut at 70): the classifier rule
    # stops at 70, the detector's counts only from 75 and so stops at 95.
    assert early_stop(cls, 70, 48, 100)
    assert not early_stop(det, 70, 48, 100) and not early_stop(det, 94, 48, 100)
    assert early_stop(det, 95, 48, 100)
    assert not early_stop(det, 99, 90, 100)        # a late best epoch resets the count
    with pytest.raises(ValidationError) as err:
        TrainConfig(task="detect", patience_from=1.5).resolved()
    assert err.value.field == "patience_from"
    with pytest.raises(ValidationError) as err:
        TrainConfig(task="detect", detect_aug={"sharpen": 1}).resolved()
    assert err.value.field == "detect_aug" and "sharpen" in str(err.value)


def test_detector_options_round_trip_and_reach_the_network(tmp_path):
    torch.set_num_threads(1)
    data = _detect_data(8)
    cfg = TrainConfig(task="detect", epochs=1, input_size=(64, 64), batch_size=4, threads=1,
                      train_crop=32, mosaic=1.0, flip_test=True,
                      detect_aug={"scale": (0.9, 1.1), "haze": 0.2, "saturation": 0.2})
    again = TrainConfig.from_dict(cfg.resolved().to_dict()).resolved()
    assert again == cfg.resolved()
    res = train(cfg, data, data, ["fish"], tmp_path)
    assert res.net.cfg.flip_test and np.isfinite(res.history[0]["loss"])


def test_detector_keeps_its_best_epoch_from_the_schedule_tail(tmp_path):
    """A validation spike while the learning rate is high is not the kept checkpoint."""
    from aqualens.training.loop import tail_start

    torch.set_num_threads(1)
    data = _detect_data(8)
    cfg = TrainConfig(task="detect", epochs=4, input_size=(64, 64), batch_size=4, threads=1,
                      train_crop=32, min_epochs=1, patience_from=0.75)
    assert cfg.resolved().best_from_tail and not TrainConfig().resolved().best_from_tail
    assert tail_start(cfg.resolved(), 4) == 3
    res = train(cfg, data, data, ["fish"], tmp_path)
    tail = [h["val_metric"] for h in res.history[2:]]
    assert res.best_epoch >= 3 and res.best_metric == max(tail)
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == res.best_epoch
