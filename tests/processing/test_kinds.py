"""How a batch job is cut into Dask tasks (``kinds.split_tasks``)."""

from __future__ import annotations

from aqualens.processing.kinds import BatchJobKind, split_tasks


class Chunked(BatchJobKind):
    batch_size = 128
    chunk_size = 512

    def process_batch(self, ctx, job_id, params, image_ids):  # pragma: no cover - not run
        return []


class OneBatchPerTask(Chunked):
    chunk_size = None


def sizes(kind, params, n, threads):
    tasks = split_tasks(kind, params, list(range(n)), threads)
    assert [i for t in tasks for i in t] == list(range(n))  # every image once, in order
    return [len(t) for t in tasks]


def test_big_jobs_get_whole_chunks_then_shrinking_tasks() -> None:
    s = sizes(Chunked(), {}, 12_000, threads=2)
    assert s[:18] == [512] * 18  # the bulk in full chunks
    assert s == sorted(s, reverse=True) and s[-2] == 128  # then smaller, down to one batch
    assert all(x % 128 == 0 for x in s[:-1])  # whole model batches
    s = sizes(Chunked(), {}, 200_000, threads=16)
    assert max(s) == 512 and s.count(512) > 300


def test_small_jobs_spread_over_every_thread() -> None:
    assert sizes(Chunked(), {}, 300, threads=2) == [128, 128, 44]
    assert sizes(Chunked(), {}, 0, threads=2) == []
    s = sizes(Chunked(), {"batch_size": 2}, 48, threads=2)
    assert len(s) >= 8 and max(s) == 6  # at least 4 tasks per worker thread


def test_params_win_and_kinds_without_chunks_send_one_batch() -> None:
    assert sizes(Chunked(), {"chunk_size": 1000}, 2500, threads=2) == [1000, 1000, 500]
    assert sizes(Chunked(), {"batch_size": 1024}, 3000, threads=1)[0] == 1024  # never < a batch
    assert sizes(OneBatchPerTask(), {}, 300, threads=2) == [128, 128, 44]
    assert sizes(OneBatchPerTask(), {"batch_size": 16}, 40, threads=2) == [16, 16, 8]
