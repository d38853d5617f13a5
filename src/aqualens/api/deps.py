"""FastAPI dependencies: the context, a session per request, the calling user."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aqualens.catalog.context import Context
from aqualens.catalog.tables import User
from aqualens.catalog.users import user_for_token
from aqualens.core.errors import Unauthorized


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
