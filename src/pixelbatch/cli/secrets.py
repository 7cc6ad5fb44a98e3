"""``pixelbatch secrets``: generate the secrets every process of a deployment shares."""

from __future__ import annotations

import shlex

import typer

from pixelbatch.cli.common import secrets_app
from pixelbatch.secrets import WEBHOOK_SECRET_PREFIX, new_secret


@secrets_app.command("generate")
def secrets_generate() -> None:
    """Print fresh PIXELBATCH_WEBHOOK_SECRET and PIXELBATCH_SECRET_KEY as shell exports:
    eval "$(pixelbatch secrets generate)"."""
    for name, prefix in (("WEBHOOK_SECRET", WEBHOOK_SECRET_PREFIX), ("SECRET_KEY", "")):
        value = shlex.quote(new_secret(prefix))
        typer.echo(f"export PIXELBATCH_{name}={value}")  # one line each, never wrapped
