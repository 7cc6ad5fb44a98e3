"""Server-side secrets: from settings, or generated once into the embedded data dir."""

from __future__ import annotations

import base64
import secrets

from pydantic import SecretStr

from pixelbatch.errors import PixelbatchError
from pixelbatch.settings import Settings

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret


def new_secret(prefix: str = WEBHOOK_SECRET_PREFIX) -> str:
    """256 random bits, base64; webhook secrets carry the Standard Webhooks ``whsec_``."""
    return prefix + base64.b64encode(secrets.token_bytes(32)).decode()


def load_or_create(
    settings: Settings, configured: SecretStr | None, filename: str, prefix: str = ""
) -> str:
    """A shared deployment must configure its secrets (every replica needs the same one);
    the embedded mode keeps a generated one beside its database."""
    if configured is not None:
        return configured.get_secret_value()
    if not settings.is_embedded:
        raise PixelbatchError(
            f"PIXELBATCH_{filename.upper()} must be set in the distributed mode",
            code="missing_secret",
            status_code=500,
        )
    path = settings.data_dir / filename
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = new_secret(prefix)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value
