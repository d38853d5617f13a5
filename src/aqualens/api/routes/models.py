"""REST: the model registry (/api/v1/models) and prediction with a registered model."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from aqualens.api.deps import current_user, get_ctx, get_session, optional_user
from aqualens.catalog.context import Context
from aqualens.catalog.ids import MAX_ID, check_id
from aqualens.catalog.tables import Model, User
from aqualens.core.errors import TooLarge, UnsupportedMedia, ValidationError
from aqualens.models import registry


@asynccontextmanager
async def _lifespan(_app):  # noqa: ANN001, ANN202
    """Write the buffered usage events of the predict routes when the server stops."""
    yield
    from aqualens.services.usage import flush_usage

    await run_in_threadpool(flush_usage)


router = APIRouter(prefix="/api/v1", tags=["models"], lifespan=_lifespan)


async def read_form(request: Request):  # noqa: ANN201 - starlette FormData
    """The multipart/form body, or a clear 4xx for anything else."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise UnsupportedMedia(f"expected a multipart/form-data body, got {ctype or 'none'}",
                               field="Content-Type", valid="multipart/form-data")
    try:
        return await request.form(max_files=10000, max_fields=1000)
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types
        raise ValidationError(f"malformed multipart body: {exc}", field="body") from None


async def read_upload(ctx: Context, up: UploadFile, field: str) -> bytes:
    limit = ctx.settings.limits.max_file_bytes
    data = await up.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{up.filename or field} is larger than {limit} bytes",
                       field=up.filename or field)
    return data


def _owner_name(session: Session, model: Model) -> str | None:
    owner = session.get(User, model.owner_id)
    return owner.name if owner else None


def _json_field(value: Any, field: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, UploadFile):
        raise ValidationError(f"{field} must be a JSON text field, not a file", field=field)
    try:
        out = json.loads(value)
    except ValueError as exc:
        raise ValidationError(f"{field} is not valid JSON: {exc}", field=field) from None
    if not isinstance(out, dict):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    return out


@router.get("/models")
def list_models(task: str | None = None, name: str | None = None, q: str | None = None,
                latest: bool = False, limit: int = 200,
                offset: int = Query(0, ge=0, le=MAX_ID),
                session: Session = Depends(get_session),
                user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """Models you may see (public ones, your own; all for admins)."""
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1..1000", field="limit")
    rows = registry.list_models(session, user, task=task, name=name, text=q,
                                latest_only=latest, limit=limit, offset=offset)
    return {"items": [registry.model_dict(m, owner_name=_owner_name(session, m)) for m in rows]}


@router.post("/models", status_code=201)
async def add_model(request: Request, ctx: Context = Depends(get_ctx),
                    user: User = Depends(current_user)) -> dict[str, Any]:
    """Register a model. Multipart with either ``package`` (a ``.aqlmodel`` file), or
    ``artefact`` (an ONNX/TorchScript file) plus ``metadata`` (JSON: name, version, task, labels,
    input_spec, runtime, licence, keywords, card, metrics, ...), or only ``metadata`` with
    ``"runtime": "deepaas", "module": "<entry point>"`` for a DEEPaaS module.
    ``visibility`` (private|public) is optional."""
    form = await read_form(request)
    visibility = form.get("visibility") or "private"
    if form.get("package") is not None:
        up = form["package"]
        if not isinstance(up, UploadFile):
            raise ValidationError("package must be a file part", field="package")
        data = await read_upload(ctx, up, "package")
        return await run_in_threadpool(_import_package, ctx, data, user, visibility)
    meta = _json_field(form.get("metadata"), "metadata")
    if not meta:
        raise ValidationError("send a 'package' file, or 'metadata' (JSON) with an 'artefact' "
                              "file", field="metadata")
    art = form.get("artefact")
    if art is not None and not isinstance(art, UploadFile):
        raise ValidationError("artefact must be a file part", field="artefact")
    data = await read_upload(ctx, art, "artefact") if art is not None else None
    return await run_in_threadpool(_register, ctx, meta, art.filename if art else None, data,
                                   user, visibility)


def _import_package(ctx: Context, data: bytes, user: User, visibility: str) -> dict[str, Any]:
    from aqualens.models.package import import_package

    with tempfile.NamedTemporaryFile(suffix=".aqlmodel", delete=False) as tmp:
        tmp.write(data)
    try:
        model = import_package(ctx, Path(tmp.name), user.id, visibility=visibility)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return registry.model_dict(model, owner_name=user.name)


def _register(ctx: Context, meta: dict[str, Any], filename: str | None, data: bytes | None,
              user: User, visibility: str) -> dict[str, Any]:
    from aqualens.models.base import ModelInfo

    meta = dict(meta)
    extras = {k: meta.pop(k) for k in ("metrics", "dataset_version_id", "job_id", "params",
                                       "module") if k in meta}
    work = Path(tempfile.mkdtemp(prefix="aqlreg-"))
    try:
        if meta.get("runtime") == "deepaas" or extras.get("module"):
            from aqualens.models.deepaas_adapter import (
                info_for_module,
                write_descriptor,
            )

            spec = extras.get("module")
            if not spec:
                raise ValidationError("a DEEPaaS model needs 'module' (its entry point name)",
                                      field="module")
            base = info_for_module(spec, name=meta.get("name"), version=meta.get("version"),
                                   task=meta.get("task", "classify"))
            merged = {**base.to_dict(), **{k: v for k, v in meta.items() if v is not None}}
            merged["options"] = {**base.options, **(meta.get("options") or {})}
            merged["runtime"] = "deepaas"
            info = ModelInfo.from_dict(merged)
            path = write_descriptor(spec, work)
        else:
            if data is None:
                raise ValidationError("an 'artefact' file is required (ONNX or TorchScript)",
                                      field="artefact")
            name = Path(filename or "model.onnx").name
            path = work / name
            path.write_bytes(data)
            if not meta.get("runtime"):
                meta["runtime"] = registry.guess_runtime(path)
            info = ModelInfo.from_dict(meta)
        with ctx.session() as s:
            model = registry.register_model(
                s, ctx.store, path, info, user.id, metrics=extras.get("metrics"),
                dataset_version_id=extras.get("dataset_version_id"),
                job_id=extras.get("job_id"), params=extras.get("params"),
                visibility=visibility)
            return registry.model_dict(model, owner_name=user.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@router.get("/models/{ref}")
def get_model(ref: str, session: Session = Depends(get_session),
              user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """One model by id, name (latest version) or name@version."""
    m = registry.get_model(session, ref, user)
    return registry.model_dict(m, owner_name=_owner_name(session, m))


@router.patch("/models/{ref}")
async def patch_model(ref: str, request: Request, session: Session = Depends(get_session),
                      user: User = Depends(current_user)) -> dict[str, Any]:
    """Change description, card, licence, keywords, metrics or visibility."""
    try:
        body = await request.json()
    except ValueError:
        raise ValidationError("body must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", field="body")
    m = registry.update_model(session, ref, user, **body)
    return registry.model_dict(m, owner_name=_owner_name(session, m))


@router.delete("/models/{ref}")
def delete_model(ref: str, ctx: Context = Depends(get_ctx),
                 user: User = Depends(current_user)) -> dict[str, Any]:
    from aqualens.services.usage import flush_usage

    flush_usage(registry.db_url_of(ctx))  # buffered events naming the model are written first
    return registry.delete_model(ctx, ref, user)


@router.get("/models/{ref}/package")
def download_package(ref: str, ctx: Context = Depends(get_ctx),
                     user: User | None = Depends(optional_user)) -> FileResponse:
    """The model as one ``.aqlmodel`` file (for offline use or another instance)."""
    from aqualens.models.package import export_package

    path, model = export_package(ctx, ref, user)
    return FileResponse(path, media_type="application/zip",
                        filename=f"{model.name}-{model.version}.aqlmodel",
                        headers={"X-Model-PID": f"sha256:{model.artefact_sha256}"})


def wants_png(request: Request) -> bool:
    return png_requested(request.headers.get("accept", ""))


def png_requested(accept: str) -> bool:
    """Whether an Accept header asks for the PNG overlay rather than JSON."""
    return "image/png" in accept and "application/json" not in accept


@router.post("/models/{ref}/predict")
async def predict(ref: str, request: Request, ctx: Context = Depends(get_ctx),
                  user: User | None = Depends(optional_user)) -> Response:
    """Run a model. Either multipart ``files`` (one or many images; fields ``top_k``,
    ``threshold``) — nothing is stored — or JSON ``{"image_ids": [...], "top_k", "threshold",
    "store": true}`` on catalogue images, whose results are stored as predicted annotations.
    ``Accept: image/png`` answers an overlay of the (single) image instead of JSON."""
    from aqualens.services import predict as svc

    ctype = request.headers.get("content-type", "")
    png = wants_png(request)
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise ValidationError("body is not valid JSON", field="body") from None
        if not isinstance(body, dict) or not isinstance(body.get("image_ids"), list) \
                or not body["image_ids"]:
            raise ValidationError("JSON body needs a non-empty 'image_ids' list", field="image_ids")
        ids = body["image_ids"]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValidationError("image_ids must be integers", field="image_ids")
        for i in ids:
            check_id(i, "image_ids")
        if user is None and body.get("store", True):
            from aqualens.core.errors import Unauthorized

            raise Unauthorized("storing predictions needs an API token", field="Authorization")
        return await run_in_threadpool(_predict_ids, ctx, ref, ids, user, body, png)
    form = await read_form(request)
    uploads = [u for u in form.getlist("files") + form.getlist("file") + form.getlist("data")
               if isinstance(u, UploadFile)]
    if not uploads:
        raise ValidationError("no image files sent", field="files",
                              valid="multipart parts named 'files'")
    files = [(u.filename or f"file{i}", await read_upload(ctx, u, "files"))
             for i, u in enumerate(uploads)]
    top_k, threshold = form.get("top_k", 5), form.get("threshold", 0.0)
    if png and len(files) != 1:
        raise ValidationError("Accept: image/png answers one overlay: send one file",
                              field="files")
    model, rows, arrays = await run_in_threadpool(
        svc.predict_uploads, ctx, ref, files, user, top_k=top_k, threshold=threshold)
    if png:
        from aqualens.models.overlay import overlay_png

        return Response(await run_in_threadpool(overlay_png, arrays[0], rows[0]["result"]),
                        media_type="image/png")
    return JSONResponse({"model": model_ref(model), "results": rows})


def model_ref(model: Model | registry.ModelRef) -> dict[str, Any]:
    """How a predict answer names the model it ran."""
    return {"id": model.id, "name": model.name, "version": model.version, "task": model.task,
            "pid": f"sha256:{model.artefact_sha256}"}


def _predict_ids(ctx: Context, ref: str, ids: list[int], user: User | None, body: dict,
                 png: bool) -> Response:
    from aqualens.models.overlay import overlay_png
    from aqualens.services import predict as svc

    with ctx.session() as s:
        model = registry.get_model(s, ref, user)
        s.expunge(model)
    if png and len(ids) != 1:
        raise ValidationError("Accept: image/png answers one overlay: send one image id",
                              field="image_ids")
    if body.get("store", True):
        rows = svc.predict_images(ctx, model.id, ids, top_k=body.get("top_k", 5),
                                  threshold=body.get("threshold", 0.0), owner_id=user.id)
    else:
        rows = _predict_ids_nostore(ctx, model, ids, user, body)
    bad = [r for r in rows if not r["ok"]]
    if len(bad) == len(rows):
        from aqualens.core.errors import NotFound

        raise NotFound(bad[0]["error"], field="image_ids")
    if png:
        from aqualens.catalog.tables import Image
        from aqualens.models.preprocess import decode_image

        with ctx.session() as s:
            sha = s.get(Image, ids[0]).sha256
        arr = decode_image(ctx.store.get_bytes(sha), f"image {ids[0]}")
        return Response(overlay_png(arr, rows[0]["payload"]), media_type="image/png")
    return JSONResponse({"model": model_ref(model), "results": rows})


def _predict_ids_nostore(ctx: Context, model: Model, ids: list[int], user: User | None,
                         body: dict) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from aqualens.catalog.tables import Image
    from aqualens.catalog.users import visible
    from aqualens.models.preprocess import decode_image
    from aqualens.services import predict as svc

    with ctx.session() as s:
        shas = dict(s.execute(select(Image.id, Image.sha256)
                              .where(Image.id.in_(ids), visible(Image, user))).all())
    present = [i for i in ids if i in shas]
    arrays = [decode_image(ctx.store.get_bytes(shas[i]), f"image {i}") for i in present]
    results = svc.predict_arrays(ctx, model.id, arrays, top_k=body.get("top_k", 5),
                                 threshold=body.get("threshold", 0.0)) if arrays else []
    by_id = dict(zip(present, results))
    svc.record_usage(ctx, user_id=user.id if user else None, images=len(present),
                     model_id=model.id, user=user, buffered=True)
    return [{"image_id": i, "ok": i in by_id,
             "payload": by_id[i].to_dict() if i in by_id else None,
             "error": None if i in by_id else f"no image {i} (or not readable)",
             "annotation_ids": [], "skipped": False} for i in ids]
