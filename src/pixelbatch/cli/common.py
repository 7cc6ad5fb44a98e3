"""What every command shares: the Typer apps, the consoles, logging and error printing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from pixelbatch.errors import PixelbatchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings

app = typer.Typer(
    help="pixelbatch: compress the product images listed in CSV files.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys (each belongs to a tenant).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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
def opened_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """A runtime whose database is ready by the one rule (``Runtime.prepare_database``)."""
    runtime = Runtime(settings or Settings())
    try:
        runtime.prepare_database()
        yield runtime
    finally:
        runtime.close()
