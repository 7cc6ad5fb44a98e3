"""``pixelbatch serve`` and ``pixelbatch worker``: the long-running processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelbatch.cli.common import (
    app,
    console,
    exit_on_error,
    settings_of,
    setup_logging,
    ui_url,
)
from pixelbatch.cli.startup import (
    database_reachable,
    err_console,
    mask_url,
    refuse,
    require_broker,
    with_options,
)
from pixelbatch.db import migrate
from pixelbatch.db.engine import make_engine
from pixelbatch.settings import Settings


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Bind address [default: PIXELBATCH_HOST, 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Bind port [default: PIXELBATCH_PORT, 8000]")
    ] = None,
) -> None:
    """Run the HTTP API and web UI (and, in embedded mode, the workers) until interrupted."""
    import uvicorn

    from pixelbatch.api.app import create_app
    from pixelbatch.heap import freeze_startup_objects

    settings = with_options(settings_of(ctx), host=("--host", host), port=("--port", port))
    setup_logging(True, settings)
    if not settings.is_embedded:
        _check_shared_deployment(settings)
    _warn_wildcard_without_public_url(settings)
    mode = "embedded" if settings.is_embedded else "distributed (API only; run workers apart)"
    if not settings.auth_enabled:
        err_console.print(
            "[bold yellow]WARNING: API keys are OFF[/]: anyone who can reach "
            f"{settings.host}:{settings.port} can upload and read every batch. That is only "
            "safe on a loopback address; set PIXELBATCH_AUTH=on and create keys with "
            "`pixelbatch keys create` before exposing the server."
        )
    else:
        console.print("API keys are required (Authorization: Bearer pb_…).")
    # One line, never wrapped: operators grep logs for it.
    console.print(
        f"[bold]pixelbatch[/] {mode} mode on http://{settings.host}:{settings.port} "
        f"({_where(settings)}) — web UI at {ui_url(settings)} — API docs at /docs",
        soft_wrap=True,
    )
    app = create_app(settings)
    freeze_startup_objects()  # a process of its own: no test process keeps its heap frozen
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # JSON logs: uvicorn's own lines go through the root logger's JSON formatter too.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )


def _warn_wildcard_without_public_url(settings: Settings) -> None:
    if settings.public_url is None and settings.host.strip("[]") in ("0.0.0.0", "::", ""):  # noqa: S104
        err_console.print(
            f"[bold yellow]WARNING: no PIXELBATCH_PUBLIC_URL[/] while bound to {settings.host}: "
            "status, output CSV and webhook URLs use the host each upload was sent to; set "
            "PIXELBATCH_PUBLIC_URL to the address clients should use."
        )


def _where(settings: Settings) -> str:
    """Where this process keeps its state, as it really does in its mode."""
    if settings.is_embedded:
        return f"data in {settings.data_dir.resolve()}"
    outputs = settings.storage_url or str(settings.outputs_dir.resolve())
    return f"database {mask_url(settings.resolved_database_url)}, outputs in {mask_url(outputs)}"


def _check_shared_deployment(settings: Settings) -> None:
    """Refuse to start a replica or worker against an unmigrated or unreachable database, or
    without the secrets that every process of a deployment must share."""
    engine = make_engine(settings.resolved_database_url)
    try:
        with exit_on_error(), database_reachable(settings):
            migrate.require_current(engine)
    finally:
        engine.dispose()
    missing = [
        name
        for name, value, needed in (
            ("PIXELBATCH_WEBHOOK_SECRET", settings.webhook_secret, True),
            ("PIXELBATCH_SECRET_KEY", settings.secret_key, settings.auth_enabled),
        )
        if needed and value is None
    ]
    if missing:
        raise refuse(
            f"set {' and '.join(missing)}: every API replica and worker must share the same "
            "secrets (`pixelbatch secrets generate` prints them)"
        )


def _worker_metrics(settings: Settings) -> None:
    """Multiprocess metrics for this worker's processes: served here when it has a port,
    written into its parent's directory when it is a companion (the parent serves them)."""
    from pixelbatch.telemetry import multiproc

    inherited = os.environ.get(multiproc.ENV)
    if not settings.metrics_enabled:
        return
    if settings.metrics_port is None:
        if inherited:  # a companion: the parent worker serves this directory
            multiproc.use_directory(Path(inherited), clean=False)
        return
    directory = multiproc.use_directory(settings.metrics_dir, clean=True)
    try:
        multiproc.serve(directory, settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise refuse(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"(PIXELBATCH_METRICS_PORT): {exc.strerror or exc}"
        ) from None


class WorkerRole(StrEnum):
    ALL = "all"
    IMAGES = "images"
    WEBHOOKS = "webhooks"


WEBHOOK_THREADS = 8
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the companion before exec: the kernel stops it when its parent dies."""
    name = ctypes.util.find_library("c")
    if name is not None:
        ctypes.CDLL(name).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _companion_name(hostname: str | None) -> str:
    node, _, host = (hostname or "celery@%h").partition("@")
    return f"{node}-webhooks@{host or '%h'}"


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default: one per core)")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name (default celery@<host>)")
    ] = None,
    role: Annotated[
        WorkerRole,
        typer.Option(
            help="images: image work only; webhooks: deliveries only, on threads; "
            "all: images here plus a webhook worker beside it"
        ),
    ] = WorkerRole.ALL,
) -> None:
    """Run a Celery worker for the distributed mode (needs PIXELBATCH_BROKER_URL)."""
    settings = settings_of(ctx)
    if settings.is_embedded:
        raise refuse(
            "PIXELBATCH_BROKER_URL is not set; the embedded mode needs no separate worker "
            "(`pixelbatch serve` runs its own)"
        )
    _check_shared_deployment(settings)
    require_broker(settings)
    setup_logging(True, settings)
    _worker_metrics(settings)
    from pixelbatch.jobs import celery_app

    common = [f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if role == WorkerRole.WEBHOOKS:
        celery_app.sweeping = False
        celery_app.app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency or WEBHOOK_THREADS}",
                f"--queues={celery_app.WEBHOOK_QUEUE}",
                *common,
                *([f"--hostname={hostname}"] if hostname else []),
            ]
        )
        return
    companion = None
    if role == WorkerRole.ALL:
        companion = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                "-m",
                "pixelbatch",
                "worker",
                "--role=webhooks",
                f"--loglevel={loglevel}",
                f"--hostname={_companion_name(hostname)}",
            ],
            preexec_fn=_die_with_parent,  # before exec, while this process runs no threads
            # It reports through this worker's metrics directory and port, not one of its own.
            env={k: v for k, v in os.environ.items() if k != "PIXELBATCH_METRICS_PORT"},
        )
    try:
        celery_app.app.worker_main(
            [
                "worker",
                f"--concurrency={concurrency or os.cpu_count() or 1}",
                f"--queues={celery_app.QUEUE}",
                "--prefetch-multiplier=1",
                "--optimization=fair",
                *common,
                *([f"--hostname={hostname}"] if hostname else []),
            ]
        )
    finally:
        if companion is not None:
            companion.terminate()
            companion.wait(30)
