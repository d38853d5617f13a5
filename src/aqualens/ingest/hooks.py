"""Listeners told about images newly added to a collection (the processing engine's triggers).

``add_listener(fn)`` registers ``fn(ctx, collection_id, image_ids)``. The ingest pipeline calls
:func:`fire` after each committed batch, with the ids of images that batch added to the
collection (new content, or existing content newly linked). A failing listener is logged and never
breaks an ingest. Listeners are per process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[Any, int, list[int]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(fn: Listener) -> Listener:
    """Register ``fn(ctx, collection_id, image_ids)``; returns ``fn`` (usable as a decorator)."""
    with _lock:
        if fn not in _listeners:
            _listeners.append(fn)
    return fn


def remove_listener(fn: Listener) -> None:
    """Unregister ``fn``; unknown listeners are ignored."""
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def fire(ctx: Any, collection_id: int, image_ids: list[int]) -> None:
    """Call every listener; called by the pipeline after the rows are committed."""
    if not image_ids:
        return
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        try:
            fn(ctx, collection_id, list(image_ids))
        except Exception:
            log.exception("ingest listener %r failed for collection %s", fn, collection_id)
