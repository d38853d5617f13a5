"""Bulk inserts for the hot write paths (a batch job stores an annotation per image).

SQLAlchemy's Core ``executemany`` builds every row's parameters through its generic machinery
(``construct_params`` and a processor lookup per value): about 10 µs a row, more than SQLite
needs to insert it. :func:`insert_rows` compiles the INSERT once per (table, columns, dialect)
and applies each column's own bind processor (JSON, DateTime, Boolean: SQLAlchemy's, so values
are stored exactly as the ORM would store them) in one pass, then hands the rows to the driver's
``executemany`` — or, on PostgreSQL through psycopg, to one ``COPY ... FROM STDIN`` (the
driver's ``executemany`` would send and the server execute one INSERT per row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

_compiled: dict[tuple, tuple[str, list[str], list[Callable | None], bool]] = {}


def _plan(table: Table, columns: Sequence[str], dialect: Dialect
          ) -> tuple[str, list[str], list[Callable | None], bool]:
    key = (table.fullname, tuple(columns), dialect.name, dialect.driver)
    plan = _compiled.get(key)
    if plan is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        names = list(compiled.positiontup) if compiled.positional else list(columns)
        procs = [table.c[name].type._cached_bind_processor(dialect) for name in names]
        plan = _compiled[key] = (str(compiled), names, procs, bool(compiled.positional))
    return plan


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys: every column to set) into ``table`` in the
    session's transaction, with one driver ``executemany``."""
    if not rows:
        return
    conn = session.connection()
    sql, names, procs, positional = _plan(table, list(rows[0]), conn.dialect)
    columns = []
    for name, proc in zip(names, procs):
        values = [row[name] for row in rows]
        if proc is None:
            columns.append(values)
        elif all(v is values[0] for v in values):  # one timestamp / owner for the batch
            columns.append([proc(values[0])] * len(values))
        else:
            columns.append([proc(v) for v in values])
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_rows(conn, table, names, zip(*columns))
        return
    if positional:
        params: list[Any] = list(zip(*columns))
    else:
        params = [dict(zip(names, values)) for values in zip(*columns)]
    conn.exec_driver_sql(sql, params)


def _copy_rows(conn: Connection, table: Table, names: list[str], rows: Iterable[tuple]) -> None:
    """``COPY table (names) FROM STDIN`` on the session's own connection, so the rows belong to
    its transaction. Values are the bind-processed ones (psycopg dumps them as for an INSERT)."""
    prep = conn.dialect.identifier_preparer
    cols = ", ".join(prep.quote(n) for n in names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(f"COPY {prep.format_table(table)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()
