"""``aqualens init`` / ``--help``: the token is printed once, a second run says up to date."""

from __future__ import annotations

import re
import stat

from aqualens.cli.main import app

TOKEN = re.compile(r"aql_[A-Za-z0-9_-]{20,}")


def test_init_prints_token_once(runner, tmp_path):
    data = tmp_path / "inst"
    first = runner.invoke(app, ["--data-dir", str(data), "init"])
    assert first.exit_code == 0, first.output
    tokens = TOKEN.findall(first.output)
    assert len(tokens) == 1
    assert "shown once" in " ".join(first.output.split())
    token_file = data / "admin-token"
    assert token_file.read_text().strip() == tokens[0]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (data / "catalog.sqlite").is_file() and (data / "blobs" / "active").is_dir()

    second = runner.invoke(app, ["--data-dir", str(data), "init"])
    assert second.exit_code == 0, second.output
    assert "up to date" in " ".join(second.output.split())  # rich wraps long paths
    assert TOKEN.findall(second.output) == []


def test_token_works_for_the_api(runner, tmp_path):
    from fastapi.testclient import TestClient

    from aqualens.api.app import create_app
    from aqualens.catalog.context import Context
    from aqualens.core.config import load_settings

    data = tmp_path / "inst"
    token = TOKEN.findall(runner.invoke(app, ["--data-dir", str(data), "init"]).output)[0]
    with TestClient(create_app(Context(load_settings(data_dir=data)))) as c:
        r = c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["is_admin"] is True


def test_data_dir_from_env(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("AQUALENS_DATA_DIR", str(tmp_path / "from-env"))
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "from-env" / "admin-token").is_file()


def test_help_lists_commands(runner):
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for command in ("init", "serve", "fsck", "tier"):
        assert re.search(rf"\b{command}\b", r.output), command
    assert "--data-dir" in r.output


def test_no_arguments_shows_help(runner):
    r = runner.invoke(app, [])
    assert "Usage" in r.output and "init" in r.output


def test_unknown_command(runner):
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == 2
    assert "frobnicate" in r.output


def test_invalid_setting_fails_with_its_name(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("AQUALENS_STORAGE_URL", "ftp://nowhere/blobs")
    r = runner.invoke(app, ["--data-dir", str(tmp_path / "x"), "init"])
    assert r.exit_code == 1
    assert "AQUALENS_STORAGE_URL" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x" / "catalog.sqlite").exists()
