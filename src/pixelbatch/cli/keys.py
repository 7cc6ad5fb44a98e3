"""``pixelbatch keys``: create, list and revoke API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from pixelbatch.auth.keys import create_key, list_keys, revoke_key
from pixelbatch.cli.common import console, exit_on_error, keys_app, opened_runtime, settings_of
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Priority


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for, e.g. the client's name")],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant the key belongs to (default: the name)")
    ] = None,
    max_priority: Annotated[
        Priority | None,
        typer.Option(
            case_sensitive=False,
            help="Highest batch priority this key may ask for (default: any); above it an"
            " upload is refused with 403 priority_not_allowed",
        ),
    ] = None,
) -> None:
    """Create an API key; the key and its webhook secret are shown once."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        created = create_key(session, name=name, tenant=tenant, max_priority=max_priority)
    console.print(f"key id:         {created.id}")
    console.print(f"tenant:         {created.tenant}")
    console.print(f"max priority:   {_cap(created.max_priority)}")
    console.print(f"api key:        {created.key}")
    console.print(f"webhook secret: {created.webhook_secret}")
    console.print("[bold]Store both now: they are not shown again.[/]")


WIDE_TABLE = 140


def _cap(max_priority: Priority | None) -> str:
    return max_priority.value if max_priority is not None else "any"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List API keys (never the keys themselves)."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        rows = list_keys(session)
    # The prefix and the id are what `keys revoke` takes: printed whole, whatever the width.
    # A narrow terminal gets one block per key instead of a table squeezing them.
    if console.width < WIDE_TABLE:
        for row in rows:
            revoked = f"  [red]revoked {_when(row.revoked_at)}[/]" if row.revoked_at else ""
            console.print(f"[bold]pb_{row.prefix}[/]  {row.id}{revoked}", highlight=False)
            console.print(
                f"  tenant {row.tenant}, name {row.name}, max priority {_cap(row.max_priority)},"
                f" created {_when(row.created_at)}, "
                f"last used {_when(row.last_used_at) or 'never'}",
                highlight=False,
            )
        return
    table = Table(
        "prefix", "id", "tenant", "name", "max priority", "created", "last used", "revoked"
    )
    for index, column in enumerate(table.columns):
        column.no_wrap, column.overflow = index < 2, "fold"
    for row in rows:
        table.add_row(
            f"pb_{row.prefix}",
            str(row.id),
            row.tenant,
            row.name,
            _cap(row.max_priority),
            _when(row.created_at),
            _when(row.last_used_at),
            _when(row.revoked_at),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key: Annotated[
        str, typer.Argument(help="Key id or its pb_<prefix>, as `keys list` prints them")
    ],
) -> None:
    """Revoke a key: it stops working at once."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        row = revoke_key(session, key)
        console.print(f"revoked {row.id} (tenant {row.tenant}, {row.name})")
