"""REST: ``POST /api/v1/identify`` — ranked taxa for one image (the Pl@ntNet/iNaturalist
pattern)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from starlette.datastructures import UploadFile

from aqualens.api.deps import get_ctx, optional_user
from aqualens.api.routes.models import read_form, read_upload
from aqualens.catalog.context import Context
from aqualens.catalog.tables import Model, User
from aqualens.catalog.users import visible
from aqualens.core.errors import NotFound, ValidationError

router = APIRouter(prefix="/api/v1", tags=["identify"])


def _number(value: Any, field: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{field} must be a number, got {value!r}", field=field) from None


def default_classifier(ctx: Context, user: User | None) -> int:
    """The newest classifier the caller may use (when the request names no model)."""
    with ctx.session() as s:
        mid = s.scalar(select(Model.id).where(Model.task == "classify", visible(Model, user))
                       .order_by(Model.created_at.desc(), Model.id.desc()).limit(1))
    if mid is None:
        raise NotFound("no classifier is available to identify with", field="model",
                       valid="register a classify model, or name one with 'model'")
    return mid


@router.post("/identify")
async def identify(request: Request, ctx: Context = Depends(get_ctx),
                   user: User | None = Depends(optional_user)) -> dict[str, Any]:
    """Multipart: ``image`` (one file), optional ``model`` (id, name or name@version; default
    the newest classifier you may use), ``top_k`` (5), and observation context ``lat``, ``lon``,
    ``date`` (ISO 8601), ``depth`` (m), recorded for later priors. Answers ranked taxa with their
    WoRMS AphiaID, score and the model version."""
    from aqualens.api.fastpath import resolve_model_async
    from aqualens.services import predict as svc

    form = await read_form(request)
    up = form.get("image") or form.get("file") or form.get("images")
    if not isinstance(up, UploadFile):
        raise ValidationError("send one image file in the 'image' part", field="image")
    data = await read_upload(ctx, up, "image")
    date = form.get("date")
    context = svc.identify_context(_number(form.get("lat"), "lat"),
                                   _number(form.get("lon"), "lon"),
                                   str(date) if date else None, _number(form.get("depth"), "depth"))
    top_k, _ = svc.check_options(form.get("top_k", 5), 0.0)
    ref = form.get("model") or None
    if ref is None:
        ref = await run_in_threadpool(default_classifier, ctx, user)
    model = svc.identify_model(await resolve_model_async(ctx, ref, user))
    name = up.filename or "image"
    rows = await svc.predict_uploads_batched(ctx, model, [(name, data)], user, top_k=top_k,
                                             details={"identify": True, **context})
    return svc.identify_answer(model, rows[0], context, name)
