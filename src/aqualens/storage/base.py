"""The blob store interface: immutable blobs keyed by their sha256, in two tiers."""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aqualens.core.errors import NotFound, ValidationError

if TYPE_CHECKING:
    from aqualens.core.config import Settings

TIERS = ("active", "archive")
_SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_key(sha: str) -> str:
    """Refuse anything that is not a lower-case hex sha256 (keys become paths)."""
    if not isinstance(sha, str) or _SHA256.fullmatch(sha) is None:
        raise ValidationError(f"not a sha256 hex digest: {sha!r}", field="sha256",
                              valid="64 lower-case hex characters")
    return sha


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise ValidationError(f"unknown storage tier {tier!r}", field="tier", valid=", ".join(TIERS))
    return tier


def shard(sha: str) -> str:
    """``ab/cd/abcd...``: two levels keep folders small at millions of blobs."""
    return f"{sha[:2]}/{sha[2:4]}/{sha}"


class BlobStore(ABC):
    """Immutable blobs by sha256. Writing the same bytes twice stores them once."""

    url: str

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, settings: Settings) -> BlobStore:
        """Build the store for a storage URL."""

    @abstractmethod
    def put_file(self, path: Path, sha: str | None = None, tier: str = "active") -> str:
        """Store the file at ``path``; returns its sha256. ``sha`` skips re-hashing when known."""

    def put_bytes(self, data: bytes, tier: str = "active") -> str:
        """Store ``data``; returns its sha256."""
        import tempfile

        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha
        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(data)
        try:
            return self.put_file(Path(tmp.name), sha=sha, tier=tier)
        finally:
            Path(tmp.name).unlink(missing_ok=True)

    @abstractmethod
    def open(self, sha: str) -> IO[bytes]:
        """A binary file object for the blob, whichever tier holds it."""

    def get_bytes(self, sha: str) -> bytes:
        with self.open(sha) as fh:
            return fh.read()

    @abstractmethod
    def tier_of(self, sha: str) -> str | None:
        """The tier holding the blob, or None when it is absent."""

    def exists(self, sha: str) -> bool:
        return self.tier_of(sha) is not None

    def require(self, sha: str) -> str:
        tier = self.tier_of(sha)
        if tier is None:
            raise NotFound(f"blob sha256:{sha} is not in the store", field="sha256")
        return tier

    @abstractmethod
    def move(self, sha: str, tier: str) -> None:
        """Move a blob to ``tier`` (copy then delete, so a crash leaves at least one copy)."""

    @abstractmethod
    def delete(self, sha: str) -> None:
        """Remove the blob from every tier; absent blobs are fine."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, str]]:
        """Every ``(sha, tier)`` in the store."""

    def verify(self, sha: str) -> bool:
        """Re-hash the stored bytes and compare with the key."""
        h = hashlib.sha256()
        with self.open(sha) as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest() == sha

    def local_path(self, sha: str) -> Path | None:
        """A local file path for the blob when the backend has one (fast path for decoding)."""
        return None
