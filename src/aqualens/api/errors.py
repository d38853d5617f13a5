"""The one place where AquaLens errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from aqualens.core import errors as E

log = logging.getLogger(__name__)

STATUS: dict[type[E.AquaLensError], int] = {
    E.TooLarge: 413,
    E.UnsupportedMedia: 415,
    E.FormatError: 422,
    E.ValidationError: 422,
    E.NotFound: 404,
    E.Conflict: 409,
    E.Unauthorized: 401,
    E.PermissionDenied: 403,
    E.IntegrityError: 422,
    E.ConfigError: 500,
    E.StorageError: 503,
    E.ModelError: 422,
    E.JobError: 409,
}


def status_for(exc: E.AquaLensError) -> int:
    """The HTTP status for an AquaLens error: the most specific class in STATUS wins."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_response(exc: E.AquaLensError) -> JSONResponse:
    """The HTTP answer to an AquaLens error (routes, and the fast paths in front of them)."""
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(exc.to_dict(), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(E.AquaLensError)
    async def _aqualens(_request: Request, exc: E.AquaLensError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            parts = [str(p) for p in err.get("loc", ())]
            # ("body",) alone means the whole body (missing, not an object, not JSON): say so.
            loc = ".".join(p for p in parts if p != "body") or (parts[0] if parts else "request")
            problem = {"field": loc, "message": err.get("msg", "invalid")}
            valid = _valid_from(err.get("ctx") or {})
            if valid:
                problem["valid"] = valid
            problems.append(problem)
        first = problems[0] if problems else {"field": "request", "message": "invalid request"}
        out = {"error": "invalid", "field": first["field"],
               "message": f"{first['field']}: {first['message']}", "details": problems}
        if first.get("valid"):
            out["valid"] = first["valid"]
        return JSONResponse(out, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Raised by the framework itself, not by our routes (they raise AquaLens errors): an
        # unknown path (404), a wrong method (405), a body it could not parse (400).
        field = {400: "body", 404: "path", 405: "method"}.get(exc.status_code)
        body = {"error": _HTTP_CODES.get(exc.status_code, "http"), "field": field,
                "message": f"{field}: {exc.detail}" if field else str(exc.detail)}
        if exc.status_code == 405:
            body["valid"] = (exc.headers or {}).get("Allow") or None
        return JSONResponse({k: v for k, v in body.items() if v is not None},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(sa_exc.DataError)
    async def _data(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        return _database_refused(request, exc, 422, "invalid")

    @app.exception_handler(sa_exc.IntegrityError)
    async def _integrity(request: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        return _database_refused(request, exc, 409, "conflict")


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "max_length": "length <=",
           "min_length": "length >=", "expected": "", "pattern": "matching"}


def _valid_from(ctx: dict) -> str | None:
    """What pydantic's error context says is valid (bounds, choices), e.g. ">= 0, <= 100"."""
    parts = [f"{_BOUNDS[k]} {v}".strip() for k, v in ctx.items() if k in _BOUNDS]
    return ", ".join(parts) or None


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media"}


def _database_refused(request: Request, exc: sa_exc.DBAPIError, status: int,
                      code: str) -> JSONResponse:
    """The database refused a value (out of range, too long, a broken reference or uniqueness).

    This is a class of bad input that should have been caught by the function validating the
    field; the safety net keeps it a 4xx and logs it with its traceback so the missing check can
    be added. The field comes from PostgreSQL's diagnostics where it gives one.
    """
    log.warning("database refused a value on %s %s: %s", request.method, request.url.path,
                exc.orig, exc_info=exc)
    diag = getattr(exc.orig, "diag", None)
    field = (getattr(diag, "column_name", None) or getattr(diag, "constraint_name", None)
             or "request")
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
    valid = ("integers up to 2147483647 and text within the documented length"
             if status == 422 else "values that match existing rows and are unique")
    return JSONResponse({"error": code, "field": field, "message": f"{field}: {first}",
                         "valid": valid}, status_code=status)
