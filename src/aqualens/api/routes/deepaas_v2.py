"""DEEPaaS v2-compatible routes, so clients written for DEEPaaS talk to AquaLens unchanged.

Every registered model appears here, whatever its runtime: DEEPaaS modules with their own
metadata, arguments and answers; ONNX/TorchScript models with the arguments ``data`` (file),
``top_k``, ``threshold`` and ``accept`` (application/json or image/png). Trainings are Job rows
(see :mod:`aqualens.services.deepaas_train`). ``GET /v2/swagger.json`` documents each model's
declared arguments (webargs/marshmallow fields → OpenAPI parameters).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from aqualens import __version__
from aqualens.api.deps import current_user, get_ctx, optional_user
from aqualens.api.routes.models import read_upload, wants_png
from aqualens.catalog.context import Context
from aqualens.catalog.tables import Model, User
from aqualens.core.errors import ModelError, ValidationError
from aqualens.models import registry, warm

router = APIRouter(tags=["deepaas-v2"])
PLATFORM_ACCEPT = ["application/json", "image/png"]


def _version_doc() -> dict[str, Any]:
    return {"version": "stable", "id": "v2",
            "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}]}


@router.get("/", include_in_schema=False)
def root(request: Request) -> Response:
    """DEEPaaS's root (API versions). Only reached when no web page claims ``/``."""
    if "text/html" in request.headers.get("accept", ""):
        return Response(status_code=307, headers={"Location": "/docs"})
    return JSONResponse({"versions": [_version_doc()], "links": [
        {"rel": "help", "type": "text/html", "href": "/docs"},
        {"rel": "describedby", "type": "application/json", "href": "/v2/swagger.json"}]})


@router.get("/v2/")
def v2_version() -> dict[str, Any]:
    """V2 API version information (as deepaas-run)."""
    return _version_doc()


def _model(ctx: Context, name: str, user: User | None) -> Model:
    with ctx.session() as s:
        m = registry.get_model(s, name, user)
        s.expunge(m)
        return m


def _runtime(ctx: Context, model: Model | registry.ModelRef):  # noqa: ANN202
    return warm.runtime_for(ctx, model)


def _metadata(ctx: Context, model: Model, href: str) -> dict[str, Any]:
    m: dict[str, Any] = {"id": model.name, "name": model.name,
                         "links": [{"rel": "self", "href": href}]}
    if model.runtime == "deepaas":
        m.update(_runtime(ctx, model).metadata())
        return m
    with ctx.session() as s:
        owner = s.get(User, model.owner_id)
    m.update({"description": model.description or f"{model.task} model {model.name}",
              "license": model.licence, "author": owner.name if owner else None,
              "version": model.version, "url": f"/api/v1/models/{model.id}",
              "task": model.task, "runtime": model.runtime,
              "pid": f"sha256:{model.artefact_sha256}", "keywords": model.keywords,
              "labels": model.labels})
    return m


def _visible_models(ctx: Context, user: User | None) -> list[Model]:
    with ctx.session() as s:
        rows = registry.list_models(s, user, latest_only=True, limit=1000)
        for r in rows:
            s.expunge(r)
        return rows


@router.get("/v2/models/")
def v2_models(request: Request, ctx: Context = Depends(get_ctx),
              user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """Loaded models and their metadata (every runtime; latest version of each name)."""
    base = request.url.path.rstrip("/")
    return {"models": [_metadata(ctx, m, f"{base}/{m.name}")
                       for m in _visible_models(ctx, user)]}


@router.get("/v2/models/{name}/")
def v2_model(name: str, request: Request, ctx: Context = Depends(get_ctx),
             user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """One model's metadata, in DEEPaaS's shape."""
    model = _model(ctx, name, user)
    return _metadata(ctx, model, request.url.path.rstrip("/"))


async def _form(request: Request):  # noqa: ANN202
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            return await request.form(max_files=1000, max_fields=1000)
        except Exception as exc:  # noqa: BLE001
            raise ValidationError(f"malformed multipart body: {exc}", field="body") from None
    return None


@router.post("/v2/models/{name}/predict/")
async def v2_predict(name: str, request: Request, ctx: Context = Depends(get_ctx),
                     user: User | None = Depends(optional_user)) -> Response:
    """Predict with the arguments the model declares (query string, form or headers)."""
    # The light lookup (a ModelRef): the runtime comes from the warm cache, no ORM row needed.
    model = await run_in_threadpool(registry.resolve_model, ctx, name, user)
    form = await _form(request)
    if model.runtime == "deepaas":
        return await _predict_module(ctx, model, request, form, user)
    return await _predict_platform(ctx, model, request, form, user)


async def _predict_module(ctx: Context, model: registry.ModelRef, request: Request,
                          form, user: User | None) -> Response:  # noqa: ANN001
    from aqualens.services.predict import record_usage

    rt = await run_in_threadpool(_runtime, ctx, model)
    formd = form if form is not None else {}
    query = request.query_params

    def getlist(src: str, key: str) -> list:
        return (query if src == "query" else formd).getlist(key) if src != "headers" else \
            [request.headers.get(key)]

    args = rt.parse_args("predict", query=query, form=formd, headers=request.headers,
                         getlist=getlist)
    tmp_files: list[str] = []
    nbytes = 0
    try:
        from deepaas.model.v2.wrapper import UploadedFile

        for key, value in list(args.items()):
            if isinstance(value, UploadFile):
                data = await read_upload(ctx, value, key)
                nbytes += len(data)
                fd, path = tempfile.mkstemp(prefix="aql-deepaas-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                tmp_files.append(path)
                args[key] = UploadedFile(name=key, filename=path,
                                         content_type=value.content_type,
                                         original_filename=value.filename)
        ret = await run_in_threadpool(lambda: rt.call_predict(**args))
    finally:
        for path in tmp_files:
            Path(path).unlink(missing_ok=True)
    await run_in_threadpool(lambda: record_usage(
        ctx, user_id=user.id if user else None, images=max(len(tmp_files), 1), nbytes=nbytes,
        model_id=model.id, details={"route": "deepaas-v2"}, user=user, buffered=True))
    accept = args.get("accept", "application/json")
    if accept not in ("application/json", "*/*"):
        body = ret.encode() if isinstance(ret, str) else ret
        if not isinstance(body, (bytes, bytearray)):
            raise ModelError(f"module answered {type(ret).__name__} for Accept: {accept}",
                             field="accept")
        return Response(bytes(body), media_type=accept)
    if rt.response_schema is not None:
        await run_in_threadpool(rt.validate_response, ret)
        return JSONResponse(ret)
    return JSONResponse({"status": "OK", "predictions": ret})


async def _predict_platform(ctx: Context, model: registry.ModelRef, request: Request,
                            form, user: User | None) -> Response:  # noqa: ANN001
    from aqualens.models.overlay import overlay_png
    from aqualens.services import predict as svc

    values: dict[str, Any] = dict(request.query_params)
    files = []
    if form is not None:
        for key in ("data", "files", "file"):
            files += [u for u in form.getlist(key) if isinstance(u, UploadFile)]
        values.update({k: v for k, v in form.items() if not isinstance(v, UploadFile)})
    if not files:
        raise ValidationError("data: Missing data for required field.", field="data",
                              details={"data": ["Missing data for required field."]})
    accept = request.headers.get("accept") or "application/json"
    if accept not in ("*/*", *PLATFORM_ACCEPT) and "," not in accept:
        raise ValidationError(f"accept: Must be one of: {', '.join(PLATFORM_ACCEPT)}.",
                              field="accept",
                              details={"accept": [f"Must be one of: {', '.join(PLATFORM_ACCEPT)}."]})
    png = wants_png(request)
    if png and len(files) != 1:
        raise ValidationError("Accept: image/png answers one overlay: send one file",
                              field="data")
    payload = [(u.filename or "data", await read_upload(ctx, u, "data")) for u in files]
    _, rows, arrays = await run_in_threadpool(
        lambda: svc.predict_uploads(ctx, model, payload, user,
                                    top_k=values.get("top_k", 5),
                                    threshold=values.get("threshold", 0.0),
                                    details={"route": "deepaas-v2"}))
    if png:
        return Response(await run_in_threadpool(overlay_png, arrays[0], rows[0]["result"]),
                        media_type="image/png")
    preds = rows[0]["result"] if len(rows) == 1 else [r["result"] for r in rows]
    return JSONResponse({"status": "OK", "predictions": preds})


# ---- training ------------------------------------------------------------------------------


@router.post("/v2/models/{name}/train/")
async def v2_train(name: str, request: Request, ctx: Context = Depends(get_ctx),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    """Start a training (a persistent job); answers the running training record."""
    from aqualens.services.deepaas_train import start_training

    model = await run_in_threadpool(_model, ctx, name, user)
    form = await _form(request)
    formd = form if form is not None else {}
    files: dict[str, tuple[str, str, bytes]] = {}
    if model.runtime == "deepaas":
        rt = await run_in_threadpool(_runtime, ctx, model)
        query = request.query_params
        args = rt.parse_args("train", query=query, form=formd, headers=request.headers,
                             getlist=lambda src, key: (query if src == "query" else formd)
                             .getlist(key))
        for key, value in list(args.items()):
            if isinstance(value, UploadFile):
                files[key] = (value.filename or key, value.content_type or "",
                              await read_upload(ctx, value, key))
                del args[key]
        args = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in args.items()}
    else:
        args = {**dict(request.query_params),
                **{k: v for k, v in formd.items() if not isinstance(v, UploadFile)}}
    return await run_in_threadpool(start_training, ctx, model, user, args, files)


@router.get("/v2/models/{name}/train/")
def v2_trainings(name: str, ctx: Context = Depends(get_ctx),
                 user: User | None = Depends(optional_user)) -> list[dict[str, Any]]:
    """Every training of the model (running or finished), from the job table."""
    from aqualens.services.deepaas_train import list_trainings

    return list_trainings(ctx, _model(ctx, name, user), user)


@router.get("/v2/models/{name}/train/{uuid}")
def v2_training(name: str, uuid: str, ctx: Context = Depends(get_ctx),
                user: User | None = Depends(optional_user)) -> dict[str, Any]:
    from aqualens.services.deepaas_train import get_training

    return get_training(ctx, _model(ctx, name, user), uuid, user)


@router.delete("/v2/models/{name}/train/{uuid}")
def v2_cancel(name: str, uuid: str, ctx: Context = Depends(get_ctx),
              user: User = Depends(current_user)) -> dict[str, Any]:
    """Cancel a training (the training process is killed); answers its record."""
    from aqualens.services.deepaas_train import cancel_training

    return cancel_training(ctx, _model(ctx, name, user), uuid, user)


# ---- OpenAPI from the declared arguments ---------------------------------------------------


def field_parameter(name: str, fld: Any) -> dict[str, Any]:
    """One marshmallow/webargs field as an OpenAPI 3 parameter (or multipart property)."""
    from marshmallow import fields as mf

    from aqualens.models.deepaas_adapter import field_location, is_file_field

    meta = dict(getattr(fld, "metadata", None) or {})
    types = [(mf.Integer, "integer"), (mf.Float, "number"), (mf.Number, "number"),
             (mf.Boolean, "boolean"), (mf.List, "array"), (mf.Date, "string"),
             (mf.DateTime, "string"), (mf.String, "string")]
    schema: dict[str, Any] = {"type": next((t for c, t in types if isinstance(fld, c)),
                                           "string")}
    if is_file_field(fld):
        schema = {"type": "string", "format": "binary"}
    choices = getattr(getattr(fld, "validate", None), "choices", None) or meta.get("enum")
    if choices:
        schema["enum"] = list(choices)
    default = getattr(fld, "load_default", None)
    if default is not None and not callable(default) and repr(default) != "<marshmallow.missing>":
        schema["default"] = default
    loc = field_location(fld)
    return {"name": name, "in": "header" if loc == "headers" else
            ("formData" if loc in ("form", "files") or is_file_field(fld) else "query"),
            "required": bool(getattr(fld, "required", False)),
            "description": meta.get("description") or meta.get("descripton") or "",
            "schema": schema}


def _operation(params: list[dict[str, Any]], summary: str) -> dict[str, Any]:
    query = [{k: v for k, v in p.items()} for p in params if p["in"] in ("query", "header")]
    form = [p for p in params if p["in"] == "formData"]
    op: dict[str, Any] = {"summary": summary, "parameters": query,
                          "responses": {"200": {"description": "OK"},
                                        "422": {"description": "invalid arguments"}}}
    if form:
        op["requestBody"] = {"content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": {p["name"]: p["schema"] for p in form},
            "required": [p["name"] for p in form if p["required"]]}}}}
    return op


@router.get("/v2/swagger.json")
def v2_openapi(ctx: Context = Depends(get_ctx),
               user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """OpenAPI 3 for the v2 routes, with each model's declared predict and train arguments."""
    paths: dict[str, Any] = {}
    for model in _visible_models(ctx, user):
        base = f"/v2/models/{model.name}"
        paths[f"{base}/"] = {"get": {"summary": "Return model's metadata",
                                     "responses": {"200": {"description": "OK"}}}}
        if model.runtime == "deepaas":
            try:
                rt = _runtime(ctx, model)
            except Exception:  # noqa: BLE001 - one broken module must not hide the others
                continue
            pred = [field_parameter(k, f) for k, f in rt.predict_args.items()]
            train = [field_parameter(k, f) for k, f in rt.train_args.items()]
        else:
            pred = [{"name": "data", "in": "formData", "required": True,
                     "description": "image file(s)", "schema": {"type": "string",
                                                                "format": "binary"}},
                    {"name": "top_k", "in": "query", "required": False, "description": "",
                     "schema": {"type": "integer", "default": 5}},
                    {"name": "threshold", "in": "query", "required": False, "description": "",
                     "schema": {"type": "number", "default": 0.0}},
                    {"name": "accept", "in": "header", "required": False, "description": "",
                     "schema": {"type": "string", "enum": PLATFORM_ACCEPT}}]
            train = []
        paths[f"{base}/predict/"] = {"post": _operation(pred, "Make a prediction")}
        paths[f"{base}/train/"] = {"post": _operation(train, "Retrain model"),
                                   "get": {"summary": "List trainings",
                                           "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.3", "info": {"title": "AquaLens DEEPaaS v2-compatible API",
                                         "version": __version__}, "paths": paths}
