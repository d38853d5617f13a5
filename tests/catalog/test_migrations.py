"""Alembic migrations on SQLite and PostgreSQL: upgrade, match the tables, downgrade."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from aqualens.catalog.db import get_engine
from aqualens.catalog.migrate import alembic_config, current_revision, upgrade
from aqualens.catalog.tables import Base
from aqualens.catalog.text_index import ensure_text_index, include_object


def _head(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_upgrade_creates_every_table(any_db_url):
    assert current_revision(any_db_url) is None
    upgrade(any_db_url)
    assert current_revision(any_db_url) == _head(any_db_url)
    tables = set(inspect(get_engine(any_db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(any_db_url)  # a second run is a no-op
    assert current_revision(any_db_url) == _head(any_db_url)


def test_migration_matches_the_tables(any_db_url):
    """The migration is regenerated from tables.py; a forgotten `make migration` shows here."""
    upgrade(any_db_url)
    ensure_text_index(get_engine(any_db_url))  # backend-specific objects must not show up
    with get_engine(any_db_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "include_object": include_object})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"run `make migration`; schema differs from tables.py: {diff}"


def test_downgrade_and_upgrade_again(any_db_url):
    from alembic import command

    upgrade(any_db_url)
    engine = get_engine(any_db_url)
    cfg = alembic_config(any_db_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    upgrade(any_db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_sqlite_wal_and_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'deep' / 'catalog.sqlite'}"
    upgrade(url)  # also creates the missing parent folder
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_foreign_keys_are_enforced(any_db_url):
    upgrade(any_db_url)
    with pytest.raises(IntegrityError), get_engine(any_db_url).begin() as conn:
        conn.execute(text("INSERT INTO api_tokens (user_id, token_hash, name, revoked) "
                          "VALUES (12345, :h, 'x', false)"), {"h": "0" * 64})


def test_unsupported_database_url():
    from aqualens.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        get_engine("mysql://u@h/db")
    assert info.value.field == "AQUALENS_DATABASE_URL"
