"""REST routes for annotations (placeholder until written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["annotations"])
