"""Build the reference models shipped in ``models/`` (``make models``), reproducibly from a seed.

- ``plankton-uvp6-classifier``: the default classifier on ../shared/data/uvp6 (10 classes,
  GPL-3.0 data), stratified 80/10/10 split, seed 0;
- ``fish-deepfish-detector``: the default detector on ../shared/data/deepfish (one class "Fish",
  CC BY 4.0 data), whole videos held out: 20 % test, 10 % of the rest validation (the split of
  ``bench/train_detect.py --split video``), seed 0, a fixed number of epochs.

Each becomes an ``.aqlmodel`` package (ONNX + native checkpoint + card with data, metrics and
licence) that ``aqualens models import`` (and ``aqualens demo``) registers with no download.

    python -m aqualens.training.reference [--data ../shared/data] [--out models] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VIDEO = r"^(.*?)_f\d+_"
REFERENCES = {
    "plankton-uvp6-classifier": {"folder": "uvp6", "task": "classify", "licence": "GPL-3.0",
                                 "data_licence": "GPL-3.0 (github.com/ecotaxa/uvpec img_sample)"},
    "fish-deepfish-detector": {"folder": "deepfish", "task": "detect", "licence": "CC-BY-4.0",
                               "epochs": 100,
                               "data_licence": "CC BY 4.0 (DeepFish, Saleh et al. 2020, "
                                               "Roboflow export deepfish-fmyzf v2)"},
}


def detect_splits(items: list, names: list[str], *, by_video: bool, seed: int = 0
                  ) -> dict[str, list[str]]:
    """DeepFish splits shared with ``bench/train_detect.py``: 20 % test, then 10 % of the rest
    for validation; ``by_video`` keeps every frame of a video (the name before ``_f0000..``) in
    one split, since frames of one video are near-duplicates."""
    from aqualens.training.data import group_of
    from aqualens.training.splits import make_splits

    keys = [it.name for it in items]
    labels = {it.name: [names[c] for c in it.labels] or ["(empty)"] for it in items}

    def groups(ks: list[str]) -> list[str] | None:
        return [group_of(Path(k).name, VIDEO) for k in ks] if by_video else None

    outer = make_splits(keys, [labels[k] for k in keys], groups=groups(keys), seed=seed,
                        fractions={"train": 0.8, "test": 0.2})
    rest = outer["train"]
    inner = make_splits(rest, [labels[k] for k in rest], groups=groups(rest), seed=seed,
                        fractions={"train": 0.9, "val": 0.1})
    return {"train": inner["train"], "val": inner["val"], "test": outer["test"]}


def build(name: str, data_root: Path, out_dir: Path, seed: int = 0, threads: int | None = None,
          epochs: int | None = None, max_minutes: float | None = None) -> dict[str, Any]:
    """Train, export, evaluate (test split, through the ONNX runtime) and package one model."""
    import numpy as np
    import torch

    from aqualens.models.base import InputSpec, LabelInfo, ModelInfo
    from aqualens.models.package import build_package
    from aqualens.models.warm import runtime_from_files
    from aqualens.training.data import (build_train_data, class_folders, guess_channels,
                                        path_reader, yolo_folder)
    from aqualens.training.evaluate import classification_metrics, detection_metrics
    from aqualens.training.export import export_onnx, parity_check
    from aqualens.training.config import TrainConfig
    from aqualens.training.loop import train
    from aqualens.training.splits import make_splits

    spec_ref = REFERENCES[name]
    task = spec_ref["task"]
    epochs = epochs or spec_ref.get("epochs")     # fixed, not time-capped: reproducible
    if threads:
        torch.set_num_threads(threads)
    folder = data_root / spec_ref["folder"]
    t0 = time.monotonic()
    if task == "classify":
        items, names = class_folders(folder)
        splits = make_splits([it.name for it in items], [[names[it.label]] for it in items],
                             seed=seed)
    else:
        items, names = yolo_folder(folder)
        splits = detect_splits(items, names, by_video=True, seed=seed)
    by = {it.name: it for it in items}
    cfg = TrainConfig(task=task, seed=seed, epochs=epochs, max_minutes=max_minutes,
                      threads=threads).resolved()
    channels = guess_channels(items, path_reader) if task == "classify" else 3
    h, w = cfg.input_size
    data = {k: build_train_data([by[n] for n in v], path_reader, task, h, w, channels, cfg.resize)
            for k, v in splits.items()}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        res = train(cfg, data["train"], data["val"], names, wd,
                    progress=lambda p: print(f"[{name}] epoch {p['epoch']}/{p['epochs']} loss "
                                             f"{p['loss']:.3f} val {p['metric']} "
                                             f"{p['val_metric']:.3f}", flush=True))
        onnx_path = export_onnx(res.net, wd / "model.onnx", channels, h, w)
        parity = parity_check(res.net, onnx_path, np.random.default_rng(0).standard_normal(
            (2, channels, h, w)).astype(np.float32))
        spec = InputSpec(height=h, width=w, channels=channels, mean=tuple(res.mean),
                         std=tuple(res.std), resize=cfg.resize)
        info = ModelInfo(name=name, version="1.0.0", task=task,
                         labels=[LabelInfo(n) for n in names], input_spec=spec,
                         licence=spec_ref["licence"],
                         description=f"AquaLens reference {task} model trained on "
                                     f"{spec_ref['folder']} sample data",
                         keywords=["aqualens-reference", task, spec_ref["folder"]],
                         options={"nms_iou": 0.5} if task == "detect" else {})
        # Test metrics through the deployed path: the ONNX runtime on the original images.
        runtime = runtime_from_files(onnx_path, info, device="cpu")
        test = [by[n] for n in splits["test"]]
        from PIL import Image

        imgs = [np.asarray(Image.open(it.path).convert("RGB")) for it in test]
        if task == "classify":
            scores = np.zeros((len(test), len(names)), np.float32)
            for i in range(0, len(test), 64):
                for j, r in enumerate(runtime.predict(imgs[i:i + 64], top_k=len(names))):
                    for t in r.top:
                        scores[i + j, t.index] = t.score
            m = classification_metrics([it.label for it in test], scores, names)
            overall = {k: m[k] for k in m if k.endswith("accuracy") or k.startswith("macro_")}
        else:
            dt = []
            for i in range(0, len(test), 16):
                for r in runtime.predict(imgs[i:i + 16], threshold=0.0):
                    bx = [b for b in r.boxes if b.score > 1e-3]
                    dt.append((np.asarray([[b.x, b.y, b.x + b.w, b.y + b.h] for b in bx],
                                          np.float32).reshape(-1, 4),
                               np.asarray([b.score for b in bx]),
                               np.asarray([b.index for b in bx], np.int64)))
            m = detection_metrics([(it.boxes, it.labels) for it in test], dt,
                                  [(im.shape[1], im.shape[0]) for im in imgs], names)
            overall = {k: m[k] for k in ("AP", "AP50", "AP75")}
        runtime.close()
        info.metrics = {"overall": overall, "per_class": m["per_class"], "split": "test",
                        "dataset": f"{spec_ref['folder']} (shared sample data), seed {seed}",
                        "split_sizes": {k: len(v) for k, v in splits.items()}}
        info.card = _card(name, spec_ref, info, splits, res, overall, seed)
        ckpt = wd / "checkpoint.pt"
        torch.save({"net_config": res.net_config.to_dict(), "model": res.net.state_dict(),
                    "names": names, "mean": res.mean, "std": res.std,
                    "input_spec": spec.to_dict(), "train_config": res.config.to_dict(),
                    "dataset": spec_ref["folder"]}, ckpt)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = build_package(out_dir / f"{name}.aqlmodel", onnx_path, info,
                            extra_files={"checkpoint.pt": ckpt},
                            lineage={"params": {"config": res.config.to_dict(), "seed": seed,
                                                "data": spec_ref["folder"],
                                                "history": res.history, "parity": parity}})
    return {"model": name, "package": str(out), "size_bytes": out.stat().st_size,
            "metrics": overall, "seconds": round(time.monotonic() - t0, 1),
            "epochs_run": res.epochs_run}


def _torch_version() -> str:
    import torch

    return torch.__version__


def _card(name: str, ref: dict, info: Any, splits: dict, res: Any, overall: dict,
          seed: int) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in overall.items())
    return f"""# {name} 1.0.0

AquaLens reference {ref['task']} model: a compact plain-PyTorch CNN
({'CenterNet-style anchor-free detector at stride 4' if ref['task'] == 'detect' else
  'depthwise-separable ResNet-style classifier'}), exported to ONNX. Built by `make models`
(`python -m aqualens.training.reference`), reproducible from seed {seed}.

## Data

`{ref['folder']}` sample of the shared data ({', '.join(f'{k} {len(v)}' for k, v in splits.items())}
images{'; whole videos held out' if ref['task'] == 'detect' else ', stratified by class'}).
Labels: {', '.join(info.label_names)}.
Data licence: {ref['data_licence']}.

## Metrics (test split, through the ONNX artefact)

| metric | value |
|---|---|
{rows}

Trained {res.epochs_run} epochs (best validation {res.best_metric:.4f} at epoch {res.best_epoch},
stopped: {res.stopped}) in {res.seconds / 60:.1f} min on {res.config.device} with
{res.config.threads or 'default'} threads (torch {_torch_version()}); input
{res.config.input_size[0]}x{res.config.input_size[1]} ({res.config.resize}). Rebuild with
`make models` (needs the shared sample data next to the repository). A small sample: use it as a
demo and a starting point for fine-tuning (`aqualens train --base-model {name}@1.0.0`), not as a
production model.

## Licence

Model weights: {ref['licence']} (follows the training data's licence).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description="Build the AquaLens reference models.")
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[3].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--only", choices=sorted(REFERENCES), default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    args = ap.parse_args()
    for name in ([args.only] if args.only else sorted(REFERENCES, reverse=True)):
        r = build(name, args.data, args.out, args.seed, args.threads, args.epochs,
                  args.max_minutes)
        print(f"{r['model']}: {r['package']} ({r['size_bytes'] / 1e6:.2f} MB), "
              f"{r['metrics']}, {r['epochs_run']} epochs, {r['seconds']} s")


if __name__ == "__main__":
    main()
