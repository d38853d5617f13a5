"""Health and instance information."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from aqualens import __version__
from aqualens.api.deps import current_user, get_ctx
from aqualens.catalog.context import Context
from aqualens.catalog.tables import User

router = APIRouter(prefix="/api/v1", tags=["system"])


@router.get("/health")
def health(ctx: Context = Depends(get_ctx)) -> dict:
    """Liveness: version and the backends in use (no secrets)."""
    return {"status": "ok", "version": __version__,
            "database": ctx.db_url.split(":", 1)[0], "storage": ctx.settings.blob_url.split(":", 1)[0]}


@router.get("/me")
def me(user: User = Depends(current_user)) -> dict:
    """The calling user."""
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin, "country": user.country}
