"""DEEPaaS-compatible training, backed by persistent Job rows (kind ``deepaas-train``).

``POST /v2/models/{name}/train/`` creates a job, marks it running and starts a background thread
in the API process. The thread runs the module's ``train(**args)`` in a spawned child process (as
deepaas-run does), so a cancel (``DELETE .../train/{uuid}``) really stops it: the child is killed
and the job is marked ``cancelled``. An exception in ``train`` marks the job ``failed`` with its
message. Because the record is a Job row, trainings survive a server restart and are listed by
``aqualens jobs``; a job left running by a dead server is resumed by the processing runner, which
calls :func:`run` (this module is the ``deepaas-train`` entry point of ``aqualens.jobs``).

Training records have DEEPaaS's shape: ``{"date", "args", "uuid", "status"
(running|done|error|cancelled), "message"?, "result"?: {"output", "finish_date", "duration"}}``.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import shutil
import threading
import time
import uuid as uuid_mod
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from aqualens.catalog.tables import Job, Model, User
from aqualens.catalog.users import visible
from aqualens.core.errors import JobError, ModelError, NotFound, ValidationError
from aqualens.core.plugins import get_registry

if TYPE_CHECKING:
    from aqualens.catalog.context import Context
    from aqualens.core.config import Settings

KIND = "deepaas-train"
POLL_S = 0.2
STATUS = {"queued": "running", "running": "running", "succeeded": "done", "failed": "error",
          "cancelled": "cancelled"}
_cancel_events: dict[str, threading.Event] = {}
_threads: dict[str, threading.Thread] = {}


def _date() -> str:
    return str(datetime.now())  # deepaas's "YYYY-mm-dd HH:MM:SS.ffffff"


def _jsonable(v: Any) -> Any:
    import json

    return json.loads(json.dumps(v, default=str))


def job_uuid(job_id: str) -> str:
    """DEEPaaS shows training ids as 32 hex digits; our Job ids are dashed UUIDs."""
    return job_id.replace("-", "")


def job_id_from_uuid(value: str) -> str:
    try:
        return str(uuid_mod.UUID(value))
    except (ValueError, AttributeError):
        raise NotFound(f"no training {value!r}", field="uuid") from None


def training_record(job: Job) -> dict[str, Any]:
    """A Job row in DEEPaaS's training-record shape."""
    p = job.params or {}
    rec: dict[str, Any] = {"date": p.get("date"), "args": p.get("args_view", {}),
                           "uuid": job_uuid(job.id), "status": STATUS.get(job.state, job.state)}
    if job.state == "failed":
        rec["message"] = job.error or "failed"
    elif job.state == "succeeded":
        result = dict(job.outputs or {})
        try:
            end = datetime.strptime(result["finish_date"], "%Y-%m-%d %H:%M:%S.%f")
            start = datetime.strptime(rec["date"], "%Y-%m-%d %H:%M:%S.%f")
            result["duration"] = str(end - start)
        except (KeyError, TypeError, ValueError):
            pass
        rec["result"] = result
    return rec


def _model_spec(ctx: Context, model_id: int) -> str:
    from aqualens.models.deepaas_adapter import read_descriptor
    from aqualens.models.warm import artefact_path

    with ctx.session() as s:
        model = s.get(Model, model_id)
        if model is None:
            raise NotFound(f"no model {model_id}", field="model")
        sha, options = model.artefact_sha256, dict(model.options or {})
    return options.get("module") or read_descriptor(artefact_path(ctx, sha, ".json"))


def start_training(ctx: Context, model: Model, user: User, args: dict[str, Any],
                   files: dict[str, tuple[str, str, bytes]]) -> dict[str, Any]:
    """Create the job for ``model`` with validated ``args`` (file arguments come separately as
    ``{arg: (original_filename, content_type, bytes)}``) and start it. Returns the record."""
    from aqualens.processing import jobs

    if model.runtime != "deepaas":
        if "train" in get_registry().names("aqualens.jobs"):
            with ctx.session() as s:
                job = jobs.create_job(s, "train", {"base_model_id": model.id, **args}, user.id)
                s.flush()
                job.params = {**job.params, "date": _date(), "args_view": _jsonable(args)}
                return training_record(job)
        raise ModelError(f"model {model.name} {model.version} is not a DEEPaaS module and this "
                         "instance has no training service", field="model",
                         valid="a DEEPaaS module, or install the training service")
    date = _date()
    args_view = dict(args)
    for key, (fname, ctype, _data) in files.items():
        # deepaas-run shows file arguments as [name, content_type, original_filename].
        args_view[key] = [key, ctype, fname]
    with ctx.session() as s:
        job = jobs.create_job(s, KIND, {"model_id": model.id, "model": f"{model.name}@"
                                        f"{model.version}", "date": date,
                                        "args": _jsonable(args), "args_view": _jsonable(args_view),
                                        "files": {}}, user.id)
        job_id = job.id
        if files:
            folder = Path(ctx.settings.data_dir) / "cache" / "deepaas-train" / job_id
            folder.mkdir(parents=True, exist_ok=True)
            stored = {}
            for key, (fname, ctype, data) in files.items():
                path = folder / f"{key}.bin"
                path.write_bytes(data)
                stored[key] = {"path": str(path), "content_type": ctype, "filename": fname}
            job.params = {**job.params, "files": stored}
        jobs.set_state(s, job_id, "running", runner_id=f"{jobs.runner_identity()}:deepaas")
        jobs.log(s, job_id, f"training {model.name} {model.version} started")
        record = training_record(job)
    _cancel_events[job_id] = threading.Event()
    t = threading.Thread(target=_supervise, args=(ctx.settings, job_id), daemon=True,
                         name=f"deepaas-train-{job_id[:8]}")
    _threads[job_id] = t
    t.start()
    return record


def _child(spec: str, kwargs: dict[str, Any], files: dict[str, dict], out) -> None:  # noqa: ANN001
    """Runs in the spawned training process."""
    try:
        from deepaas.model.v2.wrapper import UploadedFile

        from aqualens.models.deepaas_adapter import _jsonable as js
        from aqualens.models.deepaas_adapter import _load_object

        obj = _load_object(spec)
        for key, f in files.items():
            kwargs[key] = UploadedFile(name=key, filename=f["path"],
                                       content_type=f["content_type"],
                                       original_filename=f["filename"])
        result = obj.train(**kwargs)
        out.put(("ok", js(result)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as the job's error
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def execute(ctx: Context, job_id: str) -> dict[str, Any]:
    """Run the training of ``job_id`` to completion; raises JobCancelled or JobError."""
    from aqualens.processing import jobs
    from aqualens.processing.kinds import JobCancelled

    with ctx.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", field="job")
        params = dict(job.params or {})
    spec = _model_spec(ctx, int(params["model_id"]))
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    proc = mp.Process(target=_child, args=(spec, dict(params.get("args") or {}),
                                           dict(params.get("files") or {}), out), daemon=True)
    proc.start()
    event = _cancel_events.setdefault(job_id, threading.Event())
    last_db_check = 0.0
    result = None
    try:
        while True:
            try:
                result = out.get(timeout=POLL_S)
                break
            except queue_mod.Empty:
                pass
            if event.is_set():
                raise JobCancelled("cancelled")
            if time.monotonic() - last_db_check > 1.0:
                last_db_check = time.monotonic()
                with ctx.session() as s:
                    if jobs.is_cancel_requested(s, job_id):
                        raise JobCancelled("cancelled")
            if not proc.is_alive() and out.empty():
                raise JobError(f"training process died (exit code {proc.exitcode})",
                               field="train")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
    status, value = result
    if status == "error":
        raise JobError(value, field="train")
    return {"output": value, "finish_date": _date()}


def _supervise(settings: Settings, job_id: str) -> None:
    from aqualens.catalog.context import Context
    from aqualens.processing import jobs
    from aqualens.processing.kinds import JobCancelled

    ctx = Context(settings)
    try:
        outputs = execute(ctx, job_id)
        state, error = "succeeded", None
    except JobCancelled:
        state, error, outputs = "cancelled", None, None
    except Exception as exc:  # noqa: BLE001 - any failure marks the job failed with its reason
        state, error, outputs = "failed", str(exc), None
    try:
        with ctx.session() as s:
            jobs.set_state(s, job_id, state, error=error, outputs=outputs)
            jobs.log(s, job_id, f"training {state}" + (f": {error}" if error else ""),
                     level="error" if state == "failed" else "info")
    finally:
        folder = Path(settings.data_dir) / "cache" / "deepaas-train" / job_id
        shutil.rmtree(folder, ignore_errors=True)
        _cancel_events.pop(job_id, None)
        _threads.pop(job_id, None)


def run(settings: Settings, job_id: str) -> dict[str, Any]:
    """Function job kind (``aqualens.jobs`` entry point ``deepaas-train``): what the processing
    runner calls when it resumes a training left running by a dead server."""
    from aqualens.catalog.context import Context

    return execute(Context(settings), job_id)


def list_trainings(ctx: Context, model: Model, user: User | None) -> list[dict[str, Any]]:
    with ctx.session() as s:
        rows = s.scalars(select(Job).where(Job.kind.in_((KIND, "train")), visible(Job, user))
                         .order_by(Job.created_at))
        return [training_record(j) for j in rows
                if (j.params or {}).get("model_id", (j.params or {}).get("base_model_id"))
                == model.id]


def get_training(ctx: Context, model: Model, uuid: str, user: User | None) -> dict[str, Any]:
    from aqualens.processing import jobs

    job_id = job_id_from_uuid(uuid)
    with ctx.session() as s:
        job = jobs.get_job(s, job_id, user)
        if (job.params or {}).get("model_id", (job.params or {}).get("base_model_id")) \
                != model.id:
            raise NotFound(f"no training {uuid!r} for model {model.name}", field="uuid")
        return training_record(job)


def cancel_training(ctx: Context, model: Model, uuid: str, user: User | None,
                    wait_s: float = 5.0) -> dict[str, Any]:
    """Cancel a training and wait (up to ``wait_s``, like deepaas-run) for it to stop."""
    from aqualens.processing import jobs

    record = get_training(ctx, model, uuid, user)
    job_id = job_id_from_uuid(uuid)
    if record["status"] != "running":
        return record
    with ctx.session() as s:
        try:
            jobs.request_cancel(s, job_id, user)
        except JobError:
            pass  # it finished meanwhile
    if job_id in _cancel_events:
        _cancel_events[job_id].set()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        record = get_training(ctx, model, uuid, user)
        if record["status"] != "running":
            break
        time.sleep(0.05)
    return record


def check_args_json(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError("training arguments must be an object", field="args")
    return value
