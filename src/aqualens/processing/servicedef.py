"""Service definitions (the OSCAR pattern): what triggers a service, what it runs, where results go.

A definition is YAML or JSON::

    name: obsea-fish
    description: Count fish in every OBSEA camera frame
    triggers:
      - {type: collection, collection: obsea-cam1}          # new images in a collection
      - {type: folder, path: /data/incoming, collection: obsea-cam1, pattern: "*.jpg"}
      - {type: schedule, every: 1d, select: {collection: obsea-cam1}}   # or cron: "0 3 * * *"
      - {type: s3, bucket: obsea-raw, prefix: cam1/, collection: obsea-cam1}   # bucket webhook
    steps:
      - {model: fish@2.0.0, top_k: 3, threshold: 0.3}       # a registered model
      - {pipeline: image-stats}                             # or a batch job kind
    outputs:
      annotations: true                                     # store predictions as annotations
      collection: obsea-processed                           # link processed images here
      files:
        - {type: daily-counts-csv, prefix: /data/obsea/counts}   # or s3://bucket/prefix
        - {type: results-csv, prefix: s3://obsea-results/runs}
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from aqualens.core.errors import ValidationError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
EVERY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1d`` → seconds."""
    m = EVERY_RE.match(str(text).strip())
    if not m or float(m[1]) <= 0:
        raise ValueError(f"every {text!r} is not an interval like 30s, 5m, 1h, 1d")
    return float(m[1]) * UNITS[m[2]]


def _cron_field(text: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
        if part == "*":
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
        else:
            a = b = int(part)
        if not (lo <= a <= hi and lo <= b <= hi and step >= 1):
            raise ValueError(f"{text!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


def parse_cron(text: str) -> list[set[int]]:
    """Five fields: minute hour day-of-month month day-of-week (0 = Sunday); ``*``, ``*/n``,
    ``a-b``, ``a,b``."""
    parts = str(text).split()
    if len(parts) != 5:
        raise ValueError(f"cron {text!r} needs 5 fields: minute hour day month weekday")
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    try:
        return [_cron_field(p, lo, hi) for p, (lo, hi) in zip(parts, bounds, strict=True)]
    except ValueError as exc:
        raise ValueError(f"cron {text!r}: {exc}") from None


class TriggerDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["collection", "folder", "schedule", "s3"]
    collection: str | None = None       # collection: watched; folder/s3: where files are ingested
    path: str | None = None             # folder
    pattern: str = "*"                  # folder: glob of file names
    interval_s: float = Field(default=5.0, gt=0)   # folder polling
    every: str | None = None            # schedule
    cron: str | None = None             # schedule
    select: dict[str, Any] | None = None  # schedule: which images (collection/query/image_ids)
    bucket: str | None = None           # s3
    prefix: str = ""                    # s3

    @model_validator(mode="after")
    def _check(self) -> TriggerDef:
        if self.type in ("collection", "folder", "s3") and not self.collection:
            raise ValueError(f"a {self.type} trigger needs 'collection'")
        if self.type == "folder" and not self.path:
            raise ValueError("a folder trigger needs 'path'")
        if self.type == "s3" and not self.bucket:
            raise ValueError("an s3 trigger needs 'bucket'")
        if self.type == "schedule":
            if bool(self.every) == bool(self.cron):
                raise ValueError("a schedule trigger needs exactly one of 'every', 'cron'")
            if self.every:
                parse_every(self.every)
            else:
                parse_cron(self.cron)
        return self


class StepDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None            # name@version (or name: the highest version)
    pipeline: str | None = None         # a batch job kind, e.g. image-stats
    top_k: int = Field(default=5, ge=1, le=100)
    threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> StepDef:
        if bool(self.model) == bool(self.pipeline):
            raise ValueError("a step needs exactly one of 'model', 'pipeline'")
        return self


class FileOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["daily-counts-csv", "results-csv"]
    prefix: str = Field(description="a folder path or s3://bucket/prefix")


class OutputsDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    annotations: bool = True
    collection: str | None = None
    files: list[FileOutput] = Field(default_factory=list)


class ServiceDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    visibility: Literal["private", "public"] = "private"
    triggers: list[TriggerDef] = Field(default_factory=list)
    steps: list[StepDef] = Field(min_length=1)
    outputs: OutputsDef = Field(default_factory=OutputsDef)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("1-200 letters, digits, '.', '_', '-', starting with a letter/digit")
        return v


def parse_definition(data: Any, source: str = "definition") -> ServiceDef:
    """Validate a definition (dict, or YAML/JSON text); errors name the field path."""
    if isinstance(data, (str, bytes)):
        import yaml

        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ValidationError(f"{source} is not valid YAML: {exc}", field=source) from None
    if not isinstance(data, dict):
        raise ValidationError(f"{source} must be a mapping with name, triggers, steps, outputs",
                              field=source)
    try:
        return ServiceDef.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or source
        msg = err["msg"].removeprefix("Value error, ")
        raise ValidationError(f"{loc}: {msg}", field=loc,
                              details=[{"field": ".".join(map(str, e["loc"])),
                                        "message": e["msg"]} for e in exc.errors()]) from None
