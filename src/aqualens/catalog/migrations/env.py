"""Alembic environment: uses the connection handed over by aqualens.catalog.migrate."""

from alembic import context
from sqlalchemy import create_engine

from aqualens.catalog.tables import Base
from aqualens.catalog.text_index import include_object

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _configure(conn)
    else:
        _configure(conn)


def _configure(conn) -> None:  # noqa: ANN001
    context.configure(connection=conn, target_metadata=target_metadata,
                      render_as_batch=conn.dialect.name == "sqlite", compare_type=True,
                      # search objects made by text_index.py, not by tables.py
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


run()
