"""``aqualens services apply|list|show|pause|resume|delete|run|events|token``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from aqualens.cli.common import cli_user, console, context, emit, handle_errors

services_app = typer.Typer(help="Event-driven services: triggers → steps → outputs.",
                           no_args_is_help=True)


@services_app.command("apply")
@handle_errors
def apply_cmd(file: Path = typer.Argument(..., help="service definition (YAML or JSON)"),
              user: str | None = typer.Option(None, "--user")) -> None:
    """Create or update a service; prints the trigger token once, on creation."""
    from aqualens.core.errors import ValidationError
    from aqualens.processing.services import apply_service

    if not file.is_file():
        raise ValidationError(f"{file} does not exist", field=str(file))
    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        row, token = apply_service(s, file.read_text(), u)
        name = row.name
    console.print(f"service {name} {'created' if token else 'updated (trigger token unchanged)'}")
    if token:
        console.print("trigger token (shown once; webhooks use it):")
        typer.echo(token)


@services_app.command("list")
@handle_errors
def list_cmd(fmt: str = typer.Option("table", "--format"),
             user: str | None = typer.Option(None, "--user")) -> None:
    """List services with their trigger types and event counts."""
    from aqualens.processing.services import list_services, service_dict

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        rows = []
        for r in list_services(s, u):
            d = service_dict(r, s)
            rows.append({"name": d["name"], "paused": d["paused"],
                         "triggers": ",".join(t["type"] for t in d["definition"]["triggers"]),
                         "steps": ",".join(st.get("model") or st.get("pipeline")
                                           for st in d["definition"]["steps"]),
                         "events": json.dumps(d["events"])})
    emit(rows, fmt, ["name", "paused", "triggers", "steps", "events"], title="services")


@services_app.command("show")
@handle_errors
def show_cmd(name: str, user: str | None = typer.Option(None, "--user")) -> None:
    """The definition, state and event counts of a service (JSON)."""
    from aqualens.processing.services import get_service, service_dict

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        typer.echo(json.dumps(service_dict(get_service(s, name, u), s), indent=2, default=str))


def _pause(name: str, paused: bool, user: str | None) -> None:
    from aqualens.processing.services import set_paused

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        set_paused(s, name, u, paused)
    console.print(f"service {name} {'paused' if paused else 'resumed'}")


@services_app.command("pause")
@handle_errors
def pause_cmd(name: str, user: str | None = typer.Option(None, "--user")) -> None:
    """Stop processing (events are still stored and processed on resume)."""
    _pause(name, True, user)


@services_app.command("resume")
@handle_errors
def resume_cmd(name: str, user: str | None = typer.Option(None, "--user")) -> None:
    """Resume processing, including the events stored while paused."""
    _pause(name, False, user)


@services_app.command("delete")
@handle_errors
def delete_cmd(name: str, user: str | None = typer.Option(None, "--user")) -> None:
    """Delete a service and its events (its jobs and annotations stay)."""
    from aqualens.processing.services import delete_service

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        delete_service(s, name, u)
    console.print(f"service {name} deleted")


@services_app.command("events")
@handle_errors
def events_cmd(name: str, state: str | None = typer.Option(None),
               limit: int = typer.Option(50), fmt: str = typer.Option("table", "--format"),
               user: str | None = typer.Option(None, "--user")) -> None:
    """Recent events of a service (newest first)."""
    from aqualens.processing.services import get_service, list_events

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        rows = [{"id": e.id, "key": e.key, "state": e.state, "job_id": e.job_id,
                 "created_at": e.created_at}
                for e in list_events(s, get_service(s, name, u), state=state, limit=limit)]
    emit(rows, fmt, ["id", "key", "state", "job_id", "created_at"], title=f"events of {name}")


@services_app.command("token")
@handle_errors
def token_cmd(name: str, rotate: bool = typer.Option(False, "--rotate",
                                                     help="issue a new token; the old one stops"),
              user: str | None = typer.Option(None, "--user")) -> None:
    """Replace a service's trigger token (it is never shown again after creation)."""
    from aqualens.core.errors import ValidationError
    from aqualens.processing.services import rotate_trigger_token

    if not rotate:
        raise ValidationError("tokens are shown once; pass --rotate to issue a new one",
                              field="--rotate")
    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        token = rotate_trigger_token(s, name, u)
    typer.echo(token)


@services_app.command("run")
@handle_errors
def run_cmd(name: str, files: list[Path] = typer.Argument(..., help="a few image files"),
            user: str | None = typer.Option(None, "--user")) -> None:
    """Run a service synchronously on a few images and print the results (JSON)."""
    from aqualens.core.errors import ValidationError
    from aqualens.processing.services import get_service, run_service_sync

    ctx = context()
    u = cli_user(ctx, user)
    for f in files:
        if not f.is_file():
            raise ValidationError(f"{f} does not exist", field=str(f))
    with ctx.session() as s:
        row = get_service(s, name, u)
        s.expunge(row)
    out = run_service_sync(ctx, row, u, [(f.name, f.read_bytes()) for f in files])
    typer.echo(json.dumps(out, indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
