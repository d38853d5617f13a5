"""Behaviour every blob store must have; test_local.py and test_s3.py run it on real backends.

A subclass provides the ``store`` fixture and ``corrupt(store, sha, data)``, which overwrites the
stored bytes behind the store's back.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aqualens.core.errors import NotFound, ValidationError
from aqualens.storage.base import BlobStore, sha256_file

BAD_KEYS = ["", "../" * 5 + "etc/passwd", "A" * 64, "g" * 64, "a" * 63, "a" * 65,
            "a" * 62 + "/x", "ab/cd/" + "a" * 58]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StoreContract:
    """Shared tests; subclasses are collected (``Test...``) with their own ``store`` fixture."""

    def corrupt(self, store: BlobStore, key: str, data: bytes) -> None:
        raise NotImplementedError

    def test_put_get_roundtrip(self, store):
        key = store.put_bytes(b"plankton")
        assert key == sha(b"plankton")
        assert store.get_bytes(key) == b"plankton"
        with store.open(key) as fh:
            assert fh.read() == b"plankton"
        assert store.exists(key) and store.tier_of(key) == "active"
        assert store.verify(key)

    def test_put_file(self, store, tmp_path: Path):
        path = tmp_path / "big.bin"
        data = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
        path.write_bytes(data)
        key = store.put_file(path)
        assert key == sha256_file(path) == sha(data)
        assert store.get_bytes(key) == data
        assert store.put_file(path, sha=key) == key  # known hash: no re-hash, still deduplicated

    def test_identical_content_is_stored_once(self, store, tmp_path: Path):
        a = store.put_bytes(b"same")
        (tmp_path / "copy").write_bytes(b"same")
        b = store.put_file(tmp_path / "copy")
        c = store.put_bytes(b"same", tier="archive")  # already stored: stays where it is
        assert a == b == c
        assert list(store.iter_blobs()) == [(a, "active")]

    def test_empty_blob(self, store):
        key = store.put_bytes(b"")
        assert store.get_bytes(key) == b"" and store.verify(key)

    def test_iter_blobs_lists_both_tiers(self, store):
        a = store.put_bytes(b"one")
        b = store.put_bytes(b"two", tier="archive")
        assert sorted(store.iter_blobs()) == sorted([(a, "active"), (b, "archive")])

    def test_verify_detects_corruption(self, store):
        key = store.put_bytes(b"original bytes")
        self.corrupt(store, key, b"tampered bytes")
        assert not store.verify(key)

    def test_delete(self, store):
        key = store.put_bytes(b"gone soon")
        store.delete(key)
        assert not store.exists(key) and store.tier_of(key) is None
        store.delete(key)  # absent is fine
        with pytest.raises(NotFound) as info:
            store.open(key)
        assert info.value.field == "sha256"
        with pytest.raises(NotFound):
            store.require(key)
        assert list(store.iter_blobs()) == []

    def test_move_between_tiers(self, store):
        key = store.put_bytes(b"cold data")
        store.move(key, "archive")
        assert store.tier_of(key) == "archive"
        assert list(store.iter_blobs()) == [(key, "archive")]  # moved, not copied
        assert store.get_bytes(key) == b"cold data" and store.verify(key)
        store.move(key, "archive")  # already there: no-op
        store.move(key, "active")
        assert list(store.iter_blobs()) == [(key, "active")]
        store.delete(key)
        assert list(store.iter_blobs()) == []

    def test_move_absent_blob(self, store):
        with pytest.raises(NotFound):
            store.move(sha(b"never stored"), "archive")

    @pytest.mark.parametrize("tier", ["cold", "", "ACTIVE", "../active"])
    def test_unknown_tier_refused(self, store, tier):
        key = store.put_bytes(b"x")
        with pytest.raises(ValidationError) as info:
            store.move(key, tier)
        assert info.value.field == "tier" and "archive" in info.value.valid
        with pytest.raises(ValidationError):
            store.put_bytes(b"y", tier=tier)
        assert store.tier_of(key) == "active"

    @pytest.mark.parametrize("bad", BAD_KEYS, ids=range(len(BAD_KEYS)))
    def test_bad_keys_refused(self, store, tmp_path: Path, bad):
        (tmp_path / "f").write_bytes(b"data")
        calls = [lambda: store.open(bad), lambda: store.tier_of(bad), lambda: store.exists(bad),
                 lambda: store.delete(bad), lambda: store.move(bad, "archive"),
                 lambda: store.get_bytes(bad)]
        if bad:  # an empty sha means "not known yet": put_file hashes the file itself
            calls.append(lambda: store.put_file(tmp_path / "f", sha=bad))
        for call in calls:
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.field == "sha256"
            assert "64 lower-case hex" in info.value.valid
        assert list(store.iter_blobs()) == []
