"""Connecting to Dask: an in-process ``LocalCluster`` (embedded tier) or a scheduler address.

- No ``AQUALENS_DASK__ADDRESS``: a ``LocalCluster`` in this process with
  ``settings.dask.n_workers`` workers of ``threads_per_worker`` threads (``processes=True`` for
  worker processes; threads share this process's warm models and catalogue connection pool).
- ``AQUALENS_DASK__ADDRESS=tcp://scheduler:8786``: a client of that scheduler; workers are started
  with ``aqualens worker tcp://scheduler:8786`` (or ``dask worker``) wherever the data and
  catalogue are reachable: Kubernetes pods, SLURM jobs via dask-jobqueue (see
  docs/processing.md and deploy/).

Worker processes started here (``processes=True``, ``aqualens worker``) get
``AQUALENS_MODELS__INTRA_OP_THREADS`` = their thread count unless it is set: each model runtime
then uses that many threads, so N processes x threads ~ cores (ONNX Runtime and torch would
otherwise each use every core, and two worker processes on two cores would fight for them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from aqualens.core.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from aqualens.core.config import Settings

log = logging.getLogger(__name__)
THREADS_ENV = "AQUALENS_MODELS__INTRA_OP_THREADS"

#: Dask housekeeping for the clusters AquaLens starts itself (``settings.dask.lean``): no
#: statistical profiler (it samples every thread's stack 100 times a second in every scheduler,
#: nanny and worker, for a dashboard AquaLens does not start), and the event-loop tick and the
#: system and memory monitors every 0.5-2 s instead of every 20-500 ms. An idle LocalCluster of
#: 2 worker processes then costs 1.6 % of a core instead of 10 % (measured on the benchmark
#: machine): CPU that a batch job on a small machine gives to its models instead. Distributed's
#: own test suite runs with the same profiler and tick settings.
LEAN_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


# dask.config.set changes the process-wide configuration and restores it on exit: two threads
# starting clusters at once would interleave and could leave the lean values set for good.
_config_lock = threading.Lock()


@contextmanager
def dask_config(settings: Settings | None) -> Iterator[dict]:
    """Start AquaLens' own scheduler and workers in this block: the lean configuration is set
    (unless ``settings.dask.lean`` is off) and the block runs alone among such blocks. Yields
    the values set, for worker processes (a nanny passes them to its worker)."""
    import dask

    values = lean_values(settings)
    with _config_lock, dask.config.set(values):
        yield values


def lean_values(settings: Settings | None) -> dict:
    """The Dask configuration values AquaLens sets for its own clusters (see LEAN_DASK)."""
    return dict(LEAN_DASK) if settings is None or settings.dask.lean else {}


def worker_env(settings: Settings | None, nthreads: int) -> dict[str, str]:
    """Environment for a worker process of ``nthreads`` threads: the model intra-op thread
    count as set (environment, config file or override; an explicit 0 keeps the runtime's
    default), else ``nthreads``."""
    import os

    if settings is not None and "intra_op_threads" in settings.models.model_fields_set:
        return {THREADS_ENV: str(settings.models.intra_op_threads)}
    if os.environ.get(THREADS_ENV, "").strip():
        return {THREADS_ENV: os.environ[THREADS_ENV].strip()}
    return {THREADS_ENV: str(max(1, int(nthreads)))}


def open_client(settings: Settings, *, timeout_s: float = 30) -> Client:
    """A Dask client for ``settings.dask`` (a new LocalCluster when no address is set)."""
    from distributed import Client, LocalCluster

    dask = settings.dask
    if dask.address:
        try:
            return Client(dask.address, timeout=timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {dask.address}: {exc}",
                              field="AQUALENS_DASK__ADDRESS",
                              valid="tcp://host:8786 of a running 'dask scheduler'") from None
    # Threads (processes=False) share this process and its settings: nothing to set there.
    # Read when the scheduler, nannies and workers are built (worker processes get it from
    # their nanny), so it holds for the cluster's life without staying set in this process.
    with dask_config(settings) as config:
        extra = ({"env": worker_env(settings, dask.threads_per_worker), "config": config}
                 if dask.processes else {})
        cluster = LocalCluster(n_workers=dask.n_workers,
                               threads_per_worker=dask.threads_per_worker,
                               processes=dask.processes, dashboard_address=None,
                               silence_logs=logging.WARNING, **extra)
        return Client(cluster, set_as_default=False)


def close_client(client: Client) -> None:
    """Close a client and, when it owns one, its LocalCluster."""
    cluster = getattr(client, "cluster", None)
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()


def total_threads(client: Client) -> int:
    """Worker threads the scheduler knows now (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler without workers yet
        return 1


def run_worker(address: str, *, nthreads: int = 1, name: str | None = None,
               memory_limit: str = "auto", nanny: bool = True,
               settings: Settings | None = None) -> None:
    """Run a Dask worker that joins the scheduler at ``address`` until interrupted.

    With ``nanny`` a supervisor restarts the worker process if it dies. The worker's model
    runtimes use ``nthreads`` intra-op threads unless ``settings.models.intra_op_threads`` (or
    its environment variable) says otherwise.
    """
    import asyncio
    import os

    from distributed import Nanny, Worker

    env = worker_env(settings, nthreads)
    kwargs: dict = {"env": env} if nanny else {}
    if not nanny:  # the worker runs in this process: its settings come from this environment
        from aqualens.core.config import reset_settings

        os.environ.update(env)
        reset_settings()

    async def main() -> None:
        cls = Nanny if nanny else Worker
        async with cls(address, nthreads=nthreads, name=name,
                       memory_limit=memory_limit, **kwargs) as worker:
            await worker.finished()

    import dask

    # This process is the worker's (or its nanny's): the values may stay set for its life.
    values = lean_values(settings)
    dask.config.set(values)
    if nanny:
        kwargs["config"] = values
    asyncio.run(main())
