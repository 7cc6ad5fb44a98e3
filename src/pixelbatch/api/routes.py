"""Endpoints: parse the request, call one service, render the response."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pixelbatch import batches, intake
from pixelbatch.api import schemas
from pixelbatch.api.security import CurrentPrincipal
from pixelbatch.api.urls import request_base_url
from pixelbatch.db.models import Batch, Priority
from pixelbatch.jobs.dispatch import Dispatcher
from pixelbatch.jobs.finalize import output_csv_url
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import OutputFormat, TransformOptions

router = APIRouter()

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": schemas.ErrorBody},
    401: {"model": schemas.ErrorBody},
    403: {"model": schemas.ErrorBody},
    404: {"model": schemas.ErrorBody},
    409: {"model": schemas.ErrorBody},
    413: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
    429: {"model": schemas.ErrorBody},
}


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def _request_base(request: Request) -> str | None:
    return request_base_url(request, runtime_of(request).settings.trust_proxy_headers)


def _base(request: Request, batch: Batch) -> str:
    """The base of the URLs this answer hands out for ``batch``."""
    return runtime_of(request).public_base(batch.public_url, _request_base(request))


def _status_url(base: str, batch_id: uuid.UUID) -> str:
    return f"{base}/api/status/{batch_id}"


def _counts(batch: Batch) -> schemas.Counts:
    return schemas.Counts(
        products=batch.products_total,
        images_total=batch.images_total,
        images_done=batch.images_done,
        images_failed=batch.images_failed,
        images_pending=max(0, batch.images_total - batch.images_done - batch.images_failed),
        images_kept_original=batch.images_kept_original,
        images_grew=batch.images_grew,
    )


def _progress(batch: Batch) -> float:
    if not batch.images_total:
        return 1.0 if batch.status.is_final else 0.0
    return round((batch.images_done + batch.images_failed) / batch.images_total, 4)


def _summary(request: Request, batch: Batch) -> schemas.BatchSummary:
    return schemas.BatchSummary(
        request_id=batch.id,
        status=batch.status,
        priority=batch.priority,
        input_filename=batch.input_filename,
        counts=_counts(batch),
        progress=_progress(batch),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        status_url=_status_url(_base(request, batch), batch.id),
    )


class UploadForm(BaseModel):
    """The upload's form, every field of it: a field not named here is refused (422 naming
    it) rather than ignored, so a misspelt option never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")

    file: UploadFile = Field(description="The input CSV")
    quality: int | None = Field(None, ge=1, le=100)
    relative_quality: float | None = Field(None, gt=0, le=1)
    output_format: OutputFormat = OutputFormat.KEEP
    max_width: int | None = Field(None, ge=1, le=20000)
    max_height: int | None = Field(None, ge=1, le=20000)
    keep_metadata: bool = False
    webhook_url: str | None = None
    priority: Priority = Field(
        Priority.NORMAL,
        description="How soon the batch's images are served: higher levels first (an API"
        " key may cap it: 403 priority_not_allowed)",
    )

    def options(self, settings: Settings) -> TransformOptions:
        """The processing fields, as they came, through ``intake.processing_options``."""
        return intake.processing_options(
            settings,
            quality=self.quality,
            relative_quality=self.relative_quality,
            output_format=self.output_format,
            max_width=self.max_width,
            max_height=self.max_height,
            keep_metadata=self.keep_metadata,
        )


@router.post(
    "/api/upload",
    status_code=202,
    response_model=schemas.UploadResponse,
    responses=ERROR_RESPONSES,
    summary="Upload a catalog CSV; answers at once with the request id",
)
def upload(
    request: Request,
    who: CurrentPrincipal,
    form: Annotated[UploadForm, Form()],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    runtime = runtime_of(request)
    options = form.options(runtime.settings)
    batch, created = intake.upload(
        runtime,
        _dispatcher(request),
        form.file.file,
        filename=form.file.filename or "upload.csv",
        options=options,
        webhook_url=form.webhook_url or None,
        idempotency_key=idempotency_key,
        principal=who,
        priority=form.priority,
        # Recorded for the URLs the finaliser writes later, with no request at hand.
        public_url=None if runtime.settings.public_url else _request_base(request),
    )
    body = schemas.UploadResponse(
        request_id=batch.id,
        status=batch.status,
        status_url=_status_url(_base(request, batch), batch.id),
    )
    return JSONResponse(
        status_code=202,
        content=body.model_dump(mode="json"),
        headers={"Location": body.status_url, "Idempotent-Replayed": str(not created).lower()},
    )


@router.get(
    "/api/status/{request_id}",
    responses=ERROR_RESPONSES,
    summary="Status, counts and progress of a batch",
)
@router.get(
    "/api/batches/{request_id}",
    responses=ERROR_RESPONSES,
    summary="Same as /api/status/{request_id}",
    operation_id="get_batch",
)
async def status(
    request: Request, request_id: uuid.UUID, who: CurrentPrincipal
) -> schemas.StatusResponse:
    """``async`` for the commonest request of all, polled while a batch runs: FastAPI runs
    a plain ``def`` endpoint on its thread pool and then validates the returned model on the
    pool again, two round trips and four waits for the GIL (which the download threads hold
    most of the time while a batch runs). Only the database read goes to the pool here."""
    runtime = runtime_of(request)
    detail = await run_in_threadpool(batches.batch_detail, runtime, request_id, tenant=who.tenant)
    batch = detail.batch
    webhook = None
    if detail.webhook is not None:
        webhook = schemas.WebhookStatus.model_validate(detail.webhook, from_attributes=True)
    base = _base(request, batch)
    return schemas.StatusResponse(
        **_summary(request, batch).model_dump(),
        started_at=batch.started_at,
        updated_at=batch.updated_at,
        output_csv=output_csv_url(runtime, batch.id, base) if batch.output_key else None,
        output_urls_expire_at=batch.output_urls_expire_at if batch.output_key else None,
        message=batch.message,
        options=batch.options,
        bytes_in=batch.bytes_in,
        bytes_out=batch.bytes_out,
        errors=[
            schemas.ErrorSummary(code=e.code, count=e.count, example=e.example)
            for e in detail.errors
        ],
        webhook=webhook,
    )


@router.get(
    "/api/batches",
    summary="List batches, newest first",
)
def list_batches(
    request: Request, who: CurrentPrincipal, query: Annotated[batches.BatchQuery, Query()]
) -> schemas.BatchList:
    runtime = runtime_of(request)
    items, total = batches.list_batches(runtime, query, tenant=who.tenant)
    return schemas.BatchList(
        items=[_summary(request, b) for b in items],
        total=total,
        offset=query.offset,
        limit=query.limit,
    )


@router.get(
    "/api/batches/{request_id}/images",
    responses=ERROR_RESPONSES,
    summary="Per-image detail, in CSV order, paginated",
)
def list_images(
    request: Request,
    request_id: uuid.UUID,
    who: CurrentPrincipal,
    query: Annotated[batches.ImageQuery, Query()],
) -> schemas.ImagePage:
    runtime = runtime_of(request)
    batch, rows, total = batches.list_images(runtime, request_id, query, tenant=who.tenant)
    base = _base(request, batch)
    items = [
        schemas.ImageDetail(
            image_id=r.image.id,
            row=r.row_number,
            serial=r.serial,
            product_name=r.product_name,
            position=r.image.position + 1,
            input_url=r.image.url,
            status=r.image.status,
            output_url=runtime.storage.url(r.image.output_key, base)
            if r.image.output_key
            else None,
            attempts=r.image.attempts,
            error_code=r.image.error_code,
            error_message=r.image.error_message,
            bytes_in=r.image.bytes_in,
            bytes_out=r.image.bytes_out,
            width=r.image.width,
            height=r.image.height,
            source_format=r.image.source_format,
            source_quality=r.image.source_quality,
            output_quality=r.image.output_quality,
            kept_original=r.image.kept_original,
            grew=r.image.grew,
            duration_ms=r.image.duration_ms,
            finished_at=r.image.finished_at,
        )
        for r in rows
    ]
    return schemas.ImagePage(items=items, total=total, offset=query.offset, limit=query.limit)


@router.post(
    "/api/batches/{request_id}/cancel",
    responses=ERROR_RESPONSES,
    summary="Cancel a pending or processing batch",
)
def cancel(request: Request, request_id: uuid.UUID, who: CurrentPrincipal) -> schemas.BatchSummary:
    runtime = runtime_of(request)
    stopped = batches.cancel_batch(
        runtime, request_id, tenant=who.tenant, dispatcher=_dispatcher(request)
    )
    return _summary(request, stopped)


@router.delete(
    "/api/batches/{request_id}",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    summary="Delete a batch with its stored files (a running one is cancelled first)",
)
def delete(request: Request, request_id: uuid.UUID, who: CurrentPrincipal) -> Response:
    batches.delete_batch(
        runtime_of(request), request_id, tenant=who.tenant, dispatcher=_dispatcher(request)
    )
    return Response(status_code=204)


@router.post(
    "/api/batches/{request_id}/retry",
    responses=ERROR_RESPONSES,
    summary="Queue the failed images of a finished batch again",
)
def retry(request: Request, request_id: uuid.UUID, who: CurrentPrincipal) -> schemas.RetryResponse:
    batch, count = intake.retry_failed(
        runtime_of(request), _dispatcher(request), request_id, tenant=who.tenant
    )
    return schemas.RetryResponse(request_id=batch.id, status=batch.status, requeued=count)
