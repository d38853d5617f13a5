"""The FastAPI application factory."""

from __future__ import annotations

from importlib import import_module

from fastapi import Depends, FastAPI

from aqualens import __version__
from aqualens.api import errors
from aqualens.api.deps import reject_unstorable
from aqualens.catalog.context import Context

# Each module exposes ``router``; listed here so the app is assembled in one visible place.
ROUTERS = [
    "aqualens.api.routes.system",
    "aqualens.api.routes.collections",
    "aqualens.api.routes.images",
    "aqualens.api.routes.uploads",
    "aqualens.api.routes.annotations",
    "aqualens.api.routes.labels",
    "aqualens.api.routes.search",
    "aqualens.api.routes.interchange",
    "aqualens.api.routes.jobs",
    "aqualens.api.routes.services",
    "aqualens.web.pages",
    "aqualens.api.routes.models",
    "aqualens.api.routes.identify",
    "aqualens.api.routes.deepaas_v2",
    "aqualens.api.routes.training",
]


def create_app(ctx: Context | None = None) -> FastAPI:
    """Build the app for ``ctx`` (default: settings from the environment)."""
    ctx = ctx or Context()
    app = FastAPI(title="AquaLens", version=__version__,
                  description="Open AI image analysis for aquatic science.",
                  openapi_url="/api/v1/openapi.json", docs_url="/docs",
                  dependencies=[Depends(reject_unstorable)])
    app.state.ctx = ctx
    errors.install(app)
    for name in ROUTERS:
        app.include_router(import_module(name).router)
    from aqualens.api.fastpath import FastPredict

    app.add_middleware(FastPredict, get_ctx=lambda: app.state.ctx)
    return app
