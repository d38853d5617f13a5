"""The training service: job kind ``train`` (entry point in ``aqualens.jobs``) and evaluation.

``start_training`` creates a queued job; the processing runner executes :func:`run` as one Dask
task (a function kind, see :mod:`aqualens.processing.kinds`). The task loads the frozen dataset
version from the blob store, trains (resuming from ``<data_dir>/training/<job id>/last.pt`` when
the job was interrupted), exports ONNX, checks ONNX/PyTorch parity, evaluates the ONNX model
through the registry's runtime on the test split and registers the result as a new model version
with its metrics, card, lineage (dataset version + job) and training parameters.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.datasets import get_version
from aqualens.catalog.tables import DatasetVersion, Model, User
from aqualens.core.errors import ModelError, NotFound, ValidationError
from aqualens.training.datasets import training_items
from aqualens.training.config import TASKS, TrainConfig
from aqualens.training.model_eval import evaluate_runtime, model_card

KIND = "train"
#: Parameters a client may set; everything else is refused by name.
PARAMS = {"dataset", "task", "base_model", "name", "version", "epochs", "batch_size", "lr",
          "device", "seed", "input_size", "width", "patience", "balance", "threads",
          "max_minutes", "resize", "augment", "licence", "description", "eval_split",
          "train_crop", "visibility", "keep_labels", "flip_test"}


# ---- job creation ---------------------------------------------------------------------------

def _int(params: dict, key: str, lo: int, hi: int) -> None:
    v = params.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValidationError(f"{key} must be an integer {lo}..{hi}, got {v!r}", field=key)


def validate_params(session: Session, params: dict, owner_id: int) -> dict:
    """Check a ``train`` job's parameters when it is created (the runner's ``validate`` hook)."""
    from aqualens.catalog.tables import User as U

    if not isinstance(params, dict):
        raise ValidationError("parameters must be an object", field="params")
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ValidationError(f"unknown training parameter(s): {', '.join(unknown)}",
                              field=unknown[0], valid=", ".join(sorted(PARAMS)))
    user = session.get(U, owner_id)
    if not params.get("dataset"):
        raise ValidationError("a dataset version is required", field="dataset", valid="NAME@N")
    dv = get_version(session, str(params["dataset"]), user)
    out = dict(params)
    out["dataset"] = dv.ref
    out["dataset_version_id"] = dv.id
    task = out.get("task") or (dv.manifest or {}).get("task") or "classify"
    if task not in TASKS:
        raise ValidationError(f"unknown task {task!r}", field="task", valid=", ".join(TASKS))
    out["task"] = task
    if not (dv.label_map or {}).get("labels"):
        raise ValidationError(f"{dv.ref} has no labelled annotations", field="dataset")
    if "flip_test" in out and out["flip_test"] is not None \
            and not isinstance(out["flip_test"], bool):
        raise ValidationError(f"flip_test must be true or false, got {out['flip_test']!r}",
                              field="flip_test", valid="true, false")
    for key, lo, hi in (("epochs", 1, 10000), ("batch_size", 1, 4096), ("seed", 0, 2**31 - 1),
                        ("patience", 1, 10000), ("threads", 1, 1024), ("train_crop", 32, 8192)):
        _int(out, key, lo, hi)
    if out.get("base_model"):
        from aqualens.models.registry import get_model

        base = get_model(session, out["base_model"], user)
        if "checkpoint.pt" not in (base.files or {}):
            raise ValidationError(f"model {base.name} {base.version} has no native checkpoint "
                                  "to fine-tune from", field="base_model",
                                  valid="a model trained by AquaLens")
        if base.task != task:
            raise ValidationError(f"base model is a {base.task} model, the job is {task}",
                                  field="base_model")
        out["base_model_id"] = base.id
        out["base_model"] = f"{base.name}@{base.version}"
    if out.get("device"):
        from aqualens.training.loop import pick_device

        if out["device"] != "auto" and out["device"].split(":")[0] not in ("cpu", "cuda", "mps"):
            pick_device(out["device"])      # raises the ValidationError naming the choices
    if out.get("name"):
        from aqualens.models.base import validate_name

        validate_name(out["name"])
    if out.get("version"):
        from aqualens.models.base import validate_version

        validate_version(out["version"])
    cfg = _config(out)
    cfg.resolved()                          # checks input size, balance, ...
    return out


def _config(params: dict) -> TrainConfig:
    keys = ("epochs", "batch_size", "lr", "device", "seed", "width", "patience", "balance",
            "threads", "max_minutes", "resize", "augment", "train_crop", "flip_test")
    kw = {k: params[k] for k in keys if params.get(k) is not None}
    if params.get("input_size"):
        size = params["input_size"]
        if isinstance(size, int):
            size = (size, size)
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValidationError("input_size must be N or [height, width]", field="input_size")
        kw["input_size"] = tuple(int(v) for v in size)
    return TrainConfig(task=params.get("task", "classify"), **kw)


def start_training(session: Session, user: User, dataset: str, task: str | None = None, *,
                   base_model: str | None = None, **options: Any):  # noqa: ANN201 - Job
    """Create a queued ``train`` job (validated); the runner picks it up."""
    from aqualens.processing.jobs import create_job

    params = {"dataset": dataset, "task": task, "base_model": base_model,
              **{k: v for k, v in options.items() if v is not None}}
    params = {k: v for k, v in params.items() if v is not None}
    epochs = _config(validate_params(session, params, user.id)).resolved().epochs
    return create_job(session, KIND, params, user.id, total=epochs)


# ---- the job --------------------------------------------------------------------------------

def run(settings: Any, job_id: str) -> dict[str, Any]:
    """Entry point of job kind ``train``: ``run(settings, job_id) -> outputs``."""
    from aqualens.core.config import Settings, load_settings

    if not isinstance(settings, Settings):
        settings = load_settings(**settings) if isinstance(settings, dict) else settings
    return train_job(Context(settings), job_id)


run.validate = validate_params  # type: ignore[attr-defined]


def _reader(ctx: Context):  # noqa: ANN202
    store = ctx.store

    def read(item) -> bytes:  # noqa: ANN001
        return store.get_bytes(item.sha256)
    return read


def _next_version(session: Session, name: str, base_version: str | None) -> str:
    from aqualens.models.registry import semver_key

    versions = list(session.scalars(select(Model.version).where(Model.name == name)))
    if not versions:
        return "1.0.0"
    top = max(versions, key=semver_key)
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", top)
    major, minor = (int(m[1]), int(m[2])) if m else (1, 0)
    return f"{major}.{minor + 1}.0"


def _base_checkpoint(ctx: Context, model_id: int) -> tuple[dict, Model]:
    import torch

    with ctx.session() as s:
        base = s.get(Model, model_id)
        if base is None:
            raise NotFound(f"no model {model_id}", field="base_model")
        s.expunge(base)
    sha = (base.files or {}).get("checkpoint.pt")
    if not sha:
        raise ModelError(f"{base.name} {base.version} has no native checkpoint",
                         field="base_model")
    return torch.load(io.BytesIO(ctx.store.get_bytes(sha)), map_location="cpu",
                      weights_only=False), base


def train_job(ctx: Context, job_id: str) -> dict[str, Any]:
    """Run (or resume) training job ``job_id`` to a registered model; returns job outputs."""
    import torch

    from aqualens.processing import jobs
    from aqualens.processing.kinds import JobCancelled
    from aqualens.training.data import build_train_data, guess_channels
    from aqualens.training.loop import TrainingCancelled, train
    from aqualens.training.nets import NetConfig
    from aqualens.training.splits import make_splits

    t0 = time.monotonic()
    with ctx.session() as s:
        job = jobs._load(s, job_id)
        params, owner_id = dict(job.params), job.owner_id
        dv = s.get(DatasetVersion, params["dataset_version_id"])
        if dv is None:
            raise NotFound(f"dataset version {params['dataset']} is gone", field="dataset")
        s.expunge(dv)
    task = params["task"]
    cfg = _config(params).resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    workdir = Path(ctx.settings.data_dir) / "training" / job_id
    resuming = (workdir / "last.pt").exists()

    def say(msg: str, level: str = "info") -> None:
        with ctx.session() as s2:
            jobs.log(s2, job_id, msg, level)

    splits = (dv.manifest or {}).get("splits", {})
    train_items, names, skipped = training_items(dv, task, "train" if "train" in splits else None)
    if not train_items:
        raise ValidationError(f"{dv.ref} has no usable {task} training images "
                              f"(skipped: {skipped})", field="dataset")
    if "val" in splits and splits["val"]:
        val_items = training_items(dv, task, "val")[0]
    else:  # carve a validation part out of train, stratified and seeded
        keys = [it.sha256 for it in train_items]
        labs = [[names[it.label]] if task == "classify" else [names[i] for i in it.labels]
                for it in train_items]
        part = make_splits(keys, labs, fractions={"train": 0.9, "val": 0.1}, seed=cfg.seed)
        vset = set(part["val"])
        val_items = [it for it in train_items if it.sha256 in vset]
        train_items = [it for it in train_items if it.sha256 not in vset]
    eval_split = params.get("eval_split") or ("test" if splits.get("test") else
                                              "val" if splits.get("val") else None)

    init_state = init_cfg = head_keep = None
    base_info = None
    channels = None
    if params.get("base_model_id"):
        ck, base_row = _base_checkpoint(ctx, params["base_model_id"])
        init_state, init_cfg = ck["model"], NetConfig.from_dict(ck["net_config"])
        old = list(ck["names"])
        head_keep = {i: old.index(n) for i, n in enumerate(names) if n in old}
        channels = init_cfg.in_channels
        spec = base_row.input_spec or {}
        cfg.input_size = (int(spec.get("height", cfg.input_size[0])),
                          int(spec.get("width", cfg.input_size[1])))
        cfg.resize = spec.get("resize", cfg.resize)
        base_info = f"{base_row.name}@{base_row.version}"
    read = _reader(ctx)
    if channels is None:
        channels = guess_channels(train_items, read)
    h, w = cfg.input_size
    say(f"{'resuming' if resuming else 'starting'}: {task} on {dv.ref}, {len(train_items)} train "
        f"/ {len(val_items)} val images, {len(names)} labels, {h}x{w}x{channels}"
        + (f", fine-tuning {base_info}" if base_info else "")
        + (f"; skipped {skipped}" if any(skipped.values()) else ""))
    tdata = build_train_data(train_items, read, task, h, w, channels, cfg.resize)
    vdata = build_train_data(val_items, read, task, h, w, channels, cfg.resize)

    last_poll = [0.0, False]

    def cancel() -> bool:
        now = time.monotonic()
        if now - last_poll[0] > 2.0:
            last_poll[0] = now
            with ctx.session() as s2:
                last_poll[1] = jobs.is_cancel_requested(s2, job_id)
        return bool(last_poll[1])

    def progress(p: dict[str, Any]) -> None:
        with ctx.session() as s2:
            jobs.add_progress(s2, job_id, done=1)
            jobs.log(s2, job_id, f"epoch {p['epoch']}/{p['epochs']} loss {p['loss']:.4f} "
                                 f"val {p['metric']} {p['val_metric']:.4f} best "
                                 f"{p['best']:.4f}@{p['best_epoch']} eta {p['eta_s']:.0f}s")

    try:
        res = train(cfg, tdata, vdata, names, workdir, progress=progress, cancel=cancel,
                    init_state=init_state, init_net_config=init_cfg, head_keep=head_keep)
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from None
    say(f"trained: {res.epochs_run} epochs ({res.stopped}), best val {res.best_metric:.4f} at "
        f"epoch {res.best_epoch}; exporting")
    return _package_and_register(ctx, job_id, params, owner_id, dv, res, channels, eval_split,
                                 base_info, t0)


def _package_and_register(ctx: Context, job_id: str, params: dict, owner_id: int,
                          dv: DatasetVersion, res: Any, channels: int, eval_split: str | None,
                          base_info: str | None, t0: float) -> dict[str, Any]:
    import torch

    from aqualens.models.base import InputSpec, LabelInfo, ModelInfo
    from aqualens.models.registry import register_model
    from aqualens.models.warm import runtime_from_files
    from aqualens.processing import jobs
    from aqualens.training.export import export_onnx, parity_check

    task = res.config.task
    h, w = res.config.input_size
    wd = res.workdir
    onnx_path = export_onnx(res.net, wd / "model.onnx", channels, h, w)
    rng = np.random.default_rng(0)
    parity = parity_check(res.net, onnx_path,
                          rng.standard_normal((2, channels, h, w)).astype(np.float32))
    aphia = {lab["name"]: lab.get("aphia_id") for lab in (dv.label_map or {}).get("labels", [])}
    spec = InputSpec(height=h, width=w, channels=channels, mean=tuple(res.mean),
                     std=tuple(res.std), resize=res.config.resize)
    with ctx.session() as s:
        name = params.get("name") or re.sub(r"[^A-Za-z0-9._-]", "-", f"{dv.concept}-{task}")
        version = params.get("version") or _next_version(s, name, None)
    info = ModelInfo(name=name, version=version, task=task,
                     labels=[LabelInfo(n, aphia.get(n)) for n in res.names], input_spec=spec,
                     runtime="onnx", description=params.get("description") or
                     f"{task} model trained by AquaLens on {dv.ref}",
                     licence=params.get("licence"),
                     keywords=["aqualens-training", task, dv.concept],
                     options={"nms_iou": 0.5} if task == "detect" else {})
    ckpt = wd / "checkpoint.pt"
    torch.save({"net_config": res.net_config.to_dict(), "model": res.net.state_dict(),
                "names": res.names, "mean": res.mean, "std": res.std,
                "input_spec": spec.to_dict(), "train_config": res.config.to_dict(),
                "dataset": dv.ref}, ckpt)
    files = {"checkpoint.pt": ckpt}
    metrics: dict[str, Any] = {}
    if eval_split:
        runtime = runtime_from_files(onnx_path, info, device="cpu")
        try:
            metrics, plots = evaluate_runtime(ctx, runtime, info, dv, eval_split, wd)
        finally:
            runtime.close()
        files.update(plots)
    metrics["training"] = {"best_val": res.best_metric, "metric": res.history[-1]["metric"]
                           if res.history else None, "best_epoch": res.best_epoch,
                           "epochs_run": res.epochs_run, "stopped": res.stopped,
                           "seconds": round(res.seconds, 1)}
    train_params = {"task": task, "dataset": dv.ref, "dataset_version_id": dv.id,
                    "manifest_sha256": dv.manifest_sha256, "base_model": base_info,
                    "config": res.config.to_dict(), "net": res.net_config.to_dict(),
                    "history": res.history, "parity": parity,
                    "torch": torch.__version__}
    card = model_card(info, dv, metrics, train_params, eval_split)
    with ctx.session() as s:
        model = register_model(s, ctx.store, onnx_path, info, owner_id, metrics=metrics,
                               card=card, licence=params.get("licence"),
                               dataset_version_id=dv.id, job_id=job_id, params=train_params,
                               extra_files=files, visibility=params.get("visibility", "private"))
        mid = model.id
        jobs.log(s, job_id, f"registered model {name} {version} (id {mid})")
    overall = metrics.get("overall", {})
    return {"model_id": mid, "model": f"{name}@{version}", "dataset": dv.ref,
            "eval_split": eval_split, "metrics": overall, "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch, "stopped": res.stopped,
            "seconds": round(time.monotonic() - t0, 1)}
