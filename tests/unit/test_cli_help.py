"""Every option and argument of every command explains itself in ``--help``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from pixelbatch.cli import app


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every command under ``command``; typer ships its own click, so groups are found by
    their ``commands`` rather than by class."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    root = typer.main.get_command(app)
    commands = list(_commands(root, "pixelbatch"))
    assert len(commands) > 10
    missing = [
        f"{path} {param.name}"
        for path, command in commands
        for param in command.params
        if param.name != "help" and not getattr(param, "help", None)
    ]
    assert missing == []


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    assert [path for path, command in _commands(root, "pixelbatch") if not command.help] == []
