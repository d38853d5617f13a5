"""The model plugin interface: what a model declares, what it returns, how runtimes are called.

Every runtime (ONNX Runtime, TorchScript, the DEEPaaS module adapter, third-party plugins in the
``aqualens.models`` entry-point group) subclasses :class:`ModelRuntime`:

    runtime = OnnxModel.load(Path("model.onnx"), info, device="auto")
    results = runtime.predict([rgb_uint8_hwc, ...], top_k=5, threshold=0.0)

``predict`` takes a *batch* of images (``H x W x C`` uint8 RGB numpy arrays, any size; greyscale
``H x W`` is accepted too) and returns one typed result per image, in order.

ONNX tensor conventions for models AquaLens produces (training writes these; the ONNX runtime
reads them):

- input named ``input``: float32 NCHW, already resized and normalised per :class:`InputSpec`
  (``(pixel * scale - mean) / std``, RGB channel order, or one channel when ``channels == 1``).
- classify: output ``logits`` (N, C); the runtime applies softmax.
- detect: outputs ``boxes`` (N, K, 4; x1, y1, x2, y2 in network-input pixels), ``scores`` (N, K),
  ``labels`` (N, K; int64 class index), K fixed and padded with score 0. The runtime maps boxes
  back to the original image (undoing letterbox/stretch/pad), applies the score threshold and
  class-wise NMS.
- segment: output ``masks`` (N, C, h, w) per-class logits at network-input resolution (or any
  resolution; it is resized); the runtime takes the per-pixel argmax, drops class 0 when the first
  label is ``background``, maps the masks back to the original image and returns COCO RLE.
- embed: output ``embedding`` (N, D); the runtime L2-normalises it.
Models whose outputs are not named this way still work when they have exactly one output: it is
read as ``logits`` (classify), ``masks`` (segment) or ``embedding`` (embed).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np

from aqualens.core.errors import ValidationError

TASKS = ("classify", "detect", "segment", "embed")
RESIZE_POLICIES = ("stretch", "letterbox", "pad")

# ONNX tensor names (see the module docstring).
ONNX_INPUT = "input"
ONNX_LOGITS = "logits"
ONNX_BOXES = "boxes"
ONNX_SCORES = "scores"
ONNX_LABELS = "labels"
ONNX_MASKS = "masks"
ONNX_EMBEDDING = "embedding"

# Semantic versioning 2.0.0 (https://semver.org), the official regular expression.
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
VERSION_MAX = 50  # the width of models.version
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,199}$")


def validate_version(version: str) -> str:
    """Return ``version`` if it is a semantic version (``1.2.3``, ``1.0.0-rc.1``), else raise."""
    if not isinstance(version, str) or len(version) > VERSION_MAX or not SEMVER_RE.match(version):
        raise ValidationError(f"model version {version!r} is not a semantic version",
                              field="version", valid="MAJOR.MINOR.PATCH, e.g. 1.0.0 or 2.1.0-rc.1,"
                                                     f" at most {VERSION_MAX} characters")
    return version


def validate_name(name: str) -> str:
    """Return ``name`` if it is a usable model name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(f"model name {name!r} is not valid", field="name",
                              valid="1-200 of letters, digits, '.', '_', '-', starting with a "
                                    "letter or digit")
    return name


@dataclass(frozen=True)
class InputSpec:
    """How images are turned into the network input tensor."""

    height: int = 224
    width: int = 224
    channels: int = 3                      # 1 (greyscale) or 3 (RGB)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: str = "stretch"                # stretch | letterbox (keep aspect, centre) | pad
    scale: float = 1 / 255                 # applied before mean/std
    pad_value: int = 0                     # fill of letterbox/pad borders, in 0..255 pixel units

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 16384:
                raise ValidationError(f"input_spec.{name} must be an integer 1..16384, got {v!r}",
                                      field=f"input_spec.{name}")
        if self.channels not in (1, 3):
            raise ValidationError(f"input_spec.channels must be 1 or 3, got {self.channels!r}",
                                  field="input_spec.channels", valid="1, 3")
        if self.resize not in RESIZE_POLICIES:
            raise ValidationError(f"input_spec.resize {self.resize!r} is unknown",
                                  field="input_spec.resize", valid=", ".join(RESIZE_POLICIES))
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(mean) == 1:
            mean = mean * self.channels
        if len(std) == 1:
            std = std * self.channels
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValidationError("input_spec.mean and input_spec.std need one value per channel",
                                  field="input_spec.mean", valid=f"{self.channels} numbers")
        if any(s == 0 or not math.isfinite(s) for s in std):
            raise ValidationError("input_spec.std values must be non-zero", field="input_spec.std")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> InputSpec:
        if not d:
            return cls()
        if not isinstance(d, dict):
            raise ValidationError("input_spec must be an object", field="input_spec")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValidationError(f"unknown input_spec keys: {', '.join(unknown)}",
                                  field="input_spec", valid=", ".join(cls.__dataclass_fields__))
        try:
            return cls(**known)
        except TypeError as exc:
            raise ValidationError(f"input_spec: {exc}", field="input_spec") from None


@dataclass(frozen=True)
class LabelInfo:
    """One output class; ``aphia_id`` is the WoRMS AphiaID when the class is a taxon."""

    name: str
    aphia_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "aphia_id": self.aphia_id}

    @classmethod
    def from_any(cls, v: Any) -> LabelInfo:
        """From a name, a ``{"name", "aphia_id"}`` dict or a LabelInfo."""
        if isinstance(v, LabelInfo):
            return v
        if isinstance(v, str) and v.strip():
            return cls(v.strip())
        if isinstance(v, dict) and isinstance(v.get("name"), str) and v["name"].strip():
            aphia = v.get("aphia_id")
            if aphia is not None:
                try:
                    aphia = int(aphia)
                except (TypeError, ValueError):
                    raise ValidationError(f"aphia_id of label {v['name']!r} is not an integer",
                                          field="labels.aphia_id") from None
            return cls(v["name"].strip(), aphia)
        raise ValidationError(f"label {v!r} is not a name or {{name, aphia_id}} object",
                              field="labels")


@dataclass
class ModelInfo:
    """What a model declares about itself (stored on the Model row and in packages)."""

    name: str
    version: str
    task: str
    labels: list[LabelInfo] = field(default_factory=list)
    input_spec: InputSpec = field(default_factory=InputSpec)
    runtime: str = "onnx"                  # entry-point name in the aqualens.models group
    description: str = ""
    licence: str | None = None
    keywords: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    # Runtime-specific settings (e.g. DEEPaaS entry-point name, NMS IoU, output names).
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_version(self.version)
        if self.task not in TASKS:
            raise ValidationError(f"task {self.task!r} is unknown", field="task",
                                  valid=", ".join(TASKS))
        self.labels = [LabelInfo.from_any(x) for x in (self.labels or [])]
        if not isinstance(self.input_spec, InputSpec):
            self.input_spec = InputSpec.from_dict(self.input_spec)
        names = [lab.name for lab in self.labels]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValidationError(f"duplicate labels: {', '.join(dup)}", field="labels")

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.task,
                "runtime": self.runtime, "labels": [lab.to_dict() for lab in self.labels],
                "input_spec": self.input_spec.to_dict(), "description": self.description,
                "licence": self.licence, "keywords": list(self.keywords),
                "metrics": self.metrics, "card": self.card, "options": self.options}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        if not isinstance(d, dict):
            raise ValidationError("model metadata must be a JSON object", field="metadata")
        missing = [k for k in ("name", "version", "task") if not d.get(k)]
        if missing:
            raise ValidationError(f"model metadata lacks {', '.join(missing)}",
                                  field=missing[0], valid="name, version, task")
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in keys})


# ---- results -------------------------------------------------------------------------------


@dataclass
class TaxonScore:
    """One ranked class of a classification."""

    label: str
    aphia_id: int | None
    score: float
    index: int = -1                        # class index in ModelInfo.labels


@dataclass
class Classification:
    """Top-k classes, best first."""

    top: list[TaxonScore]
    task: ClassVar[str] = "classify"

    @property
    def best(self) -> TaxonScore | None:
        return self.top[0] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        # vars() of a flat dataclass of scalars = asdict(), without its deep-copy walk
        # (a batch job serialises thousands of these).
        return {"task": self.task, "top": [dict(vars(t)) for t in self.top]}


@dataclass
class Box:
    """One detected object: ``x, y, w, h`` in original-image pixels."""

    x: float
    y: float
    w: float
    h: float
    label: str
    aphia_id: int | None
    score: float
    index: int = -1

    @property
    def xywh(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]


@dataclass
class Detection:
    """Every object above the threshold after NMS, best first."""

    boxes: list[Box]
    task: ClassVar[str] = "detect"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "boxes": [asdict(b) for b in self.boxes]}


@dataclass
class Mask:
    """One segmented region in original-image pixels: COCO RLE ``{"size": [h, w], "counts"}``
    and/or polygon parts ``[[x0, y0, x1, y1, ...], ...]``; ``box`` is ``[x, y, w, h]``."""

    label: str
    aphia_id: int | None
    score: float
    rle: dict[str, Any] | None = None
    polygon: list[list[float]] | None = None
    box: list[float] | None = None
    area: float = 0.0
    index: int = -1


@dataclass
class Segmentation:
    masks: list[Mask]
    task: ClassVar[str] = "segment"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "masks": [asdict(m) for m in self.masks]}


@dataclass
class Embedding:
    vector: np.ndarray                     # float32 (D,)
    task: ClassVar[str] = "embed"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "vector": [float(v) for v in np.asarray(self.vector).ravel()]}


Result = Union[Classification, Detection, Segmentation, Embedding]


class ModelRuntime(ABC):
    """A loaded, warm model. Create with :meth:`load`; call :meth:`predict` many times."""

    #: entry-point name in ``aqualens.models`` (e.g. ``"onnx"``).
    name: ClassVar[str] = ""
    #: artefact file suffixes this runtime reads (for guessing the runtime from a file name).
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, info: ModelInfo, device: str = "cpu") -> None:
        self.info = info
        self.device = device

    @classmethod
    @abstractmethod
    def load(cls, artefact: Path, info: ModelInfo, device: str = "auto") -> ModelRuntime:
        """Load ``artefact`` once (weights into memory, session created); ``device`` is
        ``"auto"`` (GPU when available), ``"cpu"`` or ``"cuda"``. Raises ModelError."""

    @abstractmethod
    def predict(self, images: list[np.ndarray], top_k: int = 5,
                threshold: float = 0.0) -> list[Result]:
        """One result per image, in order. ``top_k`` applies to classification; ``threshold``
        drops classes/boxes/masks scoring below it."""

    def close(self) -> None:
        """Release resources (sessions, GPU memory). Optional."""


def check_predict_args(images: list[np.ndarray], top_k: int, threshold: float) -> None:
    """Shared argument checks for runtimes: clear errors instead of numpy tracebacks."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValidationError(f"top_k must be a positive integer, got {top_k!r}", field="top_k")
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise ValidationError(f"threshold must be between 0 and 1, got {threshold!r}",
                              field="threshold", valid="0.0 .. 1.0")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim not in (2, 3) \
                or (im.ndim == 3 and im.shape[2] not in (1, 3, 4)) or min(im.shape[:2]) < 1:
            shape = getattr(im, "shape", None)
            raise ValidationError(f"image {i} must be an HxW or HxWxC (C=1,3,4) uint8 array, "
                                  f"got {type(im).__name__} {shape}", field=f"images[{i}]")


def result_from_dict(d: dict[str, Any]) -> Result:
    """Rebuild a typed result from ``to_dict`` output (used by packages and job payloads)."""
    task = d.get("task")
    if task == "classify":
        return Classification([TaxonScore(**t) for t in d["top"]])
    if task == "detect":
        return Detection([Box(**b) for b in d["boxes"]])
    if task == "segment":
        return Segmentation([Mask(**m) for m in d["masks"]])
    if task == "embed":
        return Embedding(np.asarray(d["vector"], dtype=np.float32))
    raise ValidationError(f"unknown result task {task!r}", field="task", valid=", ".join(TASKS))
