"""The original of one image, for the web page's before/after view.

The original lives on a supplier's host, which the page may not contact (its
Content-Security-Policy allows only this server) and whose address the browser must not
leak to. So the server fetches it again, on behalf of the batch's own tenant only, through
the same hardened ``Fetcher`` the workers use: the SSRF guard, the redirect checks, the
byte cap and the deadline all apply, and only bytes that sniff as an image are handed back,
with their sniffed type (never the supplier's ``Content-Type``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pixelbatch import batches
from pixelbatch.db import batch_reads
from pixelbatch.db.engine import reading
from pixelbatch.errors import FetchError, NotFound, PixelbatchError
from pixelbatch.runtime import Runtime
from pixelbatch.transform.encode import CONTENT_TYPES
from pixelbatch.transform.sniff import sniff

# Formats a browser can show; anything else is refused rather than served as a download.
# Every format we write, and two more a browser shows.
MEDIA_TYPES = {name: media for name, (media, _) in CONTENT_TYPES.items()} | {
    "BMP": "image/bmp",
    "ICO": "image/x-icon",
}


class OriginalUnavailable(PixelbatchError):
    """The supplier's image could not be fetched again, or is not one a browser shows."""

    code = "original_unavailable"
    # Like a FetchError: the supplier's answer, not this server, is at fault; and every
    # 5xx of this API means a bug of its own.
    status_code = 422


@dataclass(frozen=True)
class Original:
    data: bytes
    media_type: str


def image_url(runtime: Runtime, batch_id: uuid.UUID, image_id: int, *, tenant: str) -> str:
    """The input URL of one image of a batch this tenant owns."""
    batches.get_batch(runtime, batch_id, tenant=tenant)
    with reading(runtime.sessions) as session:
        image = batch_reads.batch_image(session, batch_id, image_id)
        if image is None:
            raise NotFound(f"no image {image_id} in batch {batch_id}")
        return image.url


def fetch_original(
    runtime: Runtime, batch_id: uuid.UUID, image_id: int, *, tenant: str
) -> Original:
    url = image_url(runtime, batch_id, image_id, tenant=tenant)
    try:
        result = runtime.fetcher.fetch(url)
    except FetchError as exc:
        raise OriginalUnavailable(
            f"the original could not be fetched again: {exc.message}",
            details={"url": url, "reason": exc.code},
        ) from None
    kind = sniff(result.data)
    media_type = MEDIA_TYPES.get(kind or "")
    if media_type is None:
        raise OriginalUnavailable(
            f"the original at {url} is not an image a browser can show ({kind or 'not an image'})",
            details={"url": url, "reason": "not_displayable"},
        )
    return Original(result.data, media_type)
