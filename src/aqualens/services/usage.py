"""Buffered usage events for the per-request predict path.

Writing one ``UsageEvent`` row per request costs a catalogue transaction and a commit per image,
and on SQLite every commit takes the single write lock. The API's upload predictions therefore
append their event to an in-process buffer instead; a daemon thread writes the buffer in one
transaction at most :data:`FLUSH_INTERVAL_S` seconds after the first pending event, or as soon as
:data:`FLUSH_EVERY` events are pending. :func:`flush_usage` writes everything now: the API calls
it on shutdown (router lifespan), it runs at interpreter exit, before a model is deleted, and
code that reads usage right after a request (tests, reports) calls it first.

Jobs and catalogue predictions keep writing their events synchronously (they run in worker
processes that may exit at any moment, and they write annotations in a transaction anyway).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from aqualens.catalog.tables import utcnow

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
FLUSH_EVERY = 256
# A catalogue that stays unwritable must not grow the buffer without bound.
MAX_PENDING = 100_000

_cond = threading.Condition()
_pending: dict[str, list[dict[str, Any]]] = {}   # db_url -> rows (UsageEvent column values)
_flush_lock = threading.Lock()                    # one writer at a time (thread, exit, callers)
_thread: threading.Thread | None = None


def buffer_usage(db_url: str, *, user_id: int | None, kind: str, images: int, nbytes: int = 0,
                 model_id: int | None = None, job_id: str | None = None,
                 country: str | None = None, details: dict | None = None) -> None:
    """Queue one UsageEvent for ``db_url``; it is written within about a second."""
    row = {"user_id": user_id, "kind": kind, "images": images, "bytes": nbytes,
           "model_id": model_id, "job_id": job_id, "country": country,
           "details": details or {}, "created_at": utcnow()}
    with _cond:
        rows = _pending.setdefault(db_url, [])
        rows.append(row)
        if len(rows) > MAX_PENDING:
            del rows[: len(rows) - MAX_PENDING]
            log.warning("usage buffer full: oldest events dropped (catalogue not writable?)")
        _ensure_thread()
        if len(rows) == 1 or len(rows) >= FLUSH_EVERY:
            _cond.notify()


def pending_usage() -> int:
    """How many events wait to be written (all catalogues)."""
    with _cond:
        return sum(len(rows) for rows in _pending.values())


def flush_usage(db_url: str | None = None) -> int:
    """Write the pending events now (of one catalogue, or all); returns how many were written.

    Rows that cannot be written because their model or user was deleted meanwhile are written
    with that reference cleared (what ``ON DELETE SET NULL`` would have done); a catalogue that
    cannot be reached keeps its rows for the next flush.
    """
    written = 0
    with _flush_lock:
        with _cond:
            urls = [db_url] if db_url is not None else list(_pending)
            batches = {u: _pending.pop(u) for u in urls if _pending.get(u)}
        for url, rows in batches.items():
            try:
                written += _write(url, rows)
            except Exception:  # noqa: BLE001 - keep the events; the next flush retries
                log.exception("could not write %d usage events to %s", len(rows), url)
                with _cond:
                    _pending[url] = rows + _pending.get(url, [])
    return written


def _write(url: str, rows: list[dict[str, Any]]) -> int:
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from aqualens.catalog.db import session_scope
    from aqualens.catalog.tables import UsageEvent

    try:
        with session_scope(url) as s:
            s.execute(insert(UsageEvent), rows)
        return len(rows)
    except IntegrityError:
        pass
    for row in rows:  # a deleted model/user: write the others, clear the dangling reference
        try:
            with session_scope(url) as s:
                s.execute(insert(UsageEvent), [row])
        except IntegrityError:
            with session_scope(url) as s:
                s.execute(insert(UsageEvent), [{**row, "model_id": None, "user_id": None}])
    return len(rows)


def _ensure_thread() -> None:
    """Start the flusher (caller holds ``_cond``)."""
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_run, name="aqualens-usage-flush", daemon=True)
        _thread.start()


def _run() -> None:
    while True:
        with _cond:
            while not any(_pending.values()):
                _cond.wait()
            # Let a burst accumulate (up to FLUSH_INTERVAL_S or FLUSH_EVERY rows) first.
            if max(len(r) for r in _pending.values()) < FLUSH_EVERY:
                _cond.wait(FLUSH_INTERVAL_S)
        flush_usage()


def _after_fork() -> None:
    # A forked child (Dask worker) must neither write its parent's events nor inherit the
    # parent's flusher thread (it does not exist in the child) or a held lock.
    global _cond, _flush_lock, _thread
    _cond = threading.Condition()
    _flush_lock = threading.Lock()
    _pending.clear()
    _thread = None


os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush_usage)
