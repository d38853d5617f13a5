"""Local-folder blob store: the shared contract, sharding, atomic writes, temp-file cleanup."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from aqualens.core.config import load_settings
from aqualens.core.errors import IntegrityError, StorageError
from aqualens.storage import forget_stores, open_store
from aqualens.storage.local import LocalBlobStore
from tests.storage.contract import StoreContract, sha


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")

    def corrupt(self, store, key, data):
        path = store.local_path(key)
        path.chmod(0o644)
        path.write_bytes(data)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_layout_is_sharded(store):
    key = store.put_bytes(b"sharded")
    assert store.local_path(key) == store.root / "active" / key[:2] / key[2:4] / key
    store.move(key, "archive")
    assert store.local_path(key) == store.root / "archive" / key[:2] / key[2:4] / key
    assert not (store.root / "active" / key[:2] / key[2:4] / key).exists()


def test_open_store_from_settings(tmp_path):
    forget_stores()
    settings = load_settings(data_dir=tmp_path / "inst")
    s = open_store(settings)
    assert isinstance(s, LocalBlobStore)
    assert s.root == (tmp_path / "inst" / "blobs").resolve()
    assert open_store(settings) is s  # cached per URL
    other = open_store(load_settings(data_dir=tmp_path / "x",
                                     storage_url=(tmp_path / "y").as_uri()))
    assert other.root == tmp_path / "y"
    forget_stores()


def _tmp_files(store: LocalBlobStore) -> list[Path]:
    return list((store.root / "tmp").iterdir())


def test_failed_write_leaves_no_partial_blob(store, tmp_path, monkeypatch):
    """A write that dies half-way (disk full) leaves neither bytes under the key nor a temp file."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(200_000))
    key = sha(src.read_bytes())
    real = shutil.copyfileobj

    def half_then_enospc(inp, out, length=0):
        out.write(inp.read(100_000))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", half_then_enospc)
    with pytest.raises(StorageError) as info:
        store.put_file(src)
    assert "No space left" in str(info.value)
    assert store.tier_of(key) is None
    assert _tmp_files(store) == []
    monkeypatch.setattr(shutil, "copyfileobj", real)
    assert store.put_file(src) == key and store.verify(key)  # a retry succeeds


def test_interrupted_write_cleans_temp(store, tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)

    def interrupted(inp, out, length=0):
        out.write(inp.read(10))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put_file(src)
    assert _tmp_files(store) == [] and list(store.iter_blobs()) == []


def test_failed_move_keeps_the_source(store, monkeypatch):
    key = store.put_bytes(b"precious")

    def fail(inp, out, length=0):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "copyfileobj", fail)
    with pytest.raises(StorageError):
        store.move(key, "archive")
    assert list(store.iter_blobs()) == [(key, "active")]
    assert store.get_bytes(key) == b"precious" and _tmp_files(store) == []


def test_put_stream_verifies_while_writing(store):
    data = os.urandom(50_000)
    key = store.put_stream(io.BytesIO(data), sha(data))
    assert store.get_bytes(key) == data
    with pytest.raises(IntegrityError) as info:
        store.put_stream(io.BytesIO(b"not what was announced"), sha(b"announced"))
    assert info.value.field == "sha256"
    assert not store.exists(sha(b"announced")) and _tmp_files(store) == []


def test_put_stream_failure_mid_stream(store):
    class Broken(io.RawIOBase):
        def __init__(self):
            self.n = 0

        def read(self, size=-1):
            self.n += 1
            if self.n > 2:
                raise OSError(104, "Connection reset by peer")
            return b"z" * 1000

    with pytest.raises(StorageError):
        store.put_stream(Broken(), sha(b"whatever"))
    assert _tmp_files(store) == [] and list(store.iter_blobs()) == []


def test_clean_tmp_removes_leftovers(store):
    (store.root / "tmp" / "tmpabc").write_bytes(b"half a blob")
    assert store.clean_tmp() == 1 and _tmp_files(store) == []


def test_unwritable_root_is_a_storage_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError) as info:
        LocalBlobStore(tmp_path / "file" / "blobs")
    assert info.value.field == "AQUALENS_STORAGE_URL"
