"""Settings: env prefix, nested variables, TOML/YAML file, precedence, errors naming the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aqualens.core.config import get_settings, load_settings, reset_settings
from aqualens.core.errors import ConfigError


def test_defaults(tmp_path):
    s = load_settings()
    assert s.port == 8000 and s.host == "127.0.0.1"
    assert s.data_dir == tmp_path / "data"  # from the conftest's AQUALENS_DATA_DIR
    assert s.db_url == f"sqlite:///{(tmp_path / 'data' / 'catalog.sqlite').resolve()}"
    assert s.blob_url == (tmp_path / "data" / "blobs").resolve().as_uri()
    assert s.dask.address is None


def test_env_prefix_and_nested(monkeypatch):
    monkeypatch.setenv("AQUALENS_PORT", "9001")
    monkeypatch.setenv("AQUALENS_DASK__ADDRESS", "tcp://scheduler:8786")
    monkeypatch.setenv("AQUALENS_DASK__N_WORKERS", "4")
    monkeypatch.setenv("AQUALENS_S3__ENDPOINT_URL", "http://s3.example:9000")
    monkeypatch.setenv("AQUALENS_STORAGE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("AQUALENS_DATABASE_URL", "postgresql://u@db/aqualens")
    monkeypatch.setenv("PORT", "1")  # without the prefix: ignored
    s = load_settings()
    assert s.port == 9001
    assert s.dask.address == "tcp://scheduler:8786" and s.dask.n_workers == 4
    assert s.s3.endpoint_url == "http://s3.example:9000"
    assert s.blob_url == "s3://bucket/prefix"
    assert s.db_url == "postgresql://u@db/aqualens"


def test_get_settings_is_cached_until_reset(monkeypatch):
    monkeypatch.setenv("AQUALENS_PORT", "9002")
    assert get_settings().port == 9002
    monkeypatch.setenv("AQUALENS_PORT", "9003")
    assert get_settings().port == 9002
    reset_settings()
    assert get_settings().port == 9003


TOML = """
port = 9100
log_level = "debug"
storage_url = "s3://from-file/p"

[dask]
address = "tcp://file-scheduler:8786"

[s3]
endpoint_url = "http://file-s3:8333"
"""

YAML = """
port: 9200
dask:
  address: tcp://yaml-scheduler:8786
limits:
  max_file_bytes: 1000
"""


def test_toml_file(monkeypatch, tmp_path):
    path = tmp_path / "aqualens.toml"
    path.write_text(TOML)
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    s = load_settings()
    assert s.port == 9100 and s.log_level == "debug"
    assert s.dask.address == "tcp://file-scheduler:8786"
    assert s.s3.endpoint_url == "http://file-s3:8333"
    assert s.blob_url == "s3://from-file/p"


def test_yaml_file(monkeypatch, tmp_path):
    path = tmp_path / "aqualens.yaml"
    path.write_text(YAML)
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    s = load_settings()
    assert s.port == 9200 and s.limits.max_file_bytes == 1000
    assert s.dask.address == "tcp://yaml-scheduler:8786"


def test_file_in_data_dir_is_read(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "aqualens.toml").write_text("port = 9300\n")
    assert load_settings().port == 9300


def test_env_beats_file_and_overrides_beat_env(monkeypatch, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    monkeypatch.setenv("AQUALENS_PORT", "9400")
    monkeypatch.setenv("AQUALENS_DASK__ADDRESS", "tcp://env-scheduler:8786")
    s = load_settings()
    assert s.port == 9400
    assert s.dask.address == "tcp://env-scheduler:8786"
    assert s.s3.endpoint_url == "http://file-s3:8333"  # untouched keys still come from the file
    assert load_settings(port=9500).port == 9500


@pytest.mark.parametrize(("var", "value", "words"), [
    ("AQUALENS_PORT", "abc", "integer"),
    ("AQUALENS_PORT", "70000", "65535"),
    ("AQUALENS_STORAGE_URL", "ftp://host/x", "s3://bucket/prefix"),
    ("AQUALENS_STORAGE_URL", "s3:///no-bucket", "bucket"),
    ("AQUALENS_DATABASE_URL", "mysql://u@h/db", "postgresql"),
    ("AQUALENS_LOG_LEVEL", "loud", "debug, info"),
    ("AQUALENS_DASK__N_WORKERS", "0", "greater than or equal to 1"),
    ("AQUALENS_LIMITS__MAX_FILE_BYTES", "-5", "greater than 0"),
])
def test_invalid_env_names_the_setting(monkeypatch, var, value, words):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == var
    assert var in str(info.value)
    assert words in str(info.value)


def test_invalid_value_in_file_names_the_setting(monkeypatch, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[dask]\nthreads_per_worker = 0\n")
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "AQUALENS_DASK__THREADS_PER_WORKER"


def test_unknown_key_in_file_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("prot = 1\n")
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "AQUALENS_PROT" in str(info.value)


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AQUALENS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "AQUALENS_CONFIG"
    assert "nope.toml" in str(info.value)


def test_config_file_of_unknown_type(monkeypatch, tmp_path):
    path = tmp_path / "settings.ini"
    path.write_text("port=1")
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "AQUALENS_CONFIG" and ".toml" in str(info.value)


@pytest.mark.parametrize(("name", "text"), [("broken.toml", "port = = 1\n"),
                                            ("broken.yaml", "port: [1\n")], ids=["toml", "yaml"])
def test_unparsable_config_file_names_it(monkeypatch, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setenv("AQUALENS_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "AQUALENS_CONFIG"


def test_nothing_built_at_import_time(tmp_path):
    """Importing the app and the CLI reads no settings, opens no database, creates no files."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data = tmp_path / "never"
    code = (
        "import aqualens.api.app, aqualens.cli.main, aqualens.catalog.fsck\n"
        "from aqualens.catalog import db\n"
        "from aqualens import storage\n"
        "from aqualens.core import config, plugins\n"
        "assert db._engines == {}, db._engines\n"
        "assert storage._stores == {}, storage._stores\n"
        "assert config.get_settings.cache_info().currsize == 0\n"
        "assert plugins._registry is None\n"
    )
    env = {"PATH": "/usr/bin:/bin", "AQUALENS_DATA_DIR": str(data),
           "AQUALENS_PORT": "not-a-port"}  # would fail if anything read settings at import
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not data.exists()
    assert list(cwd.iterdir()) == []


def test_cli_reports_invalid_setting(runner, monkeypatch, tmp_path: Path):
    from aqualens.cli.main import app

    monkeypatch.setenv("AQUALENS_PORT", "eighty")
    r = runner.invoke(app, ["--data-dir", str(tmp_path / "d"), "init"])
    assert r.exit_code == 1
    assert "AQUALENS_PORT" in r.output
    assert "Traceback" not in r.output
