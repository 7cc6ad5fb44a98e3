"""Pick the storage backend the settings name."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pixelbatch.auth.urls import UrlSigner
from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings
from pixelbatch.storage.base import Storage
from pixelbatch.storage.local import LocalStorage


def storage_from_settings(settings: Settings, signer: UrlSigner | None = None) -> Storage:
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.outputs_dir, settings.resolved_public_url, signer)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path), settings.resolved_public_url, signer)
    raise InvalidInput(f"unsupported storage URL scheme: {parsed.scheme!r}")
