"""``pixelbatch keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pixelbatch.auth.keys import create_key, list_keys, revoke_key
from pixelbatch.cli.common import console, exit_on_error, keys_app, opened_runtime, settings_of
from pixelbatch.db.engine import transaction


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for, e.g. the client's name")],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant the key belongs to (default: the name)")
    ] = None,
) -> None:
    """Create an API key; the key and its webhook secret are shown once."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        created = create_key(session, name=name, tenant=tenant)
    console.print(f"key id:         {created.id}")
    console.print(f"tenant:         {created.tenant}")
    console.print(f"api key:        {created.key}")
    console.print(f"webhook secret: {created.webhook_secret}")
    console.print("[bold]Store both now: they are not shown again.[/]")


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List API keys (never the keys themselves)."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        rows = list_keys(session)
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
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key id or its pb_<prefix>")],
) -> None:
    """Revoke a key: it stops working at once."""
    with (
        exit_on_error(),
        opened_runtime(settings_of(ctx)) as runtime,
        transaction(runtime.sessions) as session,
    ):
        row = revoke_key(session, key)
        console.print(f"revoked {row.id} (tenant {row.tenant}, {row.name})")
