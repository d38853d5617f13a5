"""The plugin registry: entry points, direct registration, clear errors for unknown names."""

from __future__ import annotations

import pytest

from aqualens.core.errors import NotFound
from aqualens.core.plugins import GROUPS, Registry, get_registry


def test_builtin_storage_plugins_come_from_entry_points():
    from aqualens.storage.local import LocalBlobStore
    from aqualens.storage.s3 import S3BlobStore

    reg = Registry()
    assert {"file", "s3"} <= set(reg.names("aqualens.storage"))
    assert reg.get("aqualens.storage", "file") is LocalBlobStore
    assert reg.get("aqualens.storage", "s3") is S3BlobStore


def test_entry_points_load_lazily():
    reg = Registry()
    reg.names("aqualens.storage")
    assert reg._loaded["aqualens.storage"] == {}  # listed, not imported
    reg.get("aqualens.storage", "file")
    assert list(reg._loaded["aqualens.storage"]) == ["file"]


def test_unknown_plugin_names_group_and_valid_names():
    reg = Registry()
    with pytest.raises(NotFound) as info:
        reg.get("aqualens.storage", "ftp")
    assert info.value.field == "aqualens.storage"
    assert "ftp" in str(info.value)
    assert "file" in info.value.valid and "s3" in info.value.valid


def test_empty_group_says_none_installed():
    reg = Registry()
    with pytest.raises(NotFound) as info:
        reg.get("aqualens.no-such-group", "x")
    assert info.value.valid == "none installed"
    assert reg.names("aqualens.no-such-group") == []


def test_register_and_unregister():
    reg = Registry()
    marker = object()
    reg.register("aqualens.services", "test-service", marker)
    assert "test-service" in reg.names("aqualens.services")
    assert reg.get("aqualens.services", "test-service") is marker
    reg.unregister("aqualens.services", "test-service")
    assert "test-service" not in reg.names("aqualens.services")
    reg.unregister("aqualens.services", "never-there")  # no error


def test_register_overrides_an_entry_point():
    reg = Registry()
    marker = object()
    reg.register("aqualens.storage", "file", marker)
    assert reg.get("aqualens.storage", "file") is marker


def test_all_loads_every_plugin():
    reg = Registry()
    reg.register("aqualens.test-only", "probe", len)
    reg.register("aqualens.test-only", "other", str)
    assert reg.all("aqualens.test-only") == {"probe": len, "other": str}


def test_process_registry_is_a_singleton():
    assert get_registry() is get_registry()
    assert "aqualens.storage" in GROUPS and "aqualens.jobs" in GROUPS
