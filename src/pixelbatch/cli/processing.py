"""``pixelbatch process`` and ``pixelbatch demo``: run one catalog here, without a server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pixelbatch import batches, intake
from pixelbatch.cli.common import (
    app,
    console,
    exit_on_error,
    opened_runtime,
    settings_of,
    setup_logging,
    ui_url,
)
from pixelbatch.db.models import Batch, BatchStatus, DeliveryStatus, Priority
from pixelbatch.jobs.local import run_to_completion
from pixelbatch.runtime import LOCAL_FILES, Runtime
from pixelbatch.transform import OutputFormat, TransformOptions


def _run_batch(
    runtime: Runtime,
    csv_path: Path,
    options: TransformOptions,
    webhook_url: str | None,
    public_url: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> Batch:
    """``public_url``: where a server will serve the outputs; without one (nor
    PIXELBATCH_PUBLIC_URL) the output CSV links to the local files, since none runs."""
    with csv_path.open("rb") as source:
        batch, _ = intake.upload(
            runtime,
            None,
            source,
            filename=csv_path.name,
            options=options,
            webhook_url=webhook_url,
            priority=priority,
            public_url=(public_url or runtime.settings.public_url or LOCAL_FILES).rstrip("/"),
        )
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


def _summary(runtime: Runtime, batch: Batch, out: Path | None) -> bool:
    """Print the outcome; returns False when the batch's webhook was not delivered."""
    detail = batches.batch_detail(runtime, batch.id, tenant="")
    if out is not None and batch.output_key:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as target:
            runtime.storage.read_into(batch.output_key, target)
    table = Table(title=f"batch {batch.id}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a path is folded onto more lines, never cut
    table.add_row("status", batch.status.value)
    table.add_row("priority", batch.priority.value)
    table.add_row("products", str(batch.products_total))
    table.add_row("images", str(batch.images_total))
    table.add_row("done", str(batch.images_done))
    table.add_row("failed", str(batch.images_failed))
    if batch.bytes_in:
        saved = 100 * (1 - batch.bytes_out / batch.bytes_in)
        # Only a format or size change asked for can make the total grow: say so plainly.
        change = f"{saved:.0f}% smaller" if saved >= 0 else f"{-saved:.0f}% larger"
        table.add_row("bytes in → out", f"{batch.bytes_in:,} → {batch.bytes_out:,} ({change})")
    if out is not None:
        table.add_row("output CSV", str(out))
    url = runtime.settings.storage_url
    if url and url.startswith("s3:"):
        table.add_row("images stored in", f"{url.rstrip('/')}/{batch.id}/")
    else:
        stored = runtime.settings.outputs_dir / str(batch.id)
        if url and url.startswith("file:"):
            stored = Path(url.removeprefix("file://")) / str(batch.id)
        table.add_row("images stored in", str(stored.resolve()))
    webhook = detail.webhook
    if webhook is not None:
        delivered = webhook.status == DeliveryStatus.DELIVERED
        table.add_row(
            "webhook",
            f"delivered to {webhook.url} (attempt {webhook.attempts})"
            if delivered
            else f"NOT delivered to {webhook.url} after {webhook.attempts} attempt(s):"
            f" {webhook.last_error}",
        )
    console.print(table)
    for error in detail.errors:
        console.print(f"[red]{error.count} x {error.code}[/]: {error.example}")
    return webhook is None or webhook.status == DeliveryStatus.DELIVERED


@app.command()
def process(
    ctx: typer.Context,
    csv_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Input CSV")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the output CSV")
    ] = Path("output.csv"),
    quality: Annotated[
        int | None, typer.Option(min=1, max=100, help="Absolute output quality")
    ] = None,
    relative_quality: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Fraction of the source's quality [default: PIXELBATCH_DEFAULT_RELATIVE_QUALITY,"
            " 0.5]",
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option(case_sensitive=False, help="Output format")
    ] = OutputFormat.KEEP,
    max_width: Annotated[int | None, typer.Option(min=1, help="Bounding box width")] = None,
    max_height: Annotated[int | None, typer.Option(min=1, help="Bounding box height")] = None,
    keep_metadata: Annotated[bool, typer.Option(help="Keep EXIF metadata")] = False,
    webhook_url: Annotated[str | None, typer.Option(help="Webhook to call when done")] = None,
    priority: Annotated[
        Priority,
        typer.Option(
            case_sensitive=False,
            help="How soon its images are leased when other batches share the database",
        ),
    ] = Priority.NORMAL,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the server that will serve the outputs [default: "
            "PIXELBATCH_PUBLIC_URL, else file:// URLs of the local outputs]"
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Log what happens, at INFO level")
    ] = False,
) -> None:
    """Process a CSV locally, without a server; exits 1 if any image failed or the webhook
    was not delivered (retried for up to a minute)."""
    settings = settings_of(ctx)
    setup_logging(verbose, settings)
    with exit_on_error(), opened_runtime(settings) as runtime:
        options = intake.processing_options(
            settings,
            quality=quality,
            relative_quality=relative_quality,
            output_format=output_format,
            max_width=max_width,
            max_height=max_height,
            keep_metadata=keep_metadata,
        )
        batch = _run_batch(runtime, csv_path, options, webhook_url, public_url, priority)
        webhook_ok = _summary(runtime, batch, output)
    if batch.status != BatchStatus.COMPLETED or not webhook_ok:
        raise typer.Exit(1)


@app.command()
def demo(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help="Where to keep the demo's data")] = None,
) -> None:
    """Process a bundled example catalog served from a local image server, fully offline."""
    from pixelbatch.demo.catalog import serve_catalog, write_catalog_csv
    from pixelbatch.demo.server import ImageServer

    setup_logging(False)
    base = settings_of(ctx)
    root = data_dir or base.data_dir / "demo"
    out = root / "example-output.csv"
    with ImageServer() as server:
        rows = serve_catalog(server)
        # Always the embedded mode, whatever the environment names.
        settings = base.model_copy(
            update={
                "data_dir": root,
                "fetch_allow": [*base.fetch_allow, server.allow_entry],
                "database_url": None,
                "broker_url": None,
                "storage_url": None,
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        csv_path = root / "example-catalog.csv"
        write_catalog_csv(csv_path, rows)
        console.print(
            f"example catalog: {csv_path} ({len(rows)} products) served from {server.base_url}"
        )
        with exit_on_error(), opened_runtime(settings) as runtime:
            batch = _run_batch(runtime, csv_path, intake.processing_options(settings), None)
            _summary(runtime, batch, out)
    if batch.status != BatchStatus.COMPLETED:
        raise typer.Exit(1)
    console.print(
        f"[green]done[/]: open {out} to see each input URL mapped to its compressed output"
    )
    # The demo keeps its own data directory: a server started on it shows this batch.
    console.print(
        f"see it in the web UI: PIXELBATCH_DATA_DIR={root.resolve()} {own_command()} serve"
        f", then open {ui_url(base)}#/batches/{batch.id}",
        soft_wrap=True,
    )


def own_command() -> str:
    """This installation's ``pixelbatch`` as a shell can run it from here: the console script
    beside the running interpreter (``.venv/bin/pixelbatch`` after ``make demo``), so a printed
    hint works pasted into a shell whose virtualenv is not activated."""
    script = Path(sys.executable).parent / "pixelbatch"
    if not script.is_file():
        return "pixelbatch"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
