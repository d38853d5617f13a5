"""Consistency of catalogue and blob store: ``fsck`` and tier moves.

``fsck`` checks, in this order:

1. every blob's bytes against its sha256 key (``corrupt``), and blobs held in both tiers
   (``duplicate``: a tier move was interrupted; re-running ``aqualens tier`` finishes it);
2. every row that names a blob (images: ``sha256``, ``thumb_sha256``; models: ``artefact_sha256``,
   ``package_sha256``, plus any :func:`register_references` source) against the store
   (``missing``), and each image's ``tier`` against the tier holding its blob (``tier``);
3. blobs no row references (``orphan``) and temp files left by killed writers (``temp``).

``repair=True`` deletes orphans and temp files only; rows are never changed or deleted. Blobs and
temp files younger than ``grace`` seconds are left alone: a writer stores the blob before it
commits the row that references it, and must not lose it to a concurrent fsck.

Blob hashes that appear anywhere in job outputs, dataset versions or model params (exports,
packages) count as referenced, so ``repair`` never deletes something a record still points at.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.tables import DatasetVersion, Image, Job, Model, User
from aqualens.catalog.users import check_write
from aqualens.core.errors import NotFound, StorageError
from aqualens.storage.base import TIERS, BlobStore, check_tier

#: A reference source yields ``(sha256, table, row_id, column)`` for every blob a row needs.
ReferenceSource = Callable[[Session], Iterable[tuple[str, str, Any, str]]]
Progress = Callable[[int, int], None]

DEFAULT_GRACE = 900.0
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
_sources: list[ReferenceSource] = []


def register_references(source: ReferenceSource) -> None:
    """Declare more rows that reference blobs (e.g. exports, published packages).

    Their blobs are then checked for existence and never reported as orphans.
    """
    if source not in _sources:
        _sources.append(source)


@dataclass
class Problem:
    """One inconsistency. ``kind``: corrupt, duplicate, missing, tier, orphan or temp."""

    kind: str
    message: str
    sha256: str | None = None
    tier: str | None = None
    table: str | None = None
    row_id: Any = None
    column: str | None = None
    path: str | None = None
    repaired: bool = False


@dataclass
class FsckReport:
    """What fsck looked at and found; ``ok`` when nothing is left to fix."""

    blobs: int = 0
    rows: int = 0
    verified: int = 0
    skipped_young: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    @property
    def ok(self) -> bool:
        return not self.unrepaired

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blobs": self.blobs, "rows": self.rows, "verified": self.verified,
                "skipped_young": self.skipped_young, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "repaired": sum(p.repaired for p in self.problems),
                "problems": [asdict(p) for p in self.problems]}


# ------------------------------------------------------------------------------- references


def _builtin_references(session: Session) -> Iterator[tuple[str, str, Any, str]]:
    for row_id, sha, thumb in session.execute(
            select(Image.id, Image.sha256, Image.thumb_sha256).order_by(Image.id)
            .execution_options(yield_per=5000)):
        yield sha, "images", row_id, "sha256"
        if thumb:
            yield thumb, "images", row_id, "thumb_sha256"
    for row_id, art, pkg in session.execute(
            select(Model.id, Model.artefact_sha256, Model.package_sha256).order_by(Model.id)):
        yield art, "models", row_id, "artefact_sha256"
        if pkg:
            yield pkg, "models", row_id, "package_sha256"


def _soft_references(session: Session) -> set[str]:
    """Hashes mentioned in JSON of jobs, dataset versions and models: protected from repair."""
    found: set[str] = set()
    queries = [select(Job.outputs), select(DatasetVersion.manifest, DatasetVersion.meta),
               select(Model.params)]
    for query in queries:
        for row in session.execute(query.execution_options(yield_per=500)):
            for value in row:
                if value:
                    found.update(_HEX64.findall(json.dumps(value, default=str)))
    return found


# ------------------------------------------------------------------------------- store helpers


def _blob_age(store: BlobStore, sha: str, tier: str) -> float | None:
    """Seconds since the blob was written, when the backend can tell."""
    from aqualens.storage.local import LocalBlobStore
    from aqualens.storage.s3 import S3BlobStore

    try:
        if isinstance(store, LocalBlobStore):
            return time.time() - store._path(sha, tier).stat().st_mtime
        if isinstance(store, S3BlobStore):
            head = store.client.head_object(Bucket=store.bucket, Key=store._key(sha, tier))
            return (datetime.now(timezone.utc) - head["LastModified"]).total_seconds()
    except Exception:  # noqa: BLE001 - vanished meanwhile (OSError, ClientError): age unknown
        return None
    return None


def _temp_files(store: BlobStore) -> Iterator[tuple[str, float, Callable[[], None]]]:
    """``(description, age_seconds, remove)`` for leftovers of killed writers.

    Local stores: files in ``<root>/tmp``. S3: incomplete multipart uploads under the prefix
    (a large upload that died half-way keeps its parts, and the bill, until aborted).
    """
    from aqualens.storage.local import LocalBlobStore
    from aqualens.storage.s3 import S3BlobStore

    now = time.time()
    if isinstance(store, LocalBlobStore):
        tmp = store.root / "tmp"
        if tmp.is_dir():
            for path in sorted(tmp.iterdir()):
                try:
                    age = now - path.stat().st_mtime
                except OSError:
                    continue
                yield str(path), age, (lambda p=path: p.unlink(missing_ok=True))
    elif isinstance(store, S3BlobStore):
        prefix = f"{store.prefix}/" if store.prefix else ""
        paginator = store.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                age = (datetime.now(timezone.utc) - up["Initiated"]).total_seconds()

                def _abort(key: str = up["Key"], uid: str = up["UploadId"]) -> None:
                    store.client.abort_multipart_upload(Bucket=store.bucket, Key=key,
                                                        UploadId=uid)

                yield f"s3://{store.bucket}/{up['Key']} (upload {up['UploadId']})", age, _abort


# ---------------------------------------------------------------------------------------- fsck


def fsck(ctx: Context, *, repair: bool = False, progress: Progress | None = None,
         verify: bool = True, grace: float = DEFAULT_GRACE) -> FsckReport:
    """Check the store against its hashes and the catalogue against the store.

    ``verify=False`` skips re-hashing blob contents (existence checks only). ``progress`` is
    called with ``(done, total)`` as blobs and rows are checked. With ``repair=True`` orphan blobs
    and leftover temp files older than ``grace`` seconds are deleted; nothing else is changed.
    """
    started = time.monotonic()
    store = ctx.store
    report = FsckReport()
    try:
        listing = list(store.iter_blobs())
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001  # boto3/OS errors while listing: the store is unreachable
        raise StorageError(f"cannot list blobs in {store.url}: {exc}") from exc

    tiers: dict[str, list[str]] = {}
    for sha, tier in listing:
        tiers.setdefault(sha, []).append(tier)
    report.blobs = len(tiers)

    with ctx.session() as s:
        n_rows = (s.scalar(select(func.count()).select_from(Image)) or 0) + \
                 (s.scalar(select(func.count()).select_from(Model)) or 0)
    total = (len(tiers) if verify else 0) + n_rows
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 50 == 0 or done == total):
            progress(done, total)

    # 1. blob contents
    for sha, held in tiers.items():
        if len(held) > 1:
            report.problems.append(Problem(
                "duplicate", f"blob sha256:{sha} is in tiers {', '.join(held)}; an interrupted "
                "tier move (re-run 'aqualens tier')", sha256=sha, tier=",".join(held)))
        if not verify:
            continue
        try:
            good = store.verify(sha)
        except NotFound:  # deleted since the listing
            good = True
        report.verified += 1
        if not good:
            report.problems.append(Problem(
                "corrupt", f"blob sha256:{sha} in tier {held[0]} does not match its hash",
                sha256=sha, tier=held[0]))
        tick()

    # 2. rows against blobs
    referenced: set[str] = set()
    with ctx.session() as s:
        image_tiers = dict(s.execute(select(Image.id, Image.tier)).all())
        sources: list[ReferenceSource] = [_builtin_references, *_sources]
        for source in sources:
            for sha, table, row_id, column in source(s):
                referenced.add(sha)
                if table in ("images", "models") and column in ("sha256", "artefact_sha256"):
                    report.rows += 1
                    tick()
                held = tiers.get(sha)
                if not held:
                    report.problems.append(Problem(
                        "missing",
                        f"{table} row {row_id}: {column} sha256:{sha} is not in the store",
                        sha256=sha, table=table, row_id=row_id, column=column))
                elif table == "images" and column == "sha256":
                    want = image_tiers.get(row_id)
                    if want is not None and want not in held:
                        report.problems.append(Problem(
                            "tier", f"images row {row_id} says tier {want} but its blob is in "
                            f"{held[0]} (re-run 'aqualens tier --to {want} --image {row_id}')",
                            sha256=sha, tier=held[0], table="images", row_id=row_id,
                            column="tier"))
        referenced |= _soft_references(s)

    # 3. orphans and temp files
    for sha, held in tiers.items():
        if sha in referenced:
            continue
        age = _blob_age(store, sha, held[0])
        if age is not None and age < grace:
            report.skipped_young += 1
            continue
        problem = Problem("orphan", f"blob sha256:{sha} in tier {held[0]} is referenced by no row",
                          sha256=sha, tier=held[0])
        if repair:
            store.delete(sha)
            problem.repaired = True
        report.problems.append(problem)

    for where, age, remove in _temp_files(store):
        if age < grace:
            report.skipped_young += 1
            continue
        problem = Problem("temp", f"leftover temp file {where}", path=where)
        if repair:
            remove()
            problem.repaired = True
        report.problems.append(problem)

    if progress is not None:
        progress(total, total)
    report.seconds = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------- tiers


@dataclass
class MoveReport:
    """Outcome of :func:`move_images`."""

    moved: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def move_images(ctx: Context, image_ids: Iterable[int], tier: str, *,
                user: User | None = None, progress: Callable[[int], None] | None = None,
                batch: int = 200) -> MoveReport:
    """Move the blobs of ``image_ids`` to ``tier`` and record it on each image row.

    The store is changed first, then the row, so a crash leaves the row naming the old tier
    and a blob that is (or is about to be) in the new one: re-running finishes the move, and
    fsck reports the mismatch meanwhile. Thumbnails stay in the active tier: they are what
    browsing reads. ``user`` (when given) must own each image or be an admin.
    """
    check_tier(tier)
    store = ctx.store
    report = MoveReport()
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        with ctx.session() as s:
            rows = {r.id: r for r in s.scalars(select(Image).where(Image.id.in_(chunk)))}
            done_ids: list[int] = []
            for image_id in chunk:
                row = rows.get(image_id)
                if row is None:
                    report.not_found.append(image_id)
                    continue
                if user is not None:
                    check_write(row, user, "image")
                current = store.tier_of(row.sha256)
                if current is None:
                    report.missing.append(image_id)
                elif current == tier and row.tier == tier:
                    report.unchanged.append(image_id)
                else:
                    store.move(row.sha256, tier)
                    done_ids.append(image_id)
                    report.moved.append(image_id)
                if progress is not None:
                    progress(1)
            if done_ids:
                s.execute(update(Image).where(Image.id.in_(done_ids)).values(tier=tier))
    return report


__all__ = ["fsck", "FsckReport", "Problem", "move_images", "MoveReport", "register_references",
           "TIERS", "DEFAULT_GRACE"]
