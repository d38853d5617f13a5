"""Users, API tokens (only their hash is stored) and visibility rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select, text

from aqualens.catalog.db import get_engine, session_scope
from aqualens.catalog.migrate import upgrade
from aqualens.catalog.tables import ApiToken, Collection
from aqualens.catalog.users import (TOKEN_PREFIX, can_read, check_visibility, check_write,
                                    create_token, create_user, get_admin, get_user, hash_token,
                                    user_for_token, visible)
from aqualens.core.errors import (Conflict, NotFound, PermissionDenied, Unauthorized,
                                  ValidationError)


@pytest.fixture
def db(any_db_url):
    upgrade(any_db_url)
    return any_db_url


def test_create_user_and_admin(db):
    with session_scope(db) as s:
        assert get_admin(s) is None
        bob = create_user(s, "  bob ", email="bob@example.org", country="es")
        admin = create_user(s, "root", is_admin=True)
        create_user(s, "root2", is_admin=True)
        assert bob.name == "bob" and bob.country == "ES" and not bob.is_admin
        assert get_admin(s).id == admin.id  # the first admin
        assert get_user(s, "bob").id == bob.id


@pytest.mark.parametrize(("kwargs", "exc", "field"), [
    ({"name": "   "}, ValidationError, "name"),
    ({"name": "x", "country": "Spain"}, ValidationError, "country"),
    ({"name": "x", "country": "1A"}, ValidationError, "country"),
])
def test_create_user_refuses_bad_input(db, kwargs, exc, field):
    with session_scope(db) as s, pytest.raises(exc) as info:
        create_user(s, **kwargs)
    assert info.value.field == field


def test_duplicate_user_name(db):
    with session_scope(db) as s:
        create_user(s, "ana")
    with session_scope(db) as s, pytest.raises(Conflict) as info:
        create_user(s, "ana")
    assert info.value.field == "name" and "ana" in str(info.value)


def test_unknown_user(db):
    with session_scope(db) as s, pytest.raises(NotFound) as info:
        get_user(s, "ghost")
    assert info.value.field == "user"


def test_tokens_are_stored_as_hash_only(db):
    with session_scope(db) as s:
        user = create_user(s, "carla")
        token = create_token(s, user, name="laptop")
        other = create_token(s, user)
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40 and token != other
    with get_engine(db).connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    dump = repr(rows)
    assert token not in dump and token[len(TOKEN_PREFIX):] not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump
    with session_scope(db) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "laptop"))
        assert row.token_hash == hash_token(token)
        assert row.last_used_at is None
        assert user_for_token(s, token).name == "carla"
    with session_scope(db) as s:
        assert s.scalar(select(ApiToken).where(ApiToken.name == "laptop")).last_used_at is not None


@pytest.mark.parametrize("bad", ["", "nope", TOKEN_PREFIX, "Bearer x"])
def test_unknown_token(db, bad):
    with session_scope(db) as s, pytest.raises(Unauthorized) as info:
        user_for_token(s, bad)
    assert info.value.field == "Authorization"
    assert "Bearer" in info.value.valid


def test_revoked_token(db):
    with session_scope(db) as s:
        token = create_token(s, create_user(s, "dan"))
        s.scalar(select(ApiToken)).revoked = True
    with session_scope(db) as s, pytest.raises(Unauthorized):
        user_for_token(s, token)


def test_visibility_rules(db):
    with session_scope(db) as s:
        admin = create_user(s, "admin", is_admin=True)
        alice = create_user(s, "alice")
        bob = create_user(s, "bob")
        rows = {
            "alice-private": Collection(name="a1", owner_id=alice.id, visibility="private"),
            "alice-public": Collection(name="a2", owner_id=alice.id, visibility="public"),
            "bob-private": Collection(name="b1", owner_id=bob.id, visibility="private"),
        }
        s.add_all(rows.values())
        s.flush()

        def seen(user):
            return {c.name for c in s.scalars(select(Collection).where(visible(Collection, user)))}

        assert seen(None) == {"a2"}
        assert seen(alice) == {"a1", "a2"}
        assert seen(bob) == {"a2", "b1"}
        assert seen(admin) == {"a1", "a2", "b1"}

        assert can_read(rows["alice-public"], None)
        assert not can_read(rows["alice-private"], None)
        assert not can_read(rows["alice-private"], bob)
        assert can_read(rows["alice-private"], alice) and can_read(rows["alice-private"], admin)

        check_write(rows["alice-private"], alice, "collection")
        check_write(rows["alice-private"], admin, "collection")
        with pytest.raises(PermissionDenied) as info:
            check_write(rows["alice-public"], bob, "collection")  # public is read-only to others
        assert info.value.field == "collection"
        with pytest.raises(Unauthorized):
            check_write(rows["alice-public"], None, "collection")


def test_check_visibility():
    assert check_visibility("public") == "public"
    with pytest.raises(ValidationError) as info:
        check_visibility("secret")
    assert info.value.field == "visibility" and "private" in info.value.valid
