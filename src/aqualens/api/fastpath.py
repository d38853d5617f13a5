"""The predict fast path: ``POST /api/v1/models/{ref}/predict`` with uploaded files, answered
in JSON, handled in plain ASGI in front of the FastAPI app.

This is the request a field app or an identify client sends many times a second, usually with
one small image. Through FastAPI it costs about 2 ms of framework work per request (dependency
injection, Starlette's form parsing with a spooled file per part, two thread-pool hops), several
times what a small model needs. Here the same request is read and parsed once
(:mod:`aqualens.api.multipart`), the caller and the model are looked up as the route does (the
model lookup is reused for ``models.resolve_cache_seconds``), and decoding plus inference run in
the model's batcher thread, which runs concurrent requests as one batch
(:func:`aqualens.services.predict.predict_uploads_batched`).

Everything else — catalogue image ids, ``Accept: image/png`` overlays, other content types —
falls through to the FastAPI route, which stays the reference: answers and errors are the same
(the route's tests run through this path).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread

from aqualens.core.errors import AquaLensError, ValidationError

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]
PATH = re.compile(r"^/api/v1/models/([^/]+)/predict$")
FILE_FIELDS = ("files", "file", "data")
# Larger bodies (and bodies of unknown length) go to the route, which spools them to disk.
MAX_BODY = 8 * 1024 * 1024


class FastPredict:
    """ASGI middleware taking over the upload form of the predict route (see module doc)."""

    def __init__(self, app: ASGIApp, get_ctx: Callable[[], Any]) -> None:
        self.app, self.get_ctx = app, get_ctx

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        match = PATH.match(scope.get("path", "")) if scope["type"] == "http" \
            and scope.get("method") == "POST" else None
        headers = _headers(scope) if match else {}
        if match is None or not _ours(headers):
            await self.app(scope, receive, send)
            return
        try:
            # scope["path"] is already percent-decoded, as the route's path parameter is.
            body = await self._answer(match.group(1), headers, receive)
        except AquaLensError as exc:
            from aqualens.api.errors import error_response

            await error_response(exc)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, ref: str, headers: dict[str, str], receive: Callable) -> bytes:
        from aqualens.api.deps import bearer_token, check_no_nul, user_of_token
        from aqualens.api.multipart import parse_multipart, read_body
        from aqualens.api.routes.models import model_ref
        from aqualens.core.errors import TooLarge
        from aqualens.services.predict import check_options, predict_uploads_batched

        ctx = self.get_ctx()
        check_no_nul("path", [("ref", ref)])
        token = bearer_token(headers.get("authorization"))
        user = await to_thread.run_sync(user_of_token, ctx, token) if token else None
        body = await read_body(receive, MAX_BODY, int(headers["content-length"]))
        form = parse_multipart(body, headers.get("content-type", ""))
        limit = ctx.settings.limits.max_file_bytes
        files = []
        for i, part in enumerate(p for p in form.files if p.field in FILE_FIELDS):
            name = part.filename or f"file{i}"
            if len(part.data) > limit:
                raise TooLarge(f"{part.filename or 'files'} is larger than {limit} bytes",
                               field=part.filename or "files")
            files.append((name, part.data))
        if not files:
            raise ValidationError("no image files sent", field="files",
                                  valid="multipart parts named 'files'")
        top_k, threshold = check_options(form.fields.get("top_k", 5),
                                         form.fields.get("threshold", 0.0))
        model = await resolve_model_async(ctx, ref, user)
        rows = await predict_uploads_batched(ctx, model, files, user, top_k=top_k,
                                             threshold=threshold)
        return json.dumps({"model": model_ref(model), "results": rows},
                          separators=(",", ":")).encode()


async def resolve_model_async(ctx: Any, ref: str | int, user: Any) -> Any:
    """The model lookup of the per-request predict paths (``resolve_model_cached``): a cache
    hit is answered on the event loop, a miss reads the catalogue in a thread (it never blocks
    the loop on the database)."""
    from aqualens.models.registry import cached_model, resolve_model_cached

    hit = cached_model(ctx, ref, user)
    if hit is not None:
        return hit
    return await to_thread.run_sync(resolve_model_cached, ctx, ref, user)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _ours(headers: dict[str, str]) -> bool:
    """A small upload form of known length answered in JSON (not an overlay)."""
    from aqualens.api.routes.models import png_requested

    if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return False
    length = headers.get("content-length", "")
    if not length.isdigit() or int(length) > MAX_BODY:
        return False
    return not png_requested(headers.get("accept", ""))
