"""The handle every layer above uses: settings, a database session factory and the blob store.

Task functions receive settings (or a data dir / URLs) and build a Context in the worker; they
never receive ORM objects or sessions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from aqualens.catalog.db import session_factory, session_scope
from aqualens.core.config import Settings, get_settings

if TYPE_CHECKING:
    from aqualens.storage.base import BlobStore


@dataclass
class Context:
    """Settings plus lazily opened catalogue and store."""

    settings: Settings = field(default_factory=get_settings)

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @property
    def store(self) -> BlobStore:
        from aqualens.storage import open_store

        return open_store(self.settings)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction on the catalogue: commit on success, roll back on error."""
        with session_scope(self.db_url) as s:
            yield s

    def new_session(self) -> Session:
        """An unmanaged session (the API dependency closes it)."""
        return session_factory(self.db_url)()
