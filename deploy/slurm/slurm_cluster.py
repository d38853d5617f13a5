"""Run AquaLens job batches on a SLURM cluster through dask-jobqueue.

    pip install "aqualens[hpc]"          # dask-jobqueue (optional extra)
    python deploy/slurm/slurm_cluster.py --jobs 8 --queue cpu --walltime 04:00:00

This starts a Dask scheduler on the login node, submits SLURM jobs that each run one Dask worker
(with the AquaLens package importable: same virtualenv on a shared filesystem), prints the
scheduler address and then runs the AquaLens runner against it, so queued AquaLens jobs (batch
predict, reanalysis, service jobs) are spread over the SLURM workers. Stop with Ctrl-C: the
runner hands unfinished jobs back to the queue and SLURM jobs are cancelled.

The catalogue must be reachable from the compute nodes (PostgreSQL: AQUALENS_DATABASE_URL) and
so must the blobs (S3, or a shared filesystem path as AQUALENS_STORAGE_URL=file:///scratch/...).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one worker each)")
    parser.add_argument("--cores", type=int, default=4, help="cores per SLURM job")
    parser.add_argument("--memory", default="16GB", help="memory per SLURM job")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--gpu", action="store_true", help="ask for one GPU per job")
    args = parser.parse_args()

    from dask_jobqueue import (
        SLURMCluster,  # optional dependency: pip install dask-jobqueue
    )

    extra = ["--gres=gpu:1"] if args.gpu else []
    cluster = SLURMCluster(
        cores=args.cores, processes=1, memory=args.memory, queue=args.queue,
        account=args.account, walltime=args.walltime, job_extra_directives=extra,
        # Workers inherit the AquaLens settings (database, store) from this environment.
        job_script_prologue=[f"export {k}={v!r}" for k, v in os.environ.items()
                             if k.startswith("AQUALENS_")],
        worker_extra_args=["--nthreads", str(args.cores)])
    cluster.scale(jobs=args.jobs)
    print("Dask scheduler:", cluster.scheduler_address)
    print(cluster.job_script())

    from distributed import Client

    from aqualens.catalog.context import Context
    from aqualens.core.config import load_settings
    from aqualens.processing.runner import Runner

    client = Client(cluster)
    ctx = Context(load_settings(dask={"address": cluster.scheduler_address}))
    runner = Runner(ctx, client=client, max_jobs=4).start()
    try:
        while True:
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
