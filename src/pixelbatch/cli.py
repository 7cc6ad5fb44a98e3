"""Command line: ``serve``, ``process``, ``demo`` and ``db`` — thin faces over the services."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pixelbatch import batches
from pixelbatch.db.models import Batch, BatchStatus
from pixelbatch.errors import PixelbatchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import OutputFormat, TransformOptions

app = typer.Typer(
    help="pixelbatch: compress the product images listed in CSV files.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys (each belongs to a tenant).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port")] = None,
) -> None:
    """Run the HTTP API (and, in embedded mode, the workers) until interrupted."""
    import uvicorn

    from pixelbatch.api.app import create_app

    _setup_logging(True)
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.is_embedded:
        _require_migrated(settings)
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
    console.print(
        f"[bold]pixelbatch[/] {mode} mode on http://{settings.host}:{settings.port} "
        f"(data in {settings.data_dir.resolve()}) — API docs at /docs"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def _require_migrated(settings: Settings) -> None:
    """A shared database is migrated by an operator, never implicitly by a replica."""
    from pixelbatch.db import migrate
    from pixelbatch.db.engine import make_engine

    engine = make_engine(settings.resolved_database_url)
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except Exception as exc:
        err_console.print(f"[bold red]error[/]: cannot reach the database: {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    if current != head:
        err_console.print(
            f"[bold red]error[/]: the database is at revision {current or 'none'}, the code "
            f"needs {head}; run `pixelbatch db upgrade` first"
        )
        raise typer.Exit(2)
    missing = [
        name
        for name, value, needed in (
            ("PIXELBATCH_WEBHOOK_SECRET", settings.webhook_secret, True),
            ("PIXELBATCH_SECRET_KEY", settings.secret_key, settings.auth_enabled),
        )
        if needed and value is None
    ]
    if missing:
        err_console.print(
            f"[bold red]error[/]: set {' and '.join(missing)}: every API replica and worker "
            "must share the same secrets"
        )
        raise typer.Exit(2)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default: one per core)")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name (default celery@<host>)")
    ] = None,
) -> None:
    """Run a Celery worker for the distributed mode (needs PIXELBATCH_BROKER_URL)."""
    import os

    settings = Settings()
    if settings.is_embedded:
        err_console.print(
            "[bold red]error[/]: PIXELBATCH_BROKER_URL is not set; the embedded mode needs no "
            "separate worker (`pixelbatch serve` runs its own)"
        )
        raise typer.Exit(2)
    _require_migrated(settings)
    _setup_logging(True)
    from pixelbatch.jobs.celery_app import QUEUE
    from pixelbatch.jobs.celery_app import app as celery_app

    celery_app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency or os.cpu_count() or 1}",
            f"--queues={QUEUE}",
            f"--loglevel={loglevel}",
            "--prefetch-multiplier=1",
            "--optimization=fair",
            "--without-gossip",
            "--without-mingle",
            *([f"--hostname={hostname}"] if hostname else []),
        ]
    )


def _options(
    quality: int | None,
    relative_quality: float,
    output_format: OutputFormat,
    max_width: int | None,
    max_height: int | None,
    keep_metadata: bool,
) -> TransformOptions:
    return TransformOptions(
        quality=quality,
        relative_quality=relative_quality,
        output_format=output_format,
        max_width=max_width,
        max_height=max_height,
        keep_metadata=keep_metadata,
    )


def _run_batch(
    settings: Settings, csv_path: Path, options: TransformOptions, webhook_url: str | None
) -> Batch:
    from pixelbatch.jobs.local import run_to_completion, submit_file
    from pixelbatch.runtime import Runtime

    runtime = Runtime(settings)
    try:
        runtime.migrate()
        batch = submit_file(runtime, csv_path, options, webhook_url)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("images", total=batch.images_total, failed=0)

            def update(current: Batch) -> None:
                progress.update(
                    task,
                    completed=current.images_done + current.images_failed,
                    failed=current.images_failed,
                )

            return run_to_completion(runtime, batch.id, on_progress=update)
    finally:
        runtime.close()


def _summary(settings: Settings, batch: Batch, out: Path | None) -> None:
    from pixelbatch.runtime import Runtime

    runtime = Runtime(settings)
    try:
        detail = batches.batch_detail(runtime, batch.id, tenant="")
        if out is not None and batch.output_key:
            out.parent.mkdir(parents=True, exist_ok=True)
            path = runtime.storage.local_path(batch.output_key)
            if path is not None:
                shutil.copyfile(path, out)
    finally:
        runtime.close()
    table = Table(title=f"batch {batch.id}", show_header=False)
    table.add_row("status", batch.status.value)
    table.add_row("products", str(batch.products_total))
    table.add_row("images", str(batch.images_total))
    table.add_row("done", str(batch.images_done))
    table.add_row("failed", str(batch.images_failed))
    if batch.bytes_in:
        saved = 100 * (1 - batch.bytes_out / batch.bytes_in)
        table.add_row(
            "bytes in → out", f"{batch.bytes_in:,} → {batch.bytes_out:,} ({saved:.0f}% smaller)"
        )
    if out is not None:
        table.add_row("output CSV", str(out))
    table.add_row("images stored in", str((settings.outputs_dir / str(batch.id)).resolve()))
    console.print(table)
    for error in detail.errors:
        console.print(f"[red]{error.count} x {error.code}[/]: {error.example}")


@app.command()
def process(
    csv_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Input CSV")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the output CSV")
    ] = Path("output.csv"),
    quality: Annotated[
        int | None, typer.Option(min=1, max=100, help="Absolute output quality")
    ] = None,
    relative_quality: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Fraction of the source's quality")
    ] = 0.5,
    output_format: Annotated[OutputFormat, typer.Option(help="Output format")] = OutputFormat.KEEP,
    max_width: Annotated[int | None, typer.Option(min=1, help="Bounding box width")] = None,
    max_height: Annotated[int | None, typer.Option(min=1, help="Bounding box height")] = None,
    keep_metadata: Annotated[bool, typer.Option(help="Keep EXIF metadata")] = False,
    webhook_url: Annotated[str | None, typer.Option(help="Webhook to call when done")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Process a CSV locally, without a server; exits 1 if any image failed."""
    _setup_logging(verbose)
    settings = Settings()
    try:
        options = _options(
            quality, relative_quality, output_format, max_width, max_height, keep_metadata
        )
        batch = _run_batch(settings, csv_path, options, webhook_url)
    except PixelbatchError as exc:
        _print_error(exc)
        raise typer.Exit(2) from None
    _summary(settings, batch, output)
    if batch.status != BatchStatus.COMPLETED:
        raise typer.Exit(1)


def _print_error(exc: PixelbatchError) -> None:
    err_console.print(f"[bold red]error[/] ({exc.code}): {exc.message}")
    details = exc.details if isinstance(exc.details, dict) else {}
    for problem in details.get("problems", [])[:50]:
        where = ", ".join(
            part
            for part in (
                f"row {problem['row']}" if problem.get("row") else "",
                f"column {problem['column']!r}" if problem.get("column") else "",
            )
            if part
        )
        err_console.print(f"  {where}: {problem['message']}")


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where to keep the demo's data")] = None,
) -> None:
    """Process a bundled example catalog served from a local image server, fully offline."""
    from pixelbatch.demo.catalog import serve_catalog, write_catalog_csv
    from pixelbatch.demo.server import ImageServer

    _setup_logging(False)
    base = Settings()
    root = data_dir or base.data_dir / "demo"
    with ImageServer() as server:
        rows = serve_catalog(server)
        settings = base.model_copy(
            update={
                "data_dir": root,
                "fetch_allow": [*base.fetch_allow, server.allow_entry],
                "database_url": None,
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        csv_path = root / "example-catalog.csv"
        write_catalog_csv(csv_path, rows)
        console.print(
            f"example catalog: {csv_path} ({len(rows)} products) served from {server.base_url}"
        )
        batch = _run_batch(settings, csv_path, TransformOptions(), None)
        out = root / "example-output.csv"
        _summary(settings, batch, out)
    if batch.status != BatchStatus.COMPLETED:
        raise typer.Exit(1)
    console.print(
        f"[green]done[/]: open {out} to see each input URL mapped to its compressed output"
    )


def _key_runtime() -> Runtime:
    from pixelbatch.runtime import Runtime

    runtime = Runtime(Settings())
    if runtime.settings.is_embedded:
        runtime.migrate()
    return runtime


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. the client's name")],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant the key belongs to (default: the name)")
    ] = None,
) -> None:
    """Create an API key; the key and its webhook secret are shown once."""
    from pixelbatch.auth.keys import create_key
    from pixelbatch.db.engine import transaction

    runtime = _key_runtime()
    try:
        with transaction(runtime.sessions) as session:
            created = create_key(session, name=name, tenant=tenant)
    except PixelbatchError as exc:
        _print_error(exc)
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    console.print(f"key id:         {created.id}")
    console.print(f"tenant:         {created.tenant}")
    console.print(f"api key:        {created.key}")
    console.print(f"webhook secret: {created.webhook_secret}")
    console.print("[bold]Store both now: they are not shown again.[/]")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    from pixelbatch.auth.keys import list_keys
    from pixelbatch.db.engine import transaction

    runtime = _key_runtime()
    try:
        with transaction(runtime.sessions) as session:
            rows = list_keys(session)
    finally:
        runtime.close()
    table = Table("id", "prefix", "tenant", "name", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            f"pb_{row.prefix}_…",
            row.tenant,
            row.name,
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or its pb_<prefix>")],
) -> None:
    """Revoke a key: it stops working at once."""
    from pixelbatch.auth.keys import revoke_key
    from pixelbatch.db.engine import transaction

    runtime = _key_runtime()
    try:
        with transaction(runtime.sessions) as session:
            row = revoke_key(session, key)
            console.print(f"revoked {row.id} (tenant {row.tenant}, {row.name})")
    except PixelbatchError as exc:
        _print_error(exc)
        raise typer.Exit(2) from None
    finally:
        runtime.close()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured database."""
    from pixelbatch.db import migrate
    from pixelbatch.db.engine import make_engine

    settings = Settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine, revision)
    console.print(f"database at revision {migrate.current_revision(engine)}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision and the code's head."""
    from pixelbatch.db import migrate
    from pixelbatch.db.engine import make_engine

    engine = make_engine(Settings().resolved_database_url)
    console.print(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision()}")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
