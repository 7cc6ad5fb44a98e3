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
    if parsed.scheme == "s3":
        # Imported here: boto3 takes a while to import and the embedded default never needs it.
        from pixelbatch.storage.s3 import S3Storage, parse_s3_url

        return S3Storage(
            parse_s3_url(url),
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            region=settings.s3_region,
            url_ttl=settings.signed_url_ttl,
            public_base_url=settings.public_base_url,
        )
    raise InvalidInput(
        f"unsupported storage URL scheme: {parsed.scheme!r} (expected file:// or s3://)"
    )
