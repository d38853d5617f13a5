"""FastAPI dependencies: the context, a session per request, the calling user."""

from __future__ import annotations

import json
import math
import re
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
    return bearer_token(request.headers.get("authorization"))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None without the header)."""
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
    return user_of_token(ctx, _bearer(request))


def user_of_token(ctx: Context, token: str | None) -> User | None:
    """The (detached) user a token names; None for no token; Unauthorized for a bad one."""
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
_FINITE = "finite numbers (standard JSON has no NaN or Infinity)"
# Only bodies holding one of these are parsed a second time: NUL (raw or escaped), NaN,
# Infinity, or an exponent of three digits or more (1e400 reads as inf).
_SUSPECT = re.compile(rb"\\u0000|\x00|NaN|Infinity|\d[eE][+-]?\d{3}")


async def reject_unstorable(request: Request) -> None:
    """Refuse, naming the field, what no catalogue column can hold: NUL characters in path,
    query or JSON body text, and NaN/Infinity (or overflowing numbers such as 1e400) in a JSON
    body.

    PostgreSQL refuses both (a DataError deep in a query) where SQLite would store them: checking
    at the door keeps the two tiers the same and the answer a clear 422. Installed for every
    route by :func:`aqualens.api.app.create_app`.
    """
    check_no_nul("path", request.path_params.items())
    check_no_nul("query", request.query_params.multi_items())
    if not request.headers.get("content-type", "").startswith("application/json"):
        return
    raw = await request.body()  # cached by Starlette: the route reads the same bytes
    if not _SUSPECT.search(raw):
        return
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return  # not JSON at all: the route says so itself
    found = _unstorable(doc)
    if found:
        field, nul = found
        raise ValidationError(
            f"the JSON body holds {'a NUL character' if nul else 'a non-finite number'}",
            field=field, valid=_NO_NUL if nul else _FINITE)


def check_no_nul(where: str, items: Any) -> None:
    """Refuse a path or query parameter (``(key, value)`` pairs) holding a NUL character."""
    for key, value in items:
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise ValidationError(f"{where} parameter {key!r} contains a NUL character",
                                  field=key.replace("\x00", "\\x00"), valid=_NO_NUL)


def _unstorable(value: Any, path: str = "") -> tuple[str, bool] | None:
    """(dotted path, is-NUL) of the first NUL string/key or non-finite number, or None."""
    if isinstance(value, str):
        return (path or "body", True) if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "body", False)
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        sub = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return sub.replace("\x00", "\\x00"), True
        found = _unstorable(item, sub)
        if found:
            return found
    return None
