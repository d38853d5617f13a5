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
              port: int = typer.Option(None, help="Port (default 8000)."),
              run_jobs: bool = typer.Option(True, "--jobs/--no-jobs",
                                            help="Run the job runner and service triggers here "
                                                 "(off when 'aqualens runner' runs apart).")
              ) -> None:
        """Start the REST API and web pages (http://127.0.0.1:8000, docs at /docs)."""
        import uvicorn

        from aqualens.api.app import create_app
        from aqualens.catalog.instance import init_instance

        ctx = context()
        token = init_instance(ctx)
        if token:
            console.print(f"Admin API token: {token}")
        # The embedded tier "just works": jobs and service triggers run in this process (on a
        # LocalCluster, or the scheduler at AQUALENS_DASK__ADDRESS).
        from aqualens.processing.runner import Runner
        from aqualens.processing.services import start_triggers

        runner = Runner(ctx).start() if run_jobs else None
        triggers = start_triggers(ctx) if run_jobs else None
        try:
            uvicorn.run(create_app(ctx), host=host or ctx.settings.host,
                        port=port or ctx.settings.port, log_level=ctx.settings.log_level)
        finally:
            if triggers is not None:
                triggers.stop()
            if runner is not None:
                runner.stop()
