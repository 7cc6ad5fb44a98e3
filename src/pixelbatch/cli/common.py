"""What every command shares: the Typer apps, the consoles, logging and error printing."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from pixelbatch import __version__
from pixelbatch.cli.startup import database_reachable, err_console, load_settings
from pixelbatch.errors import PixelbatchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.telemetry import logs

app = typer.Typer(
    help="pixelbatch: compress the product images listed in CSV files.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys (each belongs to a tenant).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
secrets_app = typer.Typer(help="Server-side secrets.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        console.print(f"pixelbatch {__version__}", highlight=False)
        raise typer.Exit()


def _asks_for_help() -> bool:
    """``pixelbatch keys create --help`` is parsed only after the app callback has run (click
    resolves one level at a time), so the callback looks at the command line itself: help
    must show even when the environment is broken."""
    return "--help" in sys.argv[1:]


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Show the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Every command starts here: the settings are read and checked once, and a bad
    ``PIXELBATCH_*`` variable stops the command with one line naming it (exit 2)."""
    if not ctx.resilient_parsing and not _asks_for_help():
        ctx.obj = load_settings()


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the app callback checked (built here when a command runs alone)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = load_settings()
    return root.obj


def setup_logging(verbose: bool, settings: Settings | None = None) -> None:
    """Text by default; JSON lines with ``PIXELBATCH_LOG_FORMAT=json`` (``telemetry.logs``)."""
    logs.configure(
        logging.INFO if verbose else logging.WARNING,
        settings.log_format if settings is not None else "text",
    )


def print_error(exc: PixelbatchError) -> None:
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


@contextmanager
def exit_on_error() -> Iterator[None]:
    """A deliberate error is one red line and exit code 2, never a traceback."""
    try:
        yield
    except PixelbatchError as exc:
        print_error(exc)
        raise typer.Exit(2) from None


@contextmanager
def opened_runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime whose database is ready by the one rule (``Runtime.prepare_database``); an
    unreachable database is one line naming it, not a driver traceback."""
    runtime = Runtime(settings)
    try:
        with database_reachable(settings):
            runtime.prepare_database()
        yield runtime
    finally:
        runtime.close()


def ui_url(settings: Settings) -> str:
    """The address of the web page to print: the public URL, else the bind address (a
    wildcard bind is reachable on the loopback address from this machine)."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/"
    host = settings.host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the wildcards, not binding
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"
