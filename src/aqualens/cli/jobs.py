"""``aqualens jobs list|show|cancel|retry|logs|wait``, ``aqualens compare``, ``aqualens runner``
and ``aqualens worker``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from aqualens.cli.common import (
    cli_user,
    console,
    context,
    emit,
    err_console,
    handle_errors,
    write_json,
)

jobs_app = typer.Typer(help="Follow and control jobs (batch predict, training, services).",
                       no_args_is_help=True)
COLUMNS = ["id", "kind", "state", "done", "failed", "total", "attempts", "created_at", "error"]


def _job_dict(ctx, job_id: str, user) -> dict:
    from aqualens.processing import jobs

    with ctx.session() as s:
        return jobs.job_to_dict(jobs.get_job(s, job_id, user))


def wait_for_job(ctx, job_id: str, user, *, run: bool = False, quiet: bool = False,
                 poll_s: float = 0.25, timeout: float | None = None) -> dict:
    """Wait for a job with a progress bar (done/total, rate, ETA); with ``run``, execute it in
    this process when no other runner claims it first (the embedded tier). Returns the job."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from aqualens.processing.jobs import TERMINAL

    runner = None
    if run:
        from aqualens.processing.runner import Runner

        runner = Runner(ctx, poll_s=0.1, only={job_id}).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        job = _job_dict(ctx, job_id, user)
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                   TextColumn("{task.fields[failed]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=err_console, disable=quiet) as bar:
            task = bar.add_task(f"{job['kind']} {job_id[:8]}", total=job["total"] or None,
                                rate="", failed="")
            while True:
                job = _job_dict(ctx, job_id, user)
                rate = f"{job['rate_per_s']:.1f} img/s" if job["rate_per_s"] else ""
                failed = f"[red]{job['failed']} failed[/]" if job["failed"] else ""
                bar.update(task, total=job["total"] or None,
                           completed=job["done"] + job["failed"], rate=rate, failed=failed,
                           description=f"{job['kind']} {job_id[:8]} {job['state']}")
                if job["state"] in TERMINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(poll_s)
    finally:
        if runner is not None:
            runner.stop()
    return job


def report_end(job: dict) -> None:
    """Print the outcome; exit 1 unless the job succeeded."""
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(job["state"], "")
    console.print(f"job {job['id']} [{colour}]{job['state']}[/]: {job['done']} done, "
                  f"{job['failed']} failed of {job['total']}"
                  + (f" — {job['error']}" if job.get("error") else ""))
    if job["outputs"]:
        console.print_json(json.dumps(job["outputs"], default=str))
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
@handle_errors
def list_cmd(state: str | None = typer.Option(None, help="queued|running|succeeded|failed|cancelled"),
             kind: str | None = typer.Option(None, help="e.g. predict, image-stats"),
             limit: int = typer.Option(50), fmt: str = typer.Option("table", "--format"),
             user: str | None = typer.Option(None, "--user")) -> None:
    """List jobs, newest first."""
    from aqualens.processing import jobs

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        rows = [jobs.job_to_dict(j) for j in jobs.list_jobs(s, u, state=state, kind=kind,
                                                             limit=limit)]
    emit(rows, fmt, COLUMNS, title="jobs")


@jobs_app.command("show")
@handle_errors
def show_cmd(job_id: str, fmt: str = typer.Option("json", "--format"),
             user: str | None = typer.Option(None, "--user")) -> None:
    """Show one job: state, progress, rate, ETA, outputs, timings."""
    ctx = context()
    job = _job_dict(ctx, job_id, cli_user(ctx, user))
    if fmt == "json":
        typer.echo(json.dumps(job, indent=2, default=str))
    else:
        emit([{"field": k, "value": v} for k, v in job.items()], fmt, ["field", "value"])


@jobs_app.command("cancel")
@handle_errors
def cancel_cmd(job_id: str, user: str | None = typer.Option(None, "--user")) -> None:
    """Cancel a queued job now, a running one at its next batch boundary."""
    from aqualens.processing import jobs

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        job = jobs.request_cancel(s, job_id, u)
        console.print(f"job {job.id}: {job.state}"
                      + (" (cancel requested)" if job.state == "running" else ""))


@jobs_app.command("retry")
@handle_errors
def retry_cmd(job_id: str, wait: bool = typer.Option(True, help="wait and run it here"),
              user: str | None = typer.Option(None, "--user")) -> None:
    """Re-queue a failed or cancelled job; finished images are not done again."""
    from aqualens.processing import jobs

    ctx = context()
    u = cli_user(ctx, user)
    with ctx.session() as s:
        jobs.get_job(s, job_id, u)
        jobs.requeue(s, job_id, u)
        jobs.log(s, job_id, f"re-queued by {u.name}")
    if wait:
        report_end(wait_for_job(ctx, job_id, u, run=True))
    else:
        console.print(f"job {job_id} queued")


@jobs_app.command("logs")
@handle_errors
def logs_cmd(job_id: str, follow: bool = typer.Option(False, "--follow", "-f"),
             user: str | None = typer.Option(None, "--user")) -> None:
    """Print the job's log lines (``-f`` follows until the job ends)."""
    from aqualens.processing import jobs

    ctx = context()
    u = cli_user(ctx, user)
    last = 0
    while True:
        with ctx.session() as s:
            job = jobs.get_job(s, job_id, u)
            state = job.state
            for ln in jobs.get_logs(s, job.id, after_id=last):
                typer.echo(f"{ln.created_at:%Y-%m-%d %H:%M:%S} {ln.level:7} {ln.message}")
                last = ln.id
        if not follow or state in jobs.TERMINAL:
            return
        time.sleep(0.5)


@jobs_app.command("wait")
@handle_errors
def wait_cmd(job_id: str,
             run: bool = typer.Option(False, help="execute it in this process if no runner does"),
             timeout: float | None = typer.Option(None, help="give up after N seconds"),
             user: str | None = typer.Option(None, "--user")) -> None:
    """Wait for a job with a progress bar (done/total, rate, ETA); exit 1 unless it succeeds."""
    ctx = context()
    u = cli_user(ctx, user)
    report_end(wait_for_job(ctx, job_id, u, run=run, timeout=timeout))


def register(app: typer.Typer) -> None:
    """Add ``jobs``, ``compare``, ``runner`` and ``worker`` to ``app``."""
    app.add_typer(jobs_app, name="jobs")

    @app.command("compare")
    @handle_errors
    def compare_cmd(job: list[str] = typer.Option(..., "--job", help="give twice: A then B"),
                    plot: Path | None = typer.Option(None, help="write a PNG bar chart"),
                    out: Path | None = typer.Option(None, help="write the full report JSON"),
                    fmt: str = typer.Option("table", "--format"),
                    user: str | None = typer.Option(None, "--user")) -> None:
        """Compare two prediction jobs: agreement, changed labels, count change per class."""
        from aqualens.processing.compare import compare_jobs, compare_plot

        if len(job) != 2:
            raise typer.BadParameter("give --job exactly twice (A and B)", param_hint="--job")
        ctx = context()
        u = cli_user(ctx, user)
        with ctx.session() as s:
            report = compare_jobs(s, job[0], job[1], u)
        emit(report["per_class"], fmt, ["label", "a", "b", "delta"],
             title=f"A={report['job_a']['model'] or job[0]}  B={report['job_b']['model'] or job[1]}")
        if fmt == "table":
            agreement = report["agreement"]
            console.print(f"agreement: {agreement:.1%} on {report['common_images']} images; "
                          f"{report['changed_count']} changed" if agreement is not None
                          else "no image processed by both jobs")
            for t in report["transitions"][:20]:
                console.print(f"  {t['a']} → {t['b']}: {t['images']} images")
        if plot is not None:
            plot.write_bytes(compare_plot(report))
            console.print(f"plot written to {plot}")
        if out is not None:
            write_json(out, report)

    @app.command("runner")
    @handle_errors
    def runner_cmd(max_jobs: int = typer.Option(2, help="jobs run at the same time")) -> None:
        """Run the job runner (claims queued jobs, runs them on Dask) until interrupted.

        ``aqualens serve`` already runs one; use this for a separate runner process, with
        AQUALENS_DASK__ADDRESS pointing at a scheduler on a cluster."""
        from aqualens.catalog.instance import init_instance
        from aqualens.processing.runner import Runner
        from aqualens.processing.services import start_triggers

        ctx = context()
        init_instance(ctx)
        runner = Runner(ctx, max_jobs=max_jobs).start()
        triggers = start_triggers(ctx)
        console.print(f"runner {runner.runner_id} on "
                      f"{ctx.settings.dask.address or 'an in-process LocalCluster'}; Ctrl-C stops")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            triggers.stop()
            runner.stop()

    @app.command("worker")
    @handle_errors
    def worker_cmd(address: str | None = typer.Argument(
                       None, help="scheduler, e.g. tcp://10.0.0.5:8786 (default AQUALENS_DASK__ADDRESS)"),
                   nthreads: int = typer.Option(1, help="threads in this worker"),
                   name: str | None = typer.Option(None)) -> None:
        """Start a Dask worker that joins a scheduler and runs AquaLens tasks."""
        from aqualens.core.errors import ConfigError
        from aqualens.processing.cluster import run_worker

        ctx = context()
        address = address or ctx.settings.dask.address
        if not address:
            raise ConfigError("no scheduler address", field="AQUALENS_DASK__ADDRESS",
                              valid="aqualens worker tcp://host:8786")
        console.print(f"worker joining {address} with {nthreads} thread(s)")
        run_worker(address, nthreads=nthreads, name=name, settings=ctx.settings)


def parse_query(text: str) -> dict:
    """``--query``: a JSON object, or ``key=value,key=value`` (search fields)."""
    from aqualens.core.errors import ValidationError

    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"--query is not valid JSON: {exc}", field="--query") from None
        if not isinstance(data, dict):
            raise ValidationError("--query must be a JSON object", field="--query")
        return data
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--query part {part!r} is not key=value", field="--query",
                                  valid="label=Copepoda,station=S1 or a JSON object")
        out[key.strip()] = value.strip()
    return out


def predict_job(model: str, collection: str | None, query: str | None, top_k: int,
                threshold: float, batch_size: int | None, detach: bool, *,
                chunk_size: int | None = None) -> None:
    """``aqualens predict --model M --collection C | --query Q``: a predict job, waited for with
    a progress bar (and run in this process when no server runner takes it). Batch and chunk
    sizes left out take the predict kind's defaults."""
    from aqualens.processing import jobs

    ctx = context()
    user = cli_user(ctx)
    params: dict = {"model": model, "top_k": top_k, "threshold": threshold}
    for key, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None:
            params[key] = value
    if collection is not None:
        params["collection"] = collection
    if query is not None:
        params["query"] = parse_query(query)
    with ctx.session() as s:
        job = jobs.create_job(s, "predict", params, user.id)
        job_id = job.id
    console.print(f"job {job_id}: predict with {job.params['model']}")
    if detach:
        typer.echo(job_id)
        return
    report_end(wait_for_job(ctx, job_id, user, run=True))
