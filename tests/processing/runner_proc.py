"""A runner process for the crash tests: registers a slowed-down predict kind, then runs the
runner loop until killed. ``python -m tests.processing.runner_proc DATA_DIR``."""

from __future__ import annotations

import sys
import time

from aqualens.core.plugins import get_registry
from aqualens.processing.predict import PredictKind


class SlowPredictKind(PredictKind):
    """Predict, 50 ms slower per batch, so a test can kill the runner in the middle."""

    batch_size = 2

    def process_batch(self, ctx, job_id, params, image_ids):
        time.sleep(0.05)
        return super().process_batch(ctx, job_id, params, image_ids)


def register() -> None:
    get_registry().register("aqualens.jobs", "slow-predict", SlowPredictKind)


def main() -> None:
    from aqualens.catalog.context import Context
    from aqualens.core.config import load_settings
    from aqualens.processing.runner import Runner

    register()
    ctx = Context(load_settings(data_dir=sys.argv[1]))
    Runner(ctx, poll_s=0.05, heartbeat_s=0.2).start()
    print("runner ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
