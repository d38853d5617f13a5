"""``aqualens init`` and ``aqualens serve``."""

from __future__ import annotations

import typer

from aqualens.cli.common import console, context, handle_errors


def register(app: typer.Typer) -> None:
    """Add the instance commands to ``app``."""

    @app.command()
    @handle_errors
    def init() -> None:
        """Create the instance (catalogue, blob store) and a local admin; print its token once."""
        from aqualens.catalog.instance import init_instance

        ctx = context()
        token = init_instance(ctx)
        if token:
            console.print(f"Instance ready in {ctx.settings.data_dir}")
            console.print("Admin API token (shown once, also in admin-token):")
            typer.echo(token)
        else:
            console.print(f"Instance in {ctx.settings.data_dir} is up to date (admin exists).")

    @app.command()
    @handle_errors
    def serve(host: str = typer.Option(None, help="Bind address (default from settings)."),
              port: int = typer.Option(None, help="Port (default 8000).")) -> None:
        """Start the REST API and web pages (http://127.0.0.1:8000, docs at /docs)."""
        import uvicorn

        from aqualens.api.app import create_app
        from aqualens.catalog.instance import init_instance

        ctx = context()
        token = init_instance(ctx)
        if token:
            console.print(f"Admin API token: {token}")
        uvicorn.run(create_app(ctx), host=host or ctx.settings.host,
                    port=port or ctx.settings.port, log_level=ctx.settings.log_level)
