"""``pixelbatch batches``: operator commands on stored batches."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from pixelbatch import batches
from pixelbatch.cli.common import batches_app, console, exit_on_error, opened_runtime, settings_of


@batches_app.command("delete")
def batches_delete(
    ctx: typer.Context,
    batch_id: Annotated[uuid.UUID, typer.Argument(help="The batch's request id")],
    tenant: Annotated[
        str | None,
        typer.Option(help="Delete only if the batch belongs to this tenant (default: any)"),
    ] = None,
) -> None:
    """Delete a batch: its rows, output images, output CSV and uploaded CSV. A running
    batch is cancelled first."""
    with exit_on_error(), opened_runtime(settings_of(ctx)) as runtime:
        removed = batches.delete_batch(runtime, batch_id, tenant=tenant)
    console.print(f"deleted batch {batch_id} ({removed} stored files removed)", highlight=False)
