"""Seed a test instance with images (no ingestion needed) for the API tests."""

from __future__ import annotations

from aqualens.catalog.users import create_token, create_user, get_admin
from tests.catalog.factory import make_image


def seed(ctx, n: int = 3, visibility: str = "public", collection: str = "c1",  # noqa: ANN001
         **fields) -> list[int]:  # noqa: ANN003
    """``n`` admin-owned images with blobs and thumbnails in ``collection``; returns ids."""
    with ctx.session() as s:
        admin = get_admin(s)
        return [make_image(s, admin, collection=collection, store=ctx.store,
                           visibility=visibility, **fields).id for _ in range(n)]


def other_user(ctx, name: str = "bob") -> str:  # noqa: ANN001
    """A second, non-admin user; returns their token."""
    with ctx.session() as s:
        return create_token(s, create_user(s, name))
