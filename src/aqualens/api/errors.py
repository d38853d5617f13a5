"""The one place where AquaLens errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from aqualens.core import errors as E

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


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(E.AquaLensError)
    async def _aqualens(_request: Request, exc: E.AquaLensError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append({"field": loc, "message": err.get("msg", "invalid")})
        first = problems[0] if problems else {"field": None, "message": "invalid request"}
        return JSONResponse({"error": "invalid", "field": first["field"],
                             "message": f"{first['field']}: {first['message']}",
                             "details": problems}, status_code=422)
