"""FastAPI dependencies: the context, a session per request, the calling user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.catalog.users import user_for_token
from aqualens.core.errors import Unauthorized, ValidationError


def get_ctx(request: Request) -> Context:
    """The instance context the app was built with."""
    return request.app.state.ctx


def get_session(ctx: Context = Depends(get_ctx)) -> Iterator[Session]:
    """A session per request; committed by the route when it writes, rolled back otherwise."""
    session = ctx.new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", field="Authorization")
    return token.strip()


def optional_user(request: Request, ctx: Context = Depends(get_ctx)) -> User | None:
    """The caller, or None for anonymous requests (which see public rows only).

    The token is resolved in its own short transaction and the user detached, so the request's
    session holds no write lock on SQLite while the route runs (the ``last_used_at`` touch would
    otherwise lock out every other writer until the response is sent).
    """
    token = _bearer(request)
    if not token:
        return None
    with ctx.session() as session:
        user = user_for_token(session, token)
        session.expunge(user)
    return user


def current_user(user: User | None = Depends(optional_user)) -> User:
    """The caller; anonymous requests get 401."""
    if user is None:
        raise Unauthorized("this endpoint needs an API token", field="Authorization",
                           valid="Authorization: Bearer <token>")
    return user


_NO_NUL = "text without NUL (\\x00) characters"


async def reject_nul(request: Request) -> None:
    """Refuse NUL characters in path, query and JSON body text, naming the field.

    PostgreSQL cannot store them in text (the driver raises a DataError), SQLite silently would:
    refusing them at the door keeps both tiers the same and the answer a clear 422.
    """
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for key, value in params.multi_items() if where == "query" else params.items():
            if "\x00" in key or (isinstance(value, str) and "\x00" in value):
                raise ValidationError(f"{where} parameter {key!r} contains a NUL character",
                                      field=key.replace("\x00", "\\x00"), valid=_NO_NUL)
    if request.headers.get("content-type", "").startswith("application/json"):
        raw = await request.body()  # cached by Starlette; the route reads the same bytes
        if b"\\u0000" in raw or b"\x00" in raw:
            try:
                field = _nul_field(json.loads(raw))
            except ValueError:
                field = "body"  # not JSON at all: the route says so itself
            if field:
                raise ValidationError("the JSON body contains a NUL character", field=field,
                                      valid=_NO_NUL)


def _nul_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, or None."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        sub = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return sub.replace("\x00", "\\x00")
        found = _nul_field(item, sub)
        if found:
            return found
    return None
