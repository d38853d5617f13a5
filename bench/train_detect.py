"""Benchmark (issue 6): train the default fish detector on ../shared/data/deepfish, twice.

1. random 80/20 image split (fixed seed): target AP50 >= 0.5 within 20 minutes on 2 cores;
2. whole videos held out (the name before ``_f0000..`` names the video; frames of one video are
   near-duplicates, so a random split leaks): target AP50 >= 0.35.

Validation (early stopping, best epoch) uses 10% of the training part, split the same way as the
test part (by image, or by video). AP figures are on the held-out 20% through pycocotools.

    .venv/bin/python bench/train_detect.py [--split random|video|both] [--device cuda]
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

from aqualens.training.data import build_train_data, path_reader, yolo_folder  # noqa: E402
from aqualens.training.evaluate import detection_metrics  # noqa: E402
from aqualens.training.inference import predict_detect  # noqa: E402
from aqualens.training.config import TrainConfig  # noqa: E402
from aqualens.training.loop import pick_device, train  # noqa: E402
from aqualens.training.reference import detect_splits  # noqa: E402

TARGETS = {"random": 0.5, "video": 0.35}
TARGET_MIN = 20.0


def _setting(kv: str) -> tuple[str, object]:
    """``KEY=VALUE`` (VALUE as JSON when it parses, else a string) for a TrainConfig field."""
    key, _, raw = kv.partition("=")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def run(kind: str, args: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    items, names = yolo_folder(args.data)
    # The same splits as the reference detector of `make models` (video split).
    splits = detect_splits(items, names, by_video=kind == "video", seed=args.seed)
    by = {it.name: it for it in items}
    cfg = TrainConfig(task="detect", seed=args.seed, device=args.device, threads=args.threads,
                      epochs=args.epochs, max_minutes=args.max_minutes,
                      input_size=(args.input_size,) * 2 if args.input_size else None,
                      **({"patience": args.patience} if args.patience else {}),
                      **dict(_setting(kv) for kv in args.set)).resolved()
    h, w = cfg.input_size
    data = {k: build_train_data([by[n] for n in v], path_reader, "detect", h, w, 3, cfg.resize)
            for k, v in splits.items()}

    def show(p: dict) -> None:
        print(f"[{kind}] epoch {p['epoch']:3d}/{p['epochs']} loss {p['loss']:.3f} val AP50 "
              f"{p['val_metric']:.3f} ({p['seconds']:.0f}s, eta {p['eta_s'] / 60:.1f} min)",
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, data["train"], data["val"], names, Path(tmp), progress=show)
        if args.save:
            import shutil
            args.save.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(tmp) / "best.pt", args.save / f"{kind}-best.pt")
            shutil.copy(Path(tmp) / "last.pt", args.save / f"{kind}-last.pt")
    test = data["test"]
    dets = predict_detect(res.net, test.images, res.mean, res.std, pick_device(args.device))
    m = detection_metrics(list(zip(test.boxes, test.box_labels)), dets, [(w, h)] * len(test),
                          names)
    wall = time.monotonic() - t0
    target = TARGETS[kind]
    print(f"\ndeepfish detect, {kind} split: train {len(data['train'])} / val "
          f"{len(data['val'])} / test {len(test)} images, {res.epochs_run} epochs "
          f"(best {res.best_epoch}, val AP50 {res.best_metric:.3f}, stop: {res.stopped}), "
          f"device {args.device}, load average {os.getloadavg()[0]:.1f}")
    print(f"test AP50  {m['AP50']:.3f}   target >= {target}  ratio {m['AP50'] / target:.2f}  "
          f"{'MET' if m['AP50'] >= target else 'MISSED'}")
    print(f"test AP    {m['AP']:.3f}   AP75 {m['AP75']:.3f}")
    print(f"wall time  {wall / 60:.2f} min   target <= {TARGET_MIN} min  ratio "
          f"{wall / 60 / TARGET_MIN:.2f}  {'MET' if wall / 60 <= TARGET_MIN else 'MISSED'}\n")
    return {"split": kind, "AP50": m["AP50"], "AP": m["AP"], "AP75": m["AP75"], "wall_s": wall,
            "epochs": res.epochs_run, "best_epoch": res.best_epoch, "val_AP50": res.best_metric,
            "device": args.device, "config": cfg.to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "deepfish")
    ap.add_argument("--split", choices=["random", "video", "both"], default="both")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--patience", type=int, default=None,
                    help="early-stopping patience in epochs (default: the training default)")
    ap.add_argument("--max-minutes", type=float, default=18.0,
                    help="training time budget per run (the target is 20 min end to end)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig field (experiments), e.g. mosaic=0.5 or "
                         'detect_aug=\'{"haze": 0.3}\'')
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None,
                    help="copy the best and last checkpoints into this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ["random", "video"] if args.split == "both" else [args.split]
    out = [run(k, args) for k in kinds]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
