"""Stored files: a batch's output CSV and its output images, served from this machine's
disk or redirected to the object store. Kept apart from the batch endpoints because their
answers are bytes with their own caching and cross-origin rules, not JSON."""

from __future__ import annotations

import mimetypes
import time
import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pixelbatch import access
from pixelbatch.api import schemas
from pixelbatch.api.routes import ERROR_RESPONSES, runtime_of
from pixelbatch.api.security import CurrentPrincipal, OptionalPrincipal

router = APIRouter()

# Object storage: the bytes are read from the store, at a fresh presigned URL.
REDIRECT_RESPONSE: dict[str, object] = {
    "description": "With S3 storage: to a fresh presigned URL of the object (Location)"
}

mimetypes.add_type("image/webp", ".webp")
mimetypes.add_type("image/avif", ".avif")


@router.get(
    "/api/batches/{request_id}/output.csv",
    response_class=FileResponse,
    responses={**ERROR_RESPONSES, 200: {"content": {"text/csv": {}}}, 307: REDIRECT_RESPONSE},
    summary="Download the output CSV of a finished batch",
)
def download_output(request: Request, request_id: uuid.UUID, who: CurrentPrincipal) -> Response:
    name = f"{request_id}-output.csv"
    readable = access.output_csv(
        runtime_of(request), request_id, tenant=who.tenant, download_name=name
    )
    if readable.redirect is not None:
        return _redirect(readable.redirect)
    assert readable.path is not None
    return _file_response(readable.path, download_name=name)


@router.get(
    "/files/{key:path}",
    responses={404: {"model": schemas.ErrorBody}, 307: REDIRECT_RESPONSE},
    summary="Stored output files: to their tenant's key, or through a signed URL",
)
def files(
    request: Request,
    key: str,
    who: OptionalPrincipal,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    readable = access.readable_file(runtime_of(request), key, who, expires, sig)
    if readable.redirect is not None:
        return _redirect(readable.redirect)
    assert readable.path is not None
    # A signed URL is the capability itself: anyone holding it, a CDN included, may keep
    # the answer until the signature expires, and not a second longer (the exact time left,
    # rounded down: rounding the clock down instead overstated it by up to a second). A key
    # holder's answer stays private.
    cache = "private"
    if readable.signed_until is not None:
        cache = f"public, max-age={max(0, int(readable.signed_until - time.time()))}"
    # Outputs are meant to be embedded by a storefront on another site (<img src=...>).
    return _file_response(
        readable.path,
        headers={"Cross-Origin-Resource-Policy": "cross-origin", "Cache-Control": cache},
    )


def _redirect(url: str) -> Response:
    """To a fresh presigned URL of the object store: 307 keeps the method, and the answer
    is never cached since the URL it names expires."""
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


def _file_response(
    path: Path, download_name: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        filename=download_name,
        headers={
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "private",
            **(headers or {}),
        },
    )
