"""services.batching: concurrent submissions run as batches; outcomes go to their own caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aqualens.core.errors import ValidationError
from aqualens.services import batching


def test_concurrent_items_share_batches_and_keep_their_outcomes() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def handler(items: list[int]) -> list:
        gate.wait(5)  # the first batch waits until every item is queued
        sizes.append(len(items))
        return [ValidationError(f"odd {i}", field="x") if i % 2 else i * 10 for i in items]

    async def main() -> list:
        tasks = [asyncio.ensure_future(batching.submit("t-share", handler, i)) for i in range(9)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    assert [o for o in out if not isinstance(o, Exception)] == [0, 20, 40, 60, 80]
    assert [o.field for o in out if isinstance(o, Exception)] == ["x"] * 4
    assert [str(o) for o in out if isinstance(o, Exception)] == [
        "x: odd 1", "x: odd 3", "x: odd 5", "x: odd 7"]
    assert sum(sizes) == 9 and max(sizes) > 1  # not one call per item


def test_max_items_caps_a_batch() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def handler(items: list[int]) -> list[int]:
        gate.wait(5)
        sizes.append(len(items))
        return items

    async def main() -> list:
        tasks = [asyncio.ensure_future(batching.submit("t-cap", handler, i, max_items=3))
                 for i in range(7)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == list(range(7))
    assert max(sizes) <= 3 and sum(sizes) == 7


def test_a_failing_handler_fails_only_its_batch() -> None:
    calls = {"n": 0}

    def handler(items: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model crashed")
        return items

    async def main() -> None:
        with pytest.raises(RuntimeError, match="model crashed"):
            await batching.submit("t-fail", handler, 1)
        assert await batching.submit("t-fail", handler, 2) == 2  # the thread lives on

    asyncio.run(main())


def test_an_idle_batcher_retires_and_a_new_one_starts(monkeypatch) -> None:  # noqa: ANN001
    async def one(i: int) -> int:
        return await batching.submit("t-idle", lambda items: items, i)

    b = batching.MicroBatcher("t-idle", lambda items: items, idle_seconds=0.05)
    with batching._lock:
        batching._batchers["t-idle"] = b.start()
    assert asyncio.run(one(1)) == 1
    b._thread.join(2)
    assert not b._thread.is_alive() and "t-idle" not in batching.running()
    assert asyncio.run(one(2)) == 2  # a fresh batcher took over
