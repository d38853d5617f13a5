"""S3 blob store via boto3: ``s3://bucket/prefix`` with ``<prefix>/<tier>/ab/cd/<sha>`` keys.

S3 puts are atomic per object, so a killed upload never leaves a partial blob under its key.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlparse

from aqualens.core.errors import NotFound, StorageError
from aqualens.storage.base import TIERS, BlobStore, check_key, check_tier, sha256_file, shard

if TYPE_CHECKING:
    from aqualens.core.config import Settings


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    """Turn boto3's exceptions into StorageError, so callers (and the API) see one error type."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"S3 {action} failed: {exc}", field="AQUALENS_S3__ENDPOINT_URL") from exc


class S3BlobStore(BlobStore):
    """Blobs in an S3 bucket (AWS, MinIO, SeaweedFS, Ceph ...)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 region: str = "us-east-1", create_bucket: bool = True) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"},
                          s3={"addressing_style": "path"}))
        if create_bucket:
            self._ensure_bucket()

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> S3BlobStore:
        parsed = urlparse(url)
        s3 = settings.s3
        return cls(parsed.netloc, parsed.path, endpoint_url=s3.endpoint_url,
                   access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region)

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                raise StorageError(f"cannot create bucket {self.bucket}: {exc}",
                                   field="AQUALENS_STORAGE_URL") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 endpoint: {exc}",
                               field="AQUALENS_S3__ENDPOINT_URL") from exc

    def _key(self, sha: str, tier: str) -> str:
        key = f"{tier}/{shard(check_key(sha))}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, path: Path, sha: str | None = None, tier: str = "active") -> str:
        check_tier(tier)
        sha = sha or sha256_file(path)
        if self.tier_of(sha) is not None:
            return sha
        try:
            self.client.upload_file(str(path), self.bucket, self._key(sha, tier))
        except Exception as exc:  # boto3 raises several unrelated types here
            raise StorageError(f"cannot upload blob {sha}: {exc}") from exc
        return sha

    def tier_of(self, sha: str) -> str | None:
        from botocore.exceptions import ClientError

        for tier in TIERS:
            with _s3_errors(f"lookup of blob {sha}"):
                try:
                    self.client.head_object(Bucket=self.bucket, Key=self._key(sha, tier))
                    return tier
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey",
                                                                         "NotFound"):
                        raise
        return None

    def open(self, sha: str) -> IO[bytes]:
        tier = self.tier_of(sha)
        if tier is None:
            raise NotFound(f"blob sha256:{sha} is not in the store", field="sha256")
        with _s3_errors(f"read of blob {sha}"):
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(sha, tier))
            return io.BytesIO(obj["Body"].read())

    def move(self, sha: str, tier: str) -> None:
        check_tier(tier)
        current = self.require(sha)
        if current == tier:
            return
        with _s3_errors(f"move of blob {sha}"):
            self.client.copy_object(Bucket=self.bucket, Key=self._key(sha, tier),
                                    CopySource={"Bucket": self.bucket, "Key": self._key(sha, current)})
            self.client.delete_object(Bucket=self.bucket, Key=self._key(sha, current))

    def delete(self, sha: str) -> None:
        with _s3_errors(f"delete of blob {sha}"):
            for tier in TIERS:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(sha, tier))

    def iter_blobs(self) -> Iterator[tuple[str, str]]:
        paginator = self.client.get_paginator("list_objects_v2")
        base = f"{self.prefix}/" if self.prefix else ""
        with _s3_errors("listing"):
            yield from self._iter(paginator, base)

    def _iter(self, paginator, base: str) -> Iterator[tuple[str, str]]:  # noqa: ANN001
        for tier in TIERS:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{base}{tier}/"):
                for obj in page.get("Contents", []):
                    yield obj["Key"].rsplit("/", 1)[-1], tier
