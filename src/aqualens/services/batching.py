"""Dynamic batching of concurrent requests: one worker thread per key runs them together.

A model's cost per image falls steeply with the batch size (one ONNX Runtime call for 32
vignettes costs little more than for one), while an HTTP API receives images one request at a
time. :class:`MicroBatcher` queues what concurrent requests submit; its thread takes everything
waiting (up to ``max_items``) as one batch, so a lone request is never delayed by a timer and a
busy server runs full batches — the pattern of Triton's and TorchServe's dynamic batching.

The event loop only parses HTTP; decoding and inference happen in the batcher's thread, whose
results come back to the waiting coroutines through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], list[Any]]
_lock = threading.Lock()
_batchers: dict[Hashable, MicroBatcher] = {}


class MicroBatcher:
    """Runs ``handler(items) -> outcomes`` (one outcome per item: a value, or an exception to
    raise in that item's caller) on the items submitted meanwhile, in one daemon thread that
    retires after ``idle_seconds`` without work."""

    def __init__(self, key: Hashable, handler: Handler, *, max_items: int = 64,
                 idle_seconds: float = 30.0) -> None:
        self.key, self.handler = key, handler
        self.max_items, self.idle_seconds = max_items, idle_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"aqualens-batcher-{key}")
        self.batches = 0  # how many handler calls (tests and stats read it)
        self.items = 0

    def start(self) -> MicroBatcher:
        self._thread.start()
        return self

    def _take(self) -> list[tuple] | None:
        """The next batch: block for one item, then add what is already waiting."""
        try:
            first = self._queue.get(timeout=self.idle_seconds)
        except queue.Empty:
            with _lock:  # retire, unless a submit slipped in meanwhile
                if self._queue.empty():
                    if _batchers.get(self.key) is self:
                        del _batchers[self.key]
                    return None
            first = self._queue.get()
        batch = [first]
        while len(batch) < self.max_items:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [b for b in batch if not b[2].cancelled()]
            if not live:
                continue
            try:
                outcomes = self.handler([item for item, _, _ in live])
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                outcomes = [exc] * len(live)
            self.batches += 1
            self.items += len(live)
            for (_, loop, future), outcome in zip(live, outcomes):
                try:
                    loop.call_soon_threadsafe(_settle, future, outcome)
                except RuntimeError:  # the caller's loop has closed meanwhile
                    log.debug("batch outcome dropped: event loop closed")


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def submit(key: Hashable, handler: Handler, item: Any, *, max_items: int = 64) -> Any:
    """Queue ``item`` on the batcher for ``key`` (started with ``handler`` when none runs) and
    wait for its outcome, raised when it is an exception.

    The item is queued under the same lock a retiring batcher takes, so it can never land in the
    queue of a thread that has just decided to stop.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    with _lock:
        batcher = _batchers.get(key)
        if batcher is None:
            batcher = _batchers[key] = MicroBatcher(key, handler, max_items=max_items).start()
        batcher._queue.put((item, loop, future))
    return await future


def running() -> dict[Hashable, MicroBatcher]:
    """The batchers now running, by key (a copy)."""
    with _lock:
        return dict(_batchers)
