"""What every CLI command shares: the context, the acting user, progress bars, error output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from aqualens.catalog.context import Context
from aqualens.core.config import get_settings
from aqualens.core.errors import AquaLensError

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def context() -> Context:
    """The instance the CLI acts on (settings from env, config file and ``--data-dir``)."""
    return Context(get_settings())


def cli_user(ctx: Context, name: str | None = None):  # noqa: ANN201 - returns User
    """The acting user: ``--user NAME`` or the instance admin (the embedded single-user case).

    Creates the instance (migrations, admin) on first use so commands work on a fresh data dir.
    """
    from aqualens.catalog.instance import init_instance
    from aqualens.catalog.users import get_admin, get_user

    init_instance(ctx)
    with ctx.session() as s:
        user = get_user(s, name) if name else get_admin(s)
        s.expunge(user)
        return user


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Print AquaLens errors as one clear line and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except AquaLensError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return wrapper


def progress() -> Progress:
    """A rich progress bar: done/total, rate-derived ETA, elapsed."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=False)


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate with a progress bar."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def write_json(path: Path, data: Any) -> None:
    """Write a JSON report atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def emit(rows: list[dict[str, Any]], fmt: str, columns: list[str] | None = None,
         title: str | None = None) -> None:
    """Print rows as a rich table, JSON or CSV on stdout."""
    from rich.table import Table

    columns = columns or (list(rows[0].keys()) if rows else [])
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    elif fmt == "table":
        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        console.print(table)
    else:
        raise typer.BadParameter(f"unknown format {fmt!r}; valid: table, json, csv")
