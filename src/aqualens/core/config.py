"""Settings, read from ``AQUALENS_*`` environment variables and an optional config file.

Nothing is built at import time: call :func:`get_settings`. Nested settings use ``__``
(``AQUALENS_DASK__ADDRESS``, ``AQUALENS_S3__ENDPOINT_URL``). A TOML or YAML config file is read
from ``AQUALENS_CONFIG`` (or ``<data_dir>/aqualens.toml`` when it exists); environment variables
win over the file. Invalid values raise :class:`~aqualens.core.errors.ConfigError` naming the
setting.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource, YamlConfigSettingsSource)

from aqualens.core.errors import ConfigError


class S3Settings(BaseModel):
    """Connection to an S3-compatible object store."""

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"


class DaskSettings(BaseModel):
    """Where jobs run. No address: an in-process ``LocalCluster``."""

    address: str | None = None
    n_workers: int = Field(default=1, ge=1)
    threads_per_worker: int = Field(default=2, ge=1)
    processes: bool = False
    #: Lighter Dask housekeeping in the clusters AquaLens starts itself (the LocalCluster and
    #: ``aqualens worker``); see ``aqualens.processing.cluster.LEAN_DASK``. False keeps Dask's
    #: defaults (its statistical profiler, for a dashboard).
    lean: bool = True


class ModelSettings(BaseModel):
    """How model runtimes use the CPU.

    ``intra_op_threads``: threads one ONNX Runtime session (``intra_op_num_threads``) or the
    TorchScript runtime (``torch.set_num_threads``) uses per inference; 0 = the runtime's default
    (all cores). Dask worker processes started by AquaLens (the ``LocalCluster`` with
    ``processes=True``, ``aqualens worker``) set it to their thread count when it is 0, so that N
    worker processes x threads ~ cores instead of N x all cores.

    ``resolve_cache_seconds``: how long the predict API may reuse a model lookup (the model a
    name or id means for a caller, and the caller's right to use it) before reading the row
    again. Changes made through this process apply at once; changes made by another process
    (another server worker, the CLI) apply within this time. 0 reads the row on every request.

    ``max_batch``: the most images the predict API runs as one batch when concurrent requests
    for the same model wait together (dynamic batching).
    """

    intra_op_threads: int = Field(default=0, ge=0, le=1024)
    resolve_cache_seconds: float = Field(default=2.0, ge=0.0, le=3600.0)
    max_batch: int = Field(default=64, ge=1, le=4096)


class LimitSettings(BaseModel):
    """Limits applied to uploads and ingested files."""

    max_file_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=200_000_000, gt=0)
    thumbnail_size: int = Field(default=256, ge=16, le=1024)


class Settings(BaseSettings):
    """All settings of an AquaLens instance."""

    model_config = SettingsConfigDict(env_prefix="AQUALENS_", env_nested_delimiter="__",
                                      extra="forbid")

    data_dir: Path = Path("aqualens-data")
    database_url: str | None = None
    storage_url: str | None = None
    s3: S3Settings = S3Settings()
    dask: DaskSettings = DaskSettings()
    models: ModelSettings = ModelSettings()
    limits: LimitSettings = LimitSettings()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = None
    log_level: str = "info"

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must start with sqlite:/// or postgresql:// (or postgresql+psycopg://)")
        return v

    @field_validator("storage_url")
    @classmethod
    def _check_storage(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parsed = urlparse(v)
        if parsed.scheme not in ("file", "s3"):
            raise ValueError("must be file:///path or s3://bucket/prefix")
        if parsed.scheme == "s3" and not parsed.netloc:
            raise ValueError("s3 URL needs a bucket: s3://bucket/prefix")
        return v

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be one of debug, info, warning, error")
        return v.lower()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            if path.suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Derived values: computed, never stored, so the data dir alone moves an instance.
    @property
    def db_url(self) -> str:
        """The database URL; a SQLite file in the data dir by default."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite').resolve()}"

    @property
    def blob_url(self) -> str:
        """The storage URL; a local folder in the data dir by default."""
        if self.storage_url:
            return self.storage_url
        return (self.data_dir / "blobs").resolve().as_uri()


def _config_file() -> Path | None:
    explicit = os.environ.get("AQUALENS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", field="AQUALENS_CONFIG")
        if path.suffix not in (".toml", ".yaml", ".yml"):
            raise ConfigError(f"config file {path} has an unknown type", field="AQUALENS_CONFIG",
                              valid=".toml, .yaml, .yml")
        return path
    default = Path(os.environ.get("AQUALENS_DATA_DIR", "aqualens-data")) / "aqualens.toml"
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, the config file and ``overrides``.

    Raises :class:`ConfigError` naming the first invalid setting as its env variable.
    """
    import yaml

    try:
        return Settings(**overrides)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        if not isinstance(exc, ValidationError):
            # The TOML/YAML parser's own error: name the file, not a Python traceback.
            raise ConfigError(f"config file cannot be read: {exc}", field="AQUALENS_CONFIG",
                              valid="a TOML or YAML mapping of settings") from None
        problems = []
        for err in exc.errors():
            name = "AQUALENS_" + "__".join(str(p).upper() for p in err["loc"])
            problems.append(f"{name}: {err['msg']}")
        first = exc.errors()[0]
        field = "AQUALENS_" + "__".join(str(p).upper() for p in first["loc"])
        raise ConfigError("invalid settings: " + "; ".join(problems), field=field) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once on first call."""
    return load_settings()


def reset_settings() -> None:
    """Forget cached settings (tests, and the CLI after ``--data-dir``)."""
    get_settings.cache_clear()
