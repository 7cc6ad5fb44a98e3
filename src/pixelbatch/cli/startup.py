"""Start-up checks of every command: settings, database and broker, each refused in one line.

A command never meets a pydantic or driver traceback: a bad ``PIXELBATCH_*`` variable is
named with its value and what is allowed, an unreachable database or broker by its URL
(passwords masked), and the command exits 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, get_args, get_origin

import typer
from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails
from rich.console import Console
from rich.markup import escape

from pixelbatch.settings import Settings

err_console = Console(stderr=True, soft_wrap=True)
_CREDENTIALS = re.compile(r"(?P<head>://[^/@:]*:)[^/@]*@")


def mask_url(url: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``."""
    return _CREDENTIALS.sub(r"\g<head>***@", url)


def refuse(message: str) -> typer.Exit:
    """Print one red error line; the caller raises the returned exit (code 2)."""
    err_console.print(f"[bold red]error[/]: {escape(message)}", highlight=False)
    return typer.Exit(2)


def _env_value(name: str) -> str | None:
    """The raw value of an environment variable, matched without case as pydantic does."""
    wanted = name.upper()
    return next((value for key, value in os.environ.items() if key.upper() == wanted), None)


def _is_secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    annotation: Any = info.annotation if info else None
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _allowed(field: str, error: ErrorDetails) -> str:
    if error["type"] == "literal_error":
        annotation: Any = Settings.model_fields[field].annotation
        literals = [
            arg for arg in (annotation, *get_args(annotation)) if get_origin(arg) is Literal
        ]
        choices = [str(choice) for arg in literals for choice in get_args(arg)]
        return "must be one of " + ", ".join(choices)
    message = error["msg"].removeprefix("Value error, ")
    message = re.sub(r"^Input should be ", "must be ", message)
    items = [part for part in error["loc"][1:] if isinstance(part, int)]
    return f"item {items[0] + 1} {message}" if items else message


def problems(exc: ValidationError, labels: Mapping[str, tuple[str, object]]) -> list[str]:
    """One line per bad setting: ``PIXELBATCH_AUTH='required': must be one of auto, on, off``.
    ``labels`` names the settings a command line option set, with the value it gave."""
    by_field: dict[str, list[str]] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        by_field.setdefault(field, []).append(_allowed(field, error))
    lines = []
    for field, reasons in by_field.items():
        if field in labels:
            label, value = labels[field]
            shown = f"{label}={value}"
        else:
            env = f"PIXELBATCH_{field.upper()}"
            raw = _env_value(env)
            secret = _is_secret(field)
            shown = env if raw is None else f"{env}=<hidden>" if secret else f"{env}={raw!r}"
            shown = mask_url(shown)
        lines.append(f"{shown}: {'; '.join(dict.fromkeys(reasons))}")
    return lines


def _refuse_all(lines: list[str]) -> typer.Exit:
    for line in lines:
        refuse(line)
    return typer.Exit(2)


def load_settings() -> Settings:
    """The process's settings from the environment, or exit 2 naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise _refuse_all(problems(exc, {})) from None


def with_options(settings: Settings, **options: tuple[str, object]) -> Settings:
    """``settings`` with command line overrides (``field=(option, value)``; a ``None`` value
    is left alone), validated as the environment is."""
    given = {field: pair for field, pair in options.items() if pair[1] is not None}
    if not given:
        return settings
    data = {field: getattr(settings, field) for field in type(settings).model_fields}
    data.update({field: value for field, (_, value) in given.items()})
    try:
        return type(settings).model_validate(data)
    except ValidationError as exc:
        raise _refuse_all(problems(exc, given)) from None


def _reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


@contextmanager
def database_reachable(settings: Settings) -> Iterator[None]:
    """Turn a connection failure inside the block into one line naming the database."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        url = mask_url(settings.resolved_database_url)
        raise refuse(f"cannot reach the database at {url}: {_reason(exc)}") from None


def require_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Connect to the broker once, or exit 2 saying where it was looked for."""
    from kombu.connection import Connection

    url = settings.broker_url or ""
    try:
        with Connection(url, connect_timeout=timeout) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # any failure to connect is the same refusal
        raise refuse(f"cannot reach the broker at {mask_url(url)}: {_reason(exc)}") from None
