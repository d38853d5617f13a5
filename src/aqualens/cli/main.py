"""The ``aqualens`` command. Each command module exposes ``register(app)``."""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import Optional

import typer

from aqualens.cli.common import context, handle_errors

app = typer.Typer(help="AquaLens: catalogue, analyse and publish aquatic images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

COMMAND_MODULES = [
    "aqualens.cli.instance",
    "aqualens.cli.catalog",
    "aqualens.cli.ingest",
    "aqualens.cli.interchange",
    "aqualens.cli.maintenance",
    "aqualens.cli.jobs",
    "aqualens.cli.services",
    "aqualens.cli.models",
    "aqualens.cli.training",
]


@app.callback()
def _root(data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="AQUALENS_DATA_DIR",
        help="Instance folder (catalogue, blobs, config). Default ./aqualens-data.")) -> None:
    """AquaLens command line. Settings come from AQUALENS_* variables and an optional config file."""
    from aqualens.core.config import reset_settings

    if data_dir is not None:
        os.environ["AQUALENS_DATA_DIR"] = str(data_dir)
    reset_settings()


for _name in COMMAND_MODULES:
    import_module(_name).register(app)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main", "context", "handle_errors"]
