"""``pixelbatch storage``: check that the configured store is reachable and writable."""

from __future__ import annotations

import typer

from pixelbatch.cli.common import console, settings_of, storage_app
from pixelbatch.cli.startup import err_console
from pixelbatch.errors import PixelbatchError
from pixelbatch.storage import storage_from_settings


@storage_app.command("check")
def storage_check(ctx: typer.Context) -> None:
    """Write, read back and delete a probe object where outputs go (PIXELBATCH_STORAGE_URL):
    one line saying what is wrong (no such bucket, access denied, wrong endpoint), exit 1."""
    settings = settings_of(ctx)
    try:
        checked = storage_from_settings(settings).check()
    except PixelbatchError as exc:
        err_console.print(f"[bold red]error[/] (storage_error): {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"storage ok: {checked}", highlight=False)
