"""Scoring a model on a dataset version, and its model card (``training.model_eval``)."""

from __future__ import annotations

import pytest

from aqualens.catalog.tables import DatasetVersion
from aqualens.core.errors import ValidationError
from aqualens.models.base import ModelInfo
from aqualens.training.model_eval import evaluate_runtime, model_card


def _dv() -> DatasetVersion:
    return DatasetVersion(id=3, concept="vig", version=1, manifest_sha256="ab" * 32,
                          manifest={"images": [1, 2, 3], "annotations": [1, 2, 3],
                                    "splits": {"train": [1, 2], "test": [3]},
                                    "split_params": {"seed": 0}})


def test_only_classifiers_and_detectors_are_scored(ctx, tmp_path) -> None:
    info = ModelInfo(name="seg", version="1.0.0", task="segment", labels=["a"])
    with pytest.raises(ValidationError, match="cannot evaluate a segment model") as err:
        evaluate_runtime(ctx, None, info, _dv(), "test", tmp_path)
    assert err.value.field == "model"


def test_model_card_names_data_metrics_training_and_licence() -> None:
    info = ModelInfo(name="vig-classify", version="1.0.0", task="classify",
                     labels=[{"name": "Copepoda", "aphia_id": 1080}, {"name": "detritus"}],
                     licence="CC-BY-4.0")
    metrics = {"overall": {"accuracy": 0.8, "balanced_accuracy": 0.75},
               "per_class": {"Copepoda": {"precision": 0.9, "recall": 0.8, "f1": 0.85,
                                          "support": 10}},
               "training": {"epochs_run": 12, "stopped": "early", "metric": "accuracy",
                            "best_val": 0.81, "best_epoch": 9, "seconds": 42}}
    card = model_card(info, _dv(), metrics, {"base_model": "plankton@1.0.0",
                                             "config": {"epochs": 20, "seed": 0}}, "test")
    assert card.startswith("# vig-classify 1.0.0")
    for words in ("3 images, 3 annotations", "train 2, test 1", "Copepoda (AphiaID 1080)",
                  "Fine-tuned from `plankton@1.0.0`", "| accuracy | 0.8000 |",
                  "| Copepoda | 0.900 | 0.800 | 0.850 | 10 |", "epochs run 12 of 20",
                  "Model: CC-BY-4.0"):
        assert words in card, words
    assert "No held-out split was evaluated." in model_card(info, _dv(), {}, {}, None)
