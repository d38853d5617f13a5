"""Users, API tokens and visibility rules."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from aqualens.catalog.tables import ApiToken, User, utcnow
from aqualens.core.errors import Conflict, NotFound, PermissionDenied, Unauthorized, ValidationError

TOKEN_PREFIX = "aql_"


def hash_token(token: str) -> str:
    """Tokens are stored as their sha256 only."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str, *, email: str | None = None,
                country: str | None = None, is_admin: bool = False) -> User:
    """Create a user; the name must be unique."""
    name = name.strip()
    if not name:
        raise ValidationError("user name must not be empty", field="name")
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise ValidationError(f"country {country!r} is not an ISO 3166 alpha-2 code",
                              field="country", valid="two letters, e.g. ES")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} exists already", field="name")
    user = User(name=name, email=email, country=country.upper() if country else None,
                is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def create_token(session: Session, user: User, name: str = "default") -> str:
    """Issue a new API token for ``user``; the plain token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), name=name))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User:
    """The user owning ``token``; raises Unauthorized for unknown or revoked tokens."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        raise Unauthorized("unknown or revoked API token", field="Authorization",
                           valid="Authorization: Bearer <token from 'aqualens init' or 'aqualens users token'>")
    now = utcnow()
    last = row.last_used_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=now.tzinfo)  # SQLite returns naive datetimes
    # Touch at most once a minute: a write per request would serialise every reader on SQLite.
    if last is None or (now - last).total_seconds() > 60:
        row.last_used_at = now
    return row.user


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name!r}", field="user")
    return user


def get_admin(session: Session) -> User | None:
    """The first admin user, the owner of CLI actions on an embedded instance."""
    return session.scalar(select(User).where(User.is_admin.is_(True)).order_by(User.id))


def visible(cls, user: User | None):  # noqa: ANN001, ANN201 - SQLAlchemy expression
    """A WHERE clause: rows of ``cls`` that ``user`` may read (public, own, or all for admins)."""
    if user is None:
        return cls.visibility == "public"
    if user.is_admin:
        return True  # noqa: RET505 - SQLAlchemy accepts a literal true
    return or_(cls.visibility == "public", cls.owner_id == user.id)


def can_read(row, user: User | None) -> bool:  # noqa: ANN001
    return row.visibility == "public" or (user is not None and
                                          (user.is_admin or row.owner_id == user.id))


def check_write(row, user: User | None, what: str) -> None:  # noqa: ANN001
    """Raise unless ``user`` owns ``row`` or is an admin."""
    if user is None:
        raise Unauthorized(f"writing {what} needs an API token", field="Authorization")
    if not (user.is_admin or row.owner_id == user.id):
        raise PermissionDenied(f"{what} belongs to another user", field=what)


def check_visibility(value: str) -> str:
    if value not in ("private", "public"):
        raise ValidationError(f"unknown visibility {value!r}", field="visibility",
                              valid="private, public")
    return value
