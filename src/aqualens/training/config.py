"""Training hyper-parameters (:class:`TrainConfig`): what a ``train`` job's parameters become,
with the per-task defaults (``resolved``) and the checks that give a bad parameter a clear error
before any data is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aqualens.core.errors import ValidationError
from aqualens.training.augment import DetectAugment

TASKS = ("classify", "detect")
BALANCE = ("auto", "loss", "sampler", "none")
# ``balance="auto"`` weights the loss only when the largest class has more than this many times
# the images of the smallest: mild imbalance is better left alone (on the UVP6 sample, 2.5:1,
# weighting cost 5 points of accuracy for 0.5 of balanced accuracy).
AUTO_BALANCE_RATIO = 3.0



@dataclass
class TrainConfig:
    """Training hyper-parameters; ``None`` fields take the per-task default (see ``resolved``)."""

    task: str = "classify"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 5e-4
    input_size: tuple[int, int] | None = None     # (height, width)
    channels: int | None = None                   # 1 or 3; None: from the data
    resize: str = "letterbox"
    width: float = 1.0
    depths: tuple[int, ...] = (1, 2, 2, 2)
    patience: int = 20
    min_epochs: int = 5                           # early stopping never stops before this
    # Early stopping counts only after this fraction of the (cosine) schedule; None: 0.5 for a
    # classifier, 0.75 for a detector (its AP keeps rising until the learning rate is low).
    patience_from: float | None = None
    # Detector default: the kept (best) epoch is chosen among the epochs from ``patience_from``
    # on, not from the high-learning-rate phase, where a 50-image validation split spikes.
    best_from_tail: bool | None = None
    balance: str = "auto"                         # auto | loss | sampler | none
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    max_minutes: float | None = None
    max_detections: int = 100
    train_crop: int | None = None                 # detect: square training crops (px)
    mosaic: float | None = None                   # detect: share of 2x2-mosaic crops (0.3)
    flip_test: bool | None = None                 # detect: mirror test-time averaging (on)
    detect_aug: dict[str, Any] = field(default_factory=dict)  # DetectAugment overrides
    reg_cells: int = 3                            # detect: size/offset trained on NxN cells
    size_weight: float = 0.5                      # detect: weight of the log-size L1 loss

    def resolved(self) -> "TrainConfig":
        """A copy with the per-task defaults filled in and values checked."""
        if self.task not in TASKS:
            raise ValidationError(f"unknown task {self.task!r}", field="task",
                                  valid=", ".join(TASKS))
        if self.balance not in BALANCE:
            raise ValidationError(f"unknown balance {self.balance!r}", field="balance",
                                  valid=", ".join(BALANCE))
        d = asdict(self)
        det = self.task == "detect"
        d["epochs"] = self.epochs or (100 if det else 80)
        d["batch_size"] = self.batch_size or (16 if det else 32)
        d["lr"] = self.lr or (4e-3 if det else 3e-3)
        # Detector 448x448: DeepFish frames are 360x360, so fish (median ~16 px) are upscaled
        # ~1.25x; training cost is unchanged (192 px crops), evaluation ~1.6x.
        d["input_size"] = tuple(self.input_size or ((448, 448) if det else (64, 64)))
        if det and self.train_crop is None:
            d["train_crop"] = 192
        if self.patience_from is None:
            d["patience_from"] = 0.75 if det else 0.5
        if not 0 <= d["patience_from"] <= 1:
            raise ValidationError("patience_from must be between 0 and 1",
                                  field="patience_from", valid="a fraction of the epochs")
        if d["best_from_tail"] is None:
            d["best_from_tail"] = det
        if d["mosaic"] is None:
            d["mosaic"] = 0.3 if det else 0.0
        if d["flip_test"] is None:
            d["flip_test"] = det
        unknown = set(d["detect_aug"]) - set(DetectAugment.__dataclass_fields__)
        if unknown:
            raise ValidationError(f"unknown augmentation option(s) {sorted(unknown)}",
                                  field="detect_aug",
                                  valid=", ".join(DetectAugment.__dataclass_fields__))
        d["depths"] = tuple(self.depths)
        for name in ("epochs", "batch_size"):
            if d[name] < 1:
                raise ValidationError(f"{name} must be at least 1", field=name)
        h, w = d["input_size"]
        if h % 32 or w % 32 or h < 32 or w < 32:
            raise ValidationError(f"input size {h}x{w} must be multiples of 32",
                                  field="input_size", valid="e.g. 64x64, 352x352")
        return TrainConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(d["input_size"]) if d["input_size"] else None
        d["depths"] = list(d["depths"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("detect_aug"), dict) and isinstance(
                d["detect_aug"].get("scale"), list):
            d["detect_aug"] = {**d["detect_aug"], "scale": tuple(d["detect_aug"]["scale"])}
        if d.get("input_size"):
            d["input_size"] = tuple(d["input_size"])
        if d.get("depths"):
            d["depths"] = tuple(d["depths"])
        return cls(**d)
