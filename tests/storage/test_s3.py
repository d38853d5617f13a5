"""S3 blob store against a real SeaweedFS server (tests/servers.py): the contract and more."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aqualens.core.config import load_settings
from aqualens.core.errors import StorageError
from aqualens.storage import forget_stores, open_store
from aqualens.storage.s3 import S3BlobStore
from tests.storage.contract import StoreContract, sha

pytestmark = pytest.mark.s3


def _store(s3_server, **kw) -> S3BlobStore:
    settings = load_settings(**s3_server.settings(**kw))
    forget_stores()
    store = open_store(settings)
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture
def store(s3_server) -> S3BlobStore:
    return _store(s3_server)


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_server) -> S3BlobStore:
        return _store(s3_server)

    def corrupt(self, store, key, data):
        store.client.put_object(Bucket=store.bucket, Key=store._key(key, store.require(key)),
                                Body=data)


def test_keys_live_under_the_prefix(store, s3_server):
    key = store.put_bytes(b"prefixed")
    objects = s3_server.client().list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + "/")
    assert [o["Key"] for o in objects["Contents"]] == [
        f"{store.prefix}/active/{key[:2]}/{key[2:4]}/{key}"]


def test_prefixes_are_isolated(s3_server):
    a, b = _store(s3_server), _store(s3_server)
    key = a.put_bytes(b"only in a")
    assert a.exists(key) and not b.exists(key)
    assert list(b.iter_blobs()) == []


def test_bucket_is_created_and_empty_prefix_works(s3_server):
    bucket = f"own-{os.urandom(4).hex()}"
    store = _store(s3_server, bucket=bucket, prefix="")
    assert store.url == f"s3://{bucket}/" and store.prefix == ""
    key = store.put_bytes(b"top level")
    head = s3_server.client().head_object(Bucket=bucket, Key=f"active/{key[:2]}/{key[2:4]}/{key}")
    assert head["ContentLength"] == len(b"top level")
    assert list(store.iter_blobs()) == [(key, "active")]


def test_multipart_upload_roundtrip(store, tmp_path: Path):
    """Above boto3's 8 MiB threshold uploads go in parts; the object appears only when complete."""
    path = tmp_path / "large.bin"
    data = os.urandom(9 * 1024 * 1024)
    path.write_bytes(data)
    key = store.put_file(path)
    assert key == sha(data) and store.verify(key)
    assert store.get_bytes(key) == data
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []


def test_failed_upload_leaves_no_object(store, tmp_path: Path):
    """A connection that dies during the PUT leaves nothing under the key."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"never arrives")

    def cut(**_kw):
        raise ConnectionResetError("simulated network failure")

    store.client.meta.events.register("before-send.s3.PutObject", cut)
    try:
        with pytest.raises(StorageError) as info:
            store.put_file(path)
        assert "simulated network failure" in str(info.value)
    finally:
        store.client.meta.events.unregister("before-send.s3.PutObject", cut)
    assert store.tier_of(sha(b"never arrives")) is None
    assert list(store.iter_blobs()) == []


def test_failed_move_keeps_the_source(store):
    key = store.put_bytes(b"precious")

    def cut(**_kw):
        raise ConnectionResetError("simulated network failure")

    store.client.meta.events.register("before-send.s3.CopyObject", cut)
    try:
        with pytest.raises(Exception):  # noqa: B017 - botocore's own error type
            store.move(key, "archive")
    finally:
        store.client.meta.events.unregister("before-send.s3.CopyObject", cut)
    assert list(store.iter_blobs()) == [(key, "active")]
    assert store.get_bytes(key) == b"precious"


def test_wrong_credentials_are_a_storage_error(s3_server):
    store = _store(s3_server)
    bad = S3BlobStore(store.bucket, store.prefix, endpoint_url=s3_server.endpoint_url,
                      access_key="wrong", secret_key="wrong", create_bucket=False)
    with pytest.raises(StorageError):
        bad.tier_of(sha(b"x"))
    with pytest.raises(StorageError) as info:
        S3BlobStore(f"nope-{os.urandom(4).hex()}", endpoint_url=s3_server.endpoint_url,
                    access_key="wrong", secret_key="wrong")
    assert info.value.field == "AQUALENS_STORAGE_URL"
