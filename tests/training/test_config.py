"""Training hyper-parameters (``training.config``): per-task defaults, checks, round trip."""

from __future__ import annotations

import pytest

from aqualens.core.errors import ValidationError
from aqualens.training.config import TrainConfig


def test_per_task_defaults() -> None:
    det = TrainConfig(task="detect").resolved()
    cls = TrainConfig(task="classify").resolved()
    assert (det.epochs, det.batch_size, det.input_size, det.train_crop) == (100, 16, (448, 448),
                                                                           192)
    assert det.flip_test is True and det.mosaic == 0.3 and det.patience_from == 0.75
    assert (cls.epochs, cls.batch_size, cls.input_size) == (80, 32, (64, 64))
    assert cls.flip_test is False and cls.mosaic == 0.0 and cls.patience_from == 0.5
    assert TrainConfig(task="detect", flip_test=False).resolved().flip_test is False


@pytest.mark.parametrize("kwargs,field", [
    ({"task": "segment"}, "task"),
    ({"balance": "heavy"}, "balance"),
    ({"patience_from": 1.5}, "patience_from"),
    ({"task": "detect", "detect_aug": {"rotate": 10}}, "detect_aug"),
    ({"input_size": (60, 64)}, "input_size"),
    ({"epochs": -1}, "epochs"),
])
def test_bad_values_name_their_field(kwargs, field) -> None:
    with pytest.raises(ValidationError) as err:
        TrainConfig(**kwargs).resolved()
    assert err.value.field == field


def test_round_trip_through_json() -> None:
    cfg = TrainConfig(task="detect", input_size=(352, 352),
                      detect_aug={"scale": (0.5, 1.5)}).resolved()
    again = TrainConfig.from_dict({**cfg.to_dict(), "unknown_old_field": 1})
    assert again == cfg
