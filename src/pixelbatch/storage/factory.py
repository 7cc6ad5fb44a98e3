"""Pick the storage backend the settings name."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings
from pixelbatch.storage.base import Storage
from pixelbatch.storage.local import LocalStorage


def storage_from_settings(settings: Settings) -> Storage:
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.outputs_dir, settings.resolved_public_url)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path), settings.resolved_public_url)
    raise InvalidInput(f"unsupported storage URL scheme: {parsed.scheme!r}")
