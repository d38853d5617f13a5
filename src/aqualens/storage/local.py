"""Local-folder blob store: temp file, fsync, atomic rename, sharded directories."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlparse

from aqualens.core.errors import IntegrityError, NotFound, StorageError
from aqualens.storage.base import TIERS, BlobStore, check_key, check_tier, sha256_file, shard

if TYPE_CHECKING:
    from aqualens.core.config import Settings


class LocalBlobStore(BlobStore):
    """Blobs under ``<root>/<tier>/ab/cd/<sha>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Tier folders as strings: open() builds a path per blob read, and a batch job reads
        # thousands a second (pathlib's parsing cost more than reading a vignette).
        self._tier_dirs = {tier: os.fspath(self.root / tier) for tier in TIERS}
        self.url = self.root.resolve().as_uri()
        try:
            for tier in TIERS:
                (self.root / tier).mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create blob folder {self.root}: {exc.strerror}",
                               field="AQUALENS_STORAGE_URL") from exc

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> LocalBlobStore:
        return cls(Path(unquote(urlparse(url).path)))

    def _path(self, sha: str, tier: str) -> Path:
        return Path(self._path_str(sha, tier))

    def _path_str(self, sha: str, tier: str) -> str:
        return os.path.join(self._tier_dirs[tier], shard(check_key(sha)))

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_atomic(self, src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            self._fsync_dir(dest.parent)
        except BaseException as exc:
            # Any failure (disk full, interrupt) removes the temp file; the key is never partial.
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write blob {dest.name}: {exc.strerror or exc}",
                                   field="sha256") from exc
            raise

    def put_file(self, path: Path, sha: str | None = None, tier: str = "active") -> str:
        check_tier(tier)
        sha = sha or sha256_file(path)
        if self.tier_of(sha) is not None:
            return sha
        self._write_atomic(Path(path), self._path(sha, tier))
        return sha

    def put_stream(self, stream: IO[bytes], sha: str, tier: str = "active") -> str:
        """Store a stream whose sha is known, verifying it while writing."""
        import hashlib

        check_tier(tier)
        if self.tier_of(sha) is not None:
            return sha
        dest = self._path(sha, tier)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(1024 * 1024), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha:
                raise IntegrityError(f"stream does not match sha256:{sha}", field="sha256")
            os.replace(tmp, dest)
            self._fsync_dir(dest.parent)
        except BaseException as exc:
            # A failed or interrupted write leaves neither a partial blob nor its temp file.
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write blob {sha}: {exc.strerror or exc}") from exc
            raise
        return sha

    def tier_of(self, sha: str) -> str | None:
        for tier in TIERS:
            if self._path(sha, tier).is_file():
                return tier
        return None

    def local_path(self, sha: str) -> Path:
        return self._path(sha, self.require(sha))

    def open(self, sha: str) -> IO[bytes]:
        for tier in TIERS:
            try:
                return open(self._path_str(sha, tier), "rb")
            except FileNotFoundError:
                continue
        raise NotFound(f"blob sha256:{sha} is not in the store", field="sha256")

    def move(self, sha: str, tier: str) -> None:
        check_tier(tier)
        current = self.require(sha)
        if current == tier:
            return
        src = self._path(sha, current)
        self._write_atomic(src, self._path(sha, tier))
        src.unlink()

    def delete(self, sha: str) -> None:
        for tier in TIERS:
            self._path(sha, tier).unlink(missing_ok=True)

    def iter_blobs(self) -> Iterator[tuple[str, str]]:
        for tier in TIERS:
            base = self.root / tier
            for path in sorted(base.glob("??/??/*")):
                if path.is_file():
                    yield path.name, tier

    def clean_tmp(self) -> int:
        """Remove temp files left by a killed writer; returns how many."""
        n = 0
        for path in (self.root / "tmp").iterdir():
            path.unlink(missing_ok=True)
            n += 1
        return n
