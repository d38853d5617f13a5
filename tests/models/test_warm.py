"""Warm runtimes per process (``models.warm``): loaded once, kept in an LRU, refreshed and
dropped with their model."""

from __future__ import annotations

import pytest

from aqualens.catalog.users import get_admin
from aqualens.core.errors import NotFound
from aqualens.models import registry, warm
from tests.models.nets import register_classifier


def test_loaded_once_refreshed_and_forgotten(ctx, tmp_path) -> None:
    mid = register_classifier(ctx, tmp_path)
    a = warm.load_runtime(ctx, mid)
    assert warm.load_runtime(ctx, mid) is a  # loaded once per process
    with ctx.session() as s:
        registry.update_model(s, mid, get_admin(s), description="copepods of the Baltic")
    assert a.info.description == "copepods of the Baltic"  # the warm runtime sees the edit
    warm.forget_runtime(mid)
    assert warm.load_runtime(ctx, mid) is not a
    with pytest.raises(NotFound, match="no model 999"):
        warm.load_runtime(ctx, 999)


def test_least_recently_used_runtime_goes_first(ctx, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(warm, "CACHE_SIZE", 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = register_classifier(ctx, tmp_path / "a", name="first")
    second = register_classifier(ctx, tmp_path / "b", name="second")
    a = warm.load_runtime(ctx, first)
    warm.load_runtime(ctx, second)  # evicts the first
    assert warm.load_runtime(ctx, first) is not a
    with ctx.session() as s:
        sha = registry.get_model(s, first, get_admin(s)).artefact_sha256
    assert warm.artefact_path(ctx, sha, ".onnx") == ctx.store.local_path(sha)  # no copy made
