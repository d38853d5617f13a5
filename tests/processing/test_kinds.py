"""How a batch job is cut into Dask tasks (``kinds.task_size``)."""

from __future__ import annotations

from aqualens.processing.kinds import BatchJobKind, task_size


class Chunked(BatchJobKind):
    batch_size = 128
    chunk_size = 512

    def process_batch(self, ctx, job_id, params, image_ids):  # pragma: no cover - not run
        return []


class OneBatchPerTask(Chunked):
    chunk_size = None


def test_big_jobs_get_whole_chunks() -> None:
    assert task_size(Chunked(), {}, 200_000, threads=8) == 512
    assert task_size(Chunked(), {}, 12_000, threads=2) == 512


def test_small_jobs_spread_over_every_thread_in_whole_batches() -> None:
    # 4 tasks per worker thread at least, rounded up to whole model batches, never < a batch
    assert task_size(Chunked(), {}, 2_000, threads=2) == 256
    assert task_size(Chunked(), {}, 300, threads=2) == 128
    assert task_size(Chunked(), {}, 0, threads=2) == 128
    assert task_size(Chunked(), {"batch_size": 4}, 48, threads=2) == 8


def test_params_win_and_kinds_without_chunks_send_one_batch() -> None:
    assert task_size(Chunked(), {"chunk_size": 1000}, 10, threads=2) == 1000
    assert task_size(Chunked(), {"batch_size": 1024}, 100_000, threads=2) == 1024
    assert task_size(OneBatchPerTask(), {}, 100_000, threads=2) == 128
    assert task_size(OneBatchPerTask(), {"batch_size": 16}, 100_000, threads=2) == 16
