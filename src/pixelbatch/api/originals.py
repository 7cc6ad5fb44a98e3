"""``GET /api/batches/{id}/images/{image_id}/original``: the "before" of the web page's
before/after view, fetched again through the hardened fetcher (see ``pixelbatch.originals``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from pixelbatch import originals
from pixelbatch.api import schemas
from pixelbatch.api.security import CurrentPrincipal
from pixelbatch.runtime import Runtime

router = APIRouter()


@router.get(
    "/api/batches/{request_id}/images/{image_id}/original",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}},
        401: {"model": schemas.ErrorBody},
        404: {"model": schemas.ErrorBody},
        422: {"model": schemas.ErrorBody},
    },
    summary="The original of one image, fetched again from its input URL (for before/after)",
)
def original(
    request: Request,
    request_id: uuid.UUID,
    image_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    who: CurrentPrincipal,
) -> Response:
    runtime: Runtime = request.app.state.runtime
    found = originals.fetch_original(runtime, request_id, image_id, tenant=who.tenant)
    return Response(
        found.data,
        media_type=found.media_type,
        headers={
            "Content-Security-Policy": "default-src 'none'",
            # The supplier may change it; a key holder's copy stays in their browser only.
            "Cache-Control": "private, max-age=300",
        },
    )
