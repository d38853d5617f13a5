"""Engines and sessions for SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so the server, a CLI ingest and
Dask workers can share one file. Engines are cached per URL and built on first use only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from aqualens.core.errors import ConfigError

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def json_dumps(value: object) -> str:
    """JSON columns are written with orjson (5-10x the standard encoder: a batch job writes a
    JSON payload per image); what orjson refuses (integers beyond 64 bits) goes through ``json``.
    Non-finite floats are written as null (PostgreSQL refuses NaN in JSON)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> object:
    """Read a JSON column (orjson; the standard decoder for older rows holding NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def get_engine(url: str) -> Engine:
    """A cached engine for ``url``; SQLite files get their parent folder created."""
    url = normalise_url(url)
    with _lock:
        if url in _engines:
            return _engines[url]
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                   json_serializer=json_dumps, json_deserializer=json_loads)
            event.listen(engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql"):
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                                   json_serializer=json_dumps, json_deserializer=json_loads)
        else:
            raise ConfigError(f"unsupported database URL {url!r}", field="AQUALENS_DATABASE_URL",
                              valid="sqlite:///path or postgresql://user@host/db")
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    """A sessionmaker bound to the engine for ``url``."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
