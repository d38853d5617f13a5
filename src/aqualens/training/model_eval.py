"""Scoring a model on a dataset version: :func:`evaluate_runtime` (metrics and plots of a loaded
runtime on one split), :func:`evaluate_model` (a registered model, its result kept on the model)
and :func:`model_card` (the markdown card a trained model is registered with).

The metrics themselves are pure functions in :mod:`aqualens.training.evaluate`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from aqualens.catalog.context import Context
from aqualens.catalog.datasets import get_version
from aqualens.catalog.tables import DatasetVersion, Model, User
from aqualens.core.errors import ValidationError
from aqualens.training.datasets import training_items
from aqualens.training.config import TASKS


def _decode_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def evaluate_runtime(ctx: Context, runtime: Any, info: Any, dv: DatasetVersion, split: str,
                     outdir: Path, batch: int = 32) -> tuple[dict[str, Any], dict[str, Path]]:
    """Metrics of a loaded model runtime on one split of ``dv`` (+ PNG plots written to
    ``outdir``). Images whose label the model does not know are counted, not scored."""
    from aqualens.training.evaluate import (classification_metrics, confusion_png,
                                            detection_metrics, pr_png)

    task = info.task
    if task not in TASKS:
        raise ValidationError(f"cannot evaluate a {task} model", field="model",
                              valid="classify or detect models")
    items, dnames, skipped = training_items(dv, task, split)
    names = info.label_names
    index = {n: i for i, n in enumerate(names)}
    unknown = 0
    store = ctx.store
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    if task == "classify":
        keep = [it for it in items if dnames[it.label] in index]
        unknown = len(items) - len(keep)
        if not keep:
            raise ValidationError(f"no images of {dv.ref}:{split} carry a label of the model",
                                  field="dataset")
        y = np.asarray([index[dnames[it.label]] for it in keep])
        scores = np.zeros((len(keep), len(names)), np.float32)
        for i in range(0, len(keep), batch):
            imgs = [_decode_rgb(store.get_bytes(it.sha256)) for it in keep[i:i + batch]]
            for j, res in enumerate(runtime.predict(imgs, top_k=len(names))):
                for t in res.top:
                    scores[i + j, t.index] = t.score
        m = classification_metrics(y, scores, names)
        overall = {k: m[k] for k in m if k.endswith("accuracy") or k.startswith("macro_")}
        plots["confusion_matrix.png"] = confusion_png(
            m, outdir / "confusion_matrix.png", f"{info.name} {info.version} on {dv.ref}:{split}")
        extra = {"confusion_matrix": m["confusion_matrix"]}
    else:
        gt, dt, sizes = [], [], []
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            imgs = [_decode_rgb(store.get_bytes(it.sha256)) for it in chunk]
            for it, img, res in zip(chunk, imgs, runtime.predict(imgs, threshold=0.0)):
                lab = np.asarray([index.get(dnames[c], -1) for c in it.labels], np.int64)
                unknown += int((lab < 0).sum())
                gt.append((it.boxes[lab >= 0], lab[lab >= 0]))
                bx = [b for b in res.boxes if b.score > 1e-3]
                dt.append((np.asarray([[b.x, b.y, b.x + b.w, b.y + b.h] for b in bx],
                                      np.float32).reshape(-1, 4),
                           np.asarray([b.score for b in bx], np.float32),
                           np.asarray([b.index for b in bx], np.int64)))
                sizes.append((img.shape[1], img.shape[0]))
        m = detection_metrics(gt, dt, sizes, names)
        overall = {k: m[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                                     "AR100") if k in m}
        plots["pr_curves.png"] = pr_png(m, outdir / "pr_curves.png",
                                        f"{info.name} {info.version} on {dv.ref}:{split}")
        extra = {"pr_curves": m.get("pr_curves", {})}
    metrics = {"overall": overall, "per_class": m["per_class"], "dataset_version_id": dv.id,
               "dataset": dv.ref, "split": split, "n_images": len(items),
               "unknown_labels": unknown, "skipped": skipped, **extra}
    return metrics, plots


def evaluate_model(ctx: Context, model_ref: int | str, dataset_ref: str, user: User | None, *,
                   split: str = "test", store: bool = True, device: str = "auto"
                   ) -> dict[str, Any]:
    """Evaluate a registered model on a dataset split; with ``store`` the metrics (and plot
    blobs) are kept on the model under ``metrics.evaluations["NAME@N:split"]`` (and as its main
    metrics when it is the model's own lineage dataset)."""
    import tempfile

    from aqualens.models.registry import get_model, model_info
    from aqualens.models.warm import load_runtime

    with ctx.session() as s:
        model = get_model(s, model_ref, user)
        dv = get_version(s, dataset_ref, user)
        s.expunge(model)
        s.expunge(dv)
    info = model_info(model)
    runtime = load_runtime(ctx, model.id, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        metrics, plots = evaluate_runtime(ctx, runtime, info, dv, split, Path(tmp))
        metrics["plots"] = {name: ctx.store.put_file(path) for name, path in plots.items()}
    if store:
        from aqualens.catalog.users import check_write

        with ctx.session() as s:
            row = s.get(Model, model.id)
            check_write(row, user, "model")
            merged = dict(row.metrics or {})
            evals = dict(merged.get("evaluations") or {})
            evals[f"{dv.ref}:{split}"] = {k: v for k, v in metrics.items()
                                          if k not in ("pr_curves",)}
            merged["evaluations"] = evals
            if row.dataset_version_id == dv.id and split == merged.get("split", split):
                merged.update(metrics)
            from aqualens.models.registry import update_model

            update_model(s, row.id, user, metrics=merged)
    return {"model": f"{info.name}@{info.version}", "model_id": model.id, **metrics}


def model_card(info: Any, dv: DatasetVersion, metrics: dict[str, Any], params: dict[str, Any],
               split: str | None) -> str:
    """A markdown card: what the model does, its data, metrics, training and licence."""
    m = dv.manifest or {}
    lines = [f"# {info.name} {info.version}", "",
             f"{info.task.capitalize()} model trained by AquaLens (plain PyTorch CNN, "
             f"{'CenterNet-style anchor-free detector' if info.task == 'detect' else 'classifier'}"
             f"), exported to ONNX (opset 17).", "",
             "## Data", "",
             f"- dataset version `{dv.ref}` (manifest sha256 `{dv.manifest_sha256}`): "
             f"{len(m.get('images', []))} images, {len(m.get('annotations', []))} annotations",
             "- splits: " + ", ".join(f"{k} {len(v)}" for k, v in m.get("splits", {}).items()),
             f"- split method: {m.get('split_params', {})}",
             f"- labels ({len(info.labels)}): " + ", ".join(
                 f"{lab.name}" + (f" (AphiaID {lab.aphia_id})" if lab.aphia_id else "")
                 for lab in info.labels), ""]
    if params.get("base_model"):
        lines += [f"Fine-tuned from `{params['base_model']}`.", ""]
    lines += ["## Metrics", ""]
    if split and metrics.get("overall"):
        lines += [f"Measured on split `{split}` of `{dv.ref}` through the ONNX artefact.", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics["overall"].items()
                  if isinstance(v, (int, float))]
        lines += ["", "| class | " + (" precision | recall | F1 | support |"
                                      if info.task == "classify" else " AP | AP50 |"),
                  "|---|---|---|" + ("---|---|" if info.task == "classify" else "")]
        for cname, pc in metrics.get("per_class", {}).items():
            if info.task == "classify":
                lines.append(f"| {cname} | {pc['precision']:.3f} | {pc['recall']:.3f} | "
                             f"{pc['f1']:.3f} | {pc['support']} |")
            else:
                fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
                lines.append(f"| {cname} | {fmt(pc['AP'])} | {fmt(pc['AP50'])} |")
    else:
        lines.append("No held-out split was evaluated.")
    tr = metrics.get("training", {})
    cfg = params.get("config", {})
    lines += ["", "## Training", "",
              f"- input {cfg.get('input_size')} ({cfg.get('resize')}), epochs run "
              f"{tr.get('epochs_run')} of {cfg.get('epochs')} (stopped: {tr.get('stopped')}), "
              f"best validation {tr.get('metric')} {tr.get('best_val', 0):.4f} at epoch "
              f"{tr.get('best_epoch')}, seed {cfg.get('seed')}, {tr.get('seconds')} s",
              f"- class balance: {cfg.get('balance')}; augmentation: {cfg.get('augment')}",
              "", "## Licence", "",
              f"Model: {info.licence or 'not stated'}. The training data keep their own licence "
              "(see the dataset's source).", ""]
    return "\n".join(lines)
