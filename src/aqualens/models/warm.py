"""Warm model runtimes, one set per process: loaded once per (catalogue, model, artefact,
device) and kept in a small LRU, so a worker or a server loads weights once, never per image.

The cache key holds the artefact sha256, the model's immutable PID, so a cached runtime can never
serve another artefact. Model rows, permissions and lookups are in
:mod:`aqualens.models.registry`.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from sqlalchemy import select

from aqualens.catalog.context import Context
from aqualens.catalog.tables import Model
from aqualens.core.errors import IntegrityError, NotFound
from aqualens.models.base import ModelInfo, ModelRuntime
from aqualens.models.registry import ModelRef, db_url_of, model_info, runtime_class

#: Loaded runtimes kept per process (LRU): enough for a few models side by side.
CACHE_SIZE = 8

_cache: OrderedDict[tuple, ModelRuntime] = OrderedDict()
_lock = threading.Lock()
_loading: dict[tuple, threading.Lock] = {}


def artefact_path(ctx: Context, sha: str, suffix: str) -> Path:
    """A local file for a stored artefact: the blob itself on a local store, else a cached
    download under ``<data_dir>/cache/models`` verified against its sha256."""
    local = ctx.store.local_path(sha)
    if local is not None and Path(local).is_file():
        return Path(local)
    cache = Path(ctx.settings.data_dir) / "cache" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{sha}{suffix}"
    if not target.is_file():
        from aqualens.storage.base import sha256_file

        with tempfile.NamedTemporaryFile(dir=cache, delete=False) as tmp:
            with ctx.store.open(sha) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    tmp.write(chunk)
        if sha256_file(Path(tmp.name)) != sha:
            Path(tmp.name).unlink(missing_ok=True)
            raise IntegrityError(f"stored artefact {sha} does not match its checksum",
                                 field="artefact")
        Path(tmp.name).replace(target)
    return target


def load_runtime(ctx: Context, model_id: int, device: str = "auto") -> ModelRuntime:
    """The warm runtime of a model (loaded once per process and kept; LRU of CACHE_SIZE).

    No permission check: callers check that the user may read the model first.
    """
    from aqualens.catalog.db import get_engine

    with get_engine(db_url_of(ctx)).connect() as conn:
        sha = conn.scalar(select(Model.artefact_sha256).where(Model.id == int(model_id)))
    if sha is None:
        raise NotFound(f"no model {model_id}", field="model")
    return _warm(ctx, int(model_id), sha, device)


def runtime_for(ctx: Context, model: ModelRef | Model, device: str = "auto") -> ModelRuntime:
    """The warm runtime of a model row already read (by :func:`resolve_model` or
    :func:`get_model`): no catalogue access at all once the runtime is warm.

    The cache key holds the artefact sha256, the model's immutable PID, so a cached runtime can
    never serve another artefact; the ModelInfo it carries was read with it.
    """
    return _warm(ctx, int(model.id), model.artefact_sha256, device)


def _warm(ctx: Context, model_id: int, sha: str, device: str) -> ModelRuntime:
    key = (db_url_of(ctx), model_id, sha, device)
    with _lock:
        runtime = _cache.get(key)
        if runtime is not None:
            _cache.move_to_end(key)
            return runtime
        load_lock = _loading.setdefault(key, threading.Lock())
    with load_lock:  # one load per model even when many requests arrive at once
        with _lock:
            if key in _cache:
                return _cache[key]
        with ctx.session() as s:
            model = s.get(Model, model_id)
            if model is None or model.artefact_sha256 != sha:
                raise NotFound(f"no model {model_id}", field="model")
            info = model_info(model)
        cls = runtime_class(info.runtime)
        suffix = (cls.suffixes or (".bin",))[0]
        runtime = cls.load(artefact_path(ctx, sha, suffix), info, device=device)
        with _lock:
            _cache[key] = runtime
            while len(_cache) > CACHE_SIZE:
                _, old = _cache.popitem(last=False)
                old.close()
            _loading.pop(key, None)
    return runtime


def forget_runtime(model_id: int | None = None) -> None:
    """Drop cached runtimes (one model, or all); tests and model deletion use this."""
    with _lock:
        keys = list(_cache) if model_id is None else [k for k in _cache if k[1] == model_id]
        for k in keys:
            _cache.pop(k).close()


def refresh_info(db_url: str, model_id: int, sha: str, info: ModelInfo) -> None:
    """Give the warm runtimes of a model its new descriptive fields (description, card, labels'
    names stay; nothing a runtime computes with changes without a new version)."""
    from aqualens.catalog.db import normalise_url

    with _lock:
        for key, runtime in _cache.items():
            if key[1:3] == (model_id, sha) and normalise_url(key[0]) == db_url:
                runtime.info = info


def runtime_from_files(artefact: Path, info: ModelInfo, device: str = "auto") -> ModelRuntime:
    """A runtime straight from files, with no catalogue (offline packages)."""
    return runtime_class(info.runtime).load(Path(artefact), info, device=device)
