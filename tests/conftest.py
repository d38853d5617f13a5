"""Shared fixtures: an initialised embedded instance, an API client, the CLI runner.

Service-backed fixtures (a real PostgreSQL and a real SeaweedFS S3 server, both on 127.0.0.1)
live in tests/servers.py and are started once per test session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aqualens.catalog.context import Context
from aqualens.catalog.db import dispose_engines
from aqualens.catalog.instance import init_instance
from aqualens.core.config import Settings, load_settings, reset_settings
from aqualens.storage import forget_stores

pytest_plugins = ["tests.servers"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO = Path(__file__).resolve().parents[1] / "demo"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's AQUALENS_* variables or ./aqualens-data."""
    import os

    for key in list(os.environ):
        if key.startswith("AQUALENS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AQUALENS_DATA_DIR", str(tmp_path / "data"))
    reset_settings()
    yield
    reset_settings()


def make_settings(data_dir: Path, **overrides) -> Settings:  # noqa: ANN003
    """Settings for a test instance in ``data_dir``."""
    return load_settings(data_dir=data_dir, **overrides)


def make_ctx(settings: Settings) -> tuple[Context, str]:
    """An initialised instance and its admin token."""
    ctx = Context(settings)
    token = init_instance(ctx)
    assert token
    return ctx, token


@pytest.fixture
def ctx_and_token(tmp_path: Path) -> Iterator[tuple[Context, str]]:
    """Embedded tier: SQLite file + local blob folder."""
    ctx, token = make_ctx(make_settings(tmp_path / "data"))
    yield ctx, token
    dispose_engines()
    forget_stores()


@pytest.fixture
def ctx(ctx_and_token: tuple[Context, str]) -> Context:
    return ctx_and_token[0]


@pytest.fixture
def token(ctx_and_token: tuple[Context, str]) -> str:
    return ctx_and_token[1]


@pytest.fixture
def client(ctx: Context, token: str):  # noqa: ANN201
    """An in-process HTTP client authenticated as the admin."""
    from fastapi.testclient import TestClient

    from aqualens.api.app import create_app

    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
def anon_client(ctx: Context):  # noqa: ANN201
    """An in-process HTTP client without a token."""
    from fastapi.testclient import TestClient

    from aqualens.api.app import create_app

    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def runner():  # noqa: ANN201
    """Typer's CLI runner; invoke with ``runner.invoke(app, [...])``."""
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none beside it."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
