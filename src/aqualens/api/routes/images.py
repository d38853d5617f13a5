"""REST routes for images (placeholder until written)."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["images"])
