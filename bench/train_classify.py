"""Benchmark (issue 6): train the default classifier on ../shared/data/uvp6 and test it.

Stratified 80/10/10 split with a fixed seed, default TrainConfig, CPU unless --device says
otherwise. Prints test accuracy, balanced accuracy and wall time next to the targets
(accuracy >= 0.75 within 10 minutes on 2 cores).

    .venv/bin/python bench/train_classify.py [--data ../shared/data/uvp6] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a busy CPU

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aqualens.training.data import build_train_data, class_folders, guess_channels, path_reader  # noqa: E402
from aqualens.training.evaluate import classification_metrics  # noqa: E402
from aqualens.training.inference import predict_classify  # noqa: E402
from aqualens.training.config import TrainConfig  # noqa: E402
from aqualens.training.loop import pick_device, train  # noqa: E402
from aqualens.training.splits import make_splits  # noqa: E402

TARGET_ACC, TARGET_MIN = 0.75, 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "uvp6")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--balance", default=None, choices=["auto", "loss", "sampler", "none"],
                    help="override the default class balancing")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    items, names = class_folders(args.data)
    splits = make_splits([it.name for it in items], [[names[it.label]] for it in items],
                         seed=args.seed)
    by = {it.name: it for it in items}
    extra = {"balance": args.balance} if args.balance else {}
    cfg = TrainConfig(task="classify", seed=args.seed, device=args.device, threads=args.threads,
                      **extra, epochs=args.epochs,
                      input_size=(args.input_size,) * 2 if args.input_size else None).resolved()
    ch = guess_channels(items, path_reader)
    h, w = cfg.input_size
    data = {k: build_train_data([by[n] for n in v], path_reader, "classify", h, w, ch, cfg.resize)
            for k, v in splits.items()}
    last = [0.0]

    def show(p: dict) -> None:
        print(f"epoch {p['epoch']:3d}/{p['epochs']} loss {p['loss']:.3f} val {p['metric']} "
              f"{p['val_metric']:.3f} ({p['seconds']:.1f}s, eta {p['eta_s'] / 60:.1f} min)",
              flush=True)
        last[0] = p["val_metric"]

    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, data["train"], data["val"], names, Path(tmp), progress=show)
    probs = predict_classify(res.net, data["test"].images, res.mean, res.std,
                             pick_device(args.device))
    m = classification_metrics(data["test"].labels, probs, names)
    wall = time.monotonic() - t0
    print(f"\nuvp6 classify: {len(items)} images, split {[len(v) for v in splits.values()]}, "
          f"{sum(p.numel() for p in res.net.parameters())} params, device {args.device}, "
          f"{res.epochs_run} epochs (best {res.best_epoch}, stop: {res.stopped})")
    print(f"test accuracy          {m['accuracy']:.3f}   target >= {TARGET_ACC}  "
          f"ratio {m['accuracy'] / TARGET_ACC:.2f}  {'MET' if m['accuracy'] >= TARGET_ACC else 'MISSED'}")
    print(f"test balanced accuracy {m['balanced_accuracy']:.3f}")
    print(f"test top-5 accuracy    {m.get('top5_accuracy', 0):.3f}   macro F1 {m['macro_f1']:.3f}")
    print(f"wall time              {wall / 60:.2f} min   target <= {TARGET_MIN} min  "
          f"ratio {wall / 60 / TARGET_MIN:.2f}  {'MET' if wall / 60 <= TARGET_MIN else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"accuracy": m["accuracy"],
                                         "balanced_accuracy": m["balanced_accuracy"],
                                         "wall_s": wall, "epochs": res.epochs_run,
                                         "device": args.device}, indent=2))


if __name__ == "__main__":
    main()
