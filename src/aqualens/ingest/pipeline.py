"""The ingest pipeline: sources → probe + store blobs (thread pool) → catalogue rows in batches.

Crash safety: each blob (original and thumbnail) is written atomically BEFORE the rows that
reference it, and rows are committed in small transactions. A process killed at any point leaves
at most blobs without rows (re-linked by the next run) and never a row without its blob, so
re-running the same ingest converges to the state a clean run gives.

Concurrency: two ingests of the same content race on ``images.sha256`` (unique). The loser's
transaction fails with an IntegrityError; the batch is rolled back and retried, and the retry
reads the winner's row.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from aqualens.catalog.collections import get_or_create_collection
from aqualens.catalog.context import Context
from aqualens.catalog.images import search_text_for
from aqualens.catalog.tables import Collection, CollectionImage, Image, UsageEvent, User
from aqualens.catalog.users import check_visibility
from aqualens.core.errors import NotFound, StorageError
from aqualens.ingest import hooks
from aqualens.ingest import report as R
from aqualens.ingest.probe import Probe, Rejected, probe_source
from aqualens.ingest.report import IngestedItem, IngestReport
from aqualens.ingest.sidecar import FIELDS, lookup_key, normalise_record, read_sidecar
from aqualens.ingest.sources import Item, Skipped, Source, count_paths, iter_file, iter_paths

log = logging.getLogger(__name__)

BATCH = 200  # rows per transaction: small enough to lose little on a crash, big enough to be fast
RETRIES = 5
Progress = Callable[[int], None]


@dataclass
class _Done:
    """A probed and stored image waiting for its catalogue rows."""

    name: str
    url: str | None
    probe: Probe
    thumb_sha: str
    record: dict[str, Any] | None


def default_workers() -> int:
    """Threads for hashing, decoding and storing.

    Pillow and hashlib release the GIL, and much of each item's time is spent waiting on fsync
    (local store) or round trips (S3), so a few threads per core pay off.
    """
    return max(4, min(16, 4 * (os.cpu_count() or 2)))


def _store_one(ctx: Context, source: Source, max_pixels: int, thumb_size: int) -> tuple[Probe, str]:
    """Probe ``source`` and write its blob and thumbnail (runs in a worker thread)."""
    try:
        try:
            probe, data = probe_source(source, max_pixels=max_pixels, thumb_size=thumb_size)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected(f"damaged image ({type(exc).__name__}: {exc})", R.TRUNCATED) from None
        store = ctx.store
        put_stream = getattr(store, "put_stream", None)
        if source.path is not None:
            store.put_file(source.path, sha=probe.sha256)
        elif put_stream is not None:
            put_stream(io.BytesIO(data), probe.sha256)
        else:
            store.put_bytes(data or b"")
        thumb_sha = hashlib.sha256(probe.thumbnail).hexdigest()
        if put_stream is not None:
            put_stream(io.BytesIO(probe.thumbnail), thumb_sha)
        else:
            store.put_bytes(probe.thumbnail)
        return probe, thumb_sha
    finally:
        source.cleanup()


def _apply(img: Image, done: _Done, *, may_edit: bool, visibility: str) -> None:
    """Catalogue fields: the sidecar wins and overwrites (owner only); EXIF only fills gaps."""
    probe, rec = done.probe, done.record or {}
    if may_edit:
        for field in FIELDS:
            if rec.get(field) is not None:
                setattr(img, field, rec[field])
        if rec.get("meta"):
            img.meta = {**(img.meta or {}), **rec["meta"]}
        if visibility == "public":
            img.visibility = "public"
    for field in ("captured_at", "lat", "lon", "depth", "instrument"):
        if getattr(img, field) is None and getattr(probe, field) is not None:
            setattr(img, field, getattr(probe, field))
    if probe.exif and "exif" not in (img.meta or {}):
        img.meta = {**(img.meta or {}), "exif": probe.exif}
    if img.thumb_sha256 is None:
        img.thumb_sha256 = done.thumb_sha
    # The same content under another name is findable by that name too.
    names = [img.original_name or done.name] + ([done.name] if done.name != img.original_name
                                                else [])
    img.search_text = search_text_for(" ".join(names), img.instrument, img.station, img.meta)


def _write_batch(ctx: Context, batch: list[_Done], *, collection_id: int, owner_id: int,
                 visibility: str, editor_is_admin: bool) -> list[IngestedItem]:
    """Insert or update the rows of one batch in one transaction; retried on races."""
    for attempt in range(RETRIES):
        try:
            with ctx.session() as s:
                return _write_rows(s, batch, collection_id=collection_id, owner_id=owner_id,
                                   visibility=visibility, editor_is_admin=editor_is_admin)
        except DBIntegrityError:
            # Another ingest inserted the same sha256 (or link) meanwhile: re-read and retry.
            log.info("ingest batch raced with another writer; retry %d", attempt + 1)
            time.sleep(0.05 * (attempt + 1))
    with ctx.session() as s:  # last try, errors propagate
        return _write_rows(s, batch, collection_id=collection_id, owner_id=owner_id,
                           visibility=visibility, editor_is_admin=editor_is_admin)


def _write_rows(s: Session, batch: list[_Done], *, collection_id: int, owner_id: int,
                visibility: str, editor_is_admin: bool) -> list[IngestedItem]:
    shas = {d.probe.sha256 for d in batch}
    existing = {img.sha256: img for img in s.scalars(select(Image).where(Image.sha256.in_(shas)))}
    linked = set(s.scalars(select(CollectionImage.image_id).where(
        CollectionImage.collection_id == collection_id,
        CollectionImage.image_id.in_([i.id for i in existing.values()]))))
    rows: list[tuple[_Done, Image, bool]] = []
    for done in batch:
        img = existing.get(done.probe.sha256)
        duplicate = img is not None
        if img is None:
            p = done.probe
            img = Image(sha256=p.sha256, size=p.size, width=p.width, height=p.height,
                        format=p.format, owner_id=owner_id, visibility=visibility, meta={},
                        original_name=done.name[:1000], source_url=(done.url or "")[:2000] or None)
            s.add(img)
            existing[p.sha256] = img
        _apply(img, done,
               may_edit=editor_is_admin or img.owner_id == owner_id, visibility=visibility)
        rows.append((done, img, duplicate))
    s.flush()
    items = []
    for done, img, duplicate in rows:
        new_link = img.id not in linked
        if new_link:
            s.add(CollectionImage(collection_id=collection_id, image_id=img.id,
                                  original_name=done.name[:1000]))
            linked.add(img.id)
        p = done.probe
        items.append(IngestedItem(name=done.name, image_id=img.id, sha256=p.sha256, width=p.width,
                                  height=p.height, duplicate=duplicate, linked=new_link,
                                  size=p.size))
    s.flush()
    return items


def ingest_items(ctx: Context, items: Iterable[Item], *, collection_id: int, owner_id: int,
                 metadata: dict[str, dict] | None = None, visibility: str = "private",
                 progress: Progress | None = None, workers: int | None = None,
                 report: IngestReport | None = None) -> IngestReport:
    """Ingest already-walked items (sources, rejections, skipped companions) into a collection.

    The engine under :func:`ingest_files` and :func:`ingest_paths`.
    """
    started = time.perf_counter()
    report = report or IngestReport(collection_id=collection_id)
    report.collection_id = collection_id
    visibility = check_visibility(visibility)
    limits = ctx.settings.limits
    with ctx.session() as s:
        owner = s.get(User, owner_id)
        if owner is None:
            raise NotFound(f"no user with id {owner_id}", field="owner_id")
        collection = s.get(Collection, collection_id)
        if collection is None:
            raise NotFound(f"no collection {collection_id}", field="collection")
        report.collection = collection.name
        is_admin = bool(owner.is_admin)
    metadata = {k: normalise_record(v, f"metadata for {k}") for k, v in (metadata or {}).items()}
    matched: set[str] = set()
    tick = progress or (lambda n: None)
    n_workers = workers or default_workers()
    pending: deque[tuple[Source, Future]] = deque()
    batch: list[_Done] = []

    def flush() -> None:
        if not batch:
            return
        done_items = _write_batch(ctx, batch, collection_id=collection_id, owner_id=owner_id,
                                  visibility=visibility, editor_is_admin=is_admin)
        report.accepted.extend(done_items)
        batch.clear()
        hooks.fire(ctx, collection_id, [i.image_id for i in done_items if i.linked])

    def drain_one() -> None:
        source, fut = pending.popleft()
        try:
            probe, thumb_sha = fut.result()
        except Rejected as exc:
            report.reject(source.name, exc.reason, exc.code)
        else:
            key = lookup_key(metadata, source.name) if metadata else None
            record = metadata[key] if key is not None else None
            if key is not None:
                matched.add(key)
            batch.append(_Done(source.name, source.url, probe, thumb_sha, record))
            if len(batch) >= BATCH:
                flush()
        tick(1)

    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ingest")
    try:
        for item in items:
            if isinstance(item, R.Rejection):
                report.rejected.append(item)
                tick(1)
            elif isinstance(item, Skipped):
                report.skipped.append(item.name)
                tick(1)
            else:
                pending.append((item, pool.submit(_store_one, ctx, item,
                                                  limits.max_image_pixels, limits.thumbnail_size)))
                while len(pending) >= n_workers * 3:
                    drain_one()
        while pending:
            drain_one()
        flush()
    except StorageError:
        # The store failed (disk full, S3 down): keep what is stored, then stop loudly.
        while pending:
            _, fut = pending.popleft()
            fut.cancel()
        batch[:] = [d for d in batch if ctx.store.exists(d.probe.sha256)]
        flush()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for source, _ in pending:
            source.cleanup()
    report.metadata_unmatched = len(metadata) - len(matched)
    report.seconds = time.perf_counter() - started
    _record_usage(ctx, report, owner_id)
    return report


def _record_usage(ctx: Context, report: IngestReport, owner_id: int) -> None:
    with ctx.session() as s:
        s.add(UsageEvent(user_id=owner_id, kind="ingest", images=len(report.accepted),
                         bytes=report.bytes,
                         details={"collection_id": report.collection_id,
                                  "new_images": report.new_images,
                                  "duplicates": report.duplicates,
                                  "added_to_collection": report.linked,
                                  "rejected": len(report.rejected)}))


def ingest_files(ctx: Context, files: list[tuple[str, Path]], *, collection_id: int,
                 owner_id: int, metadata: dict[str, dict] | None = None,
                 progress: Progress | None = None, visibility: str = "private",
                 expand_archives: bool = True) -> IngestReport:
    """Ingest ``(original name, path)`` pairs (zip/tar files are expanded) into a collection.

    ``metadata`` maps original (or bare file) names to records with captured_at, lat, lon, depth,
    instrument, station and free keys. ``progress(n)`` is called with the number of items just
    finished. The caller checks that ``owner_id`` may write to the collection.
    """
    limit = ctx.settings.limits.max_file_bytes
    with tempfile.TemporaryDirectory(prefix="aqualens-ingest-") as tmp:
        items = (item for name, path in files
                 for item in iter_file(Path(path), name, limit, Path(tmp), expand_archives))
        return ingest_items(ctx, items, collection_id=collection_id, owner_id=owner_id,
                            metadata=metadata, progress=progress, visibility=visibility)


def resolve_collection(ctx: Context, name: str, owner_id: int, visibility: str = "private",
                       description: str = "") -> int:
    """The id of the owner's collection ``name``, created when missing (public if asked)."""
    for attempt in range(2):
        try:
            with ctx.session() as s:
                owner = s.get(User, owner_id)
                if owner is None:
                    raise NotFound(f"no user with id {owner_id}", field="owner_id")
                row = get_or_create_collection(s, name, owner, visibility=visibility,
                                               description=description)
                if visibility == "public" and row.visibility != "public":
                    row.visibility = "public"
                return row.id
        except DBIntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def ingest_paths(ctx: Context, paths: list[Path], *, collection: str, owner_id: int,
                 metadata_file: Path | None = None, mapping: dict[str, str] | None = None,
                 visibility: str = "private", progress: Progress | None = None,
                 on_total: Callable[[int], None] | None = None,
                 workers: int | None = None) -> IngestReport:
    """Ingest files, folders (recursive), zip and tar archives into the owner's collection.

    The sidecar ``metadata_file`` (CSV/TSV/JSON, columns mapped by ``mapping``) is read and
    checked first: a bad value stops the ingest before anything is stored. ``on_total(n)`` is
    called once with the number of items to expect (for a progress bar).
    """
    metadata = read_sidecar(metadata_file, mapping) if metadata_file else None
    collection_id = resolve_collection(ctx, collection, owner_id, visibility)
    paths = [Path(p) for p in paths]
    if on_total is not None:
        on_total(count_paths(paths))
    exclude = {metadata_file.resolve()} if metadata_file else set()
    limit = ctx.settings.limits.max_file_bytes
    with tempfile.TemporaryDirectory(prefix="aqualens-ingest-") as tmp:
        items = iter_paths(paths, limit, tmp_dir=Path(tmp), exclude=exclude)
        return ingest_items(ctx, items, collection_id=collection_id, owner_id=owner_id,
                            metadata=metadata, visibility=visibility, progress=progress,
                            workers=workers)
