"""Response models: the OpenAPI document generated from these is the API contract."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from pixelbatch.db.models import BatchStatus, DeliveryStatus, ImageStatus, Priority


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="Human-readable explanation")
    details: Any = None


class UploadResponse(BaseModel):
    request_id: uuid.UUID
    status: BatchStatus
    status_url: str


class Counts(BaseModel):
    products: int
    images_total: int
    images_done: int
    images_failed: int
    images_pending: int
    images_kept_original: int = Field(
        0,
        description="Done images stored as their own source, metadata stripped: re-encoding"
        " them was not smaller",
    )
    images_grew: int = Field(
        0,
        description="Done images bigger than their source: only a format or size change that"
        " was asked for does that",
    )


class ErrorSummary(BaseModel):
    code: str
    count: int
    example: str


class WebhookStatus(BaseModel):
    url: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class BatchSummary(BaseModel):
    request_id: uuid.UUID
    status: BatchStatus
    priority: Priority
    input_filename: str
    counts: Counts
    progress: float = Field(ge=0, le=1)
    created_at: datetime
    finished_at: datetime | None
    status_url: str


class StatusResponse(BatchSummary):
    started_at: datetime | None
    updated_at: datetime
    output_csv: str | None = Field(description="Download URL once the batch has finished")
    output_urls_expire_at: datetime | None = Field(
        None,
        description="When the output image URLs written into the output CSV (and webhook) stop"
        " working: presigned object-store URLs or signed API URLs; null when they do not"
        " expire. GET /api/batches/{id}/images hands out fresh ones.",
    )
    message: str | None
    options: dict[str, Any]
    bytes_in: int
    bytes_out: int
    errors: list[ErrorSummary]
    webhook: WebhookStatus | None


class BatchList(BaseModel):
    items: list[BatchSummary]
    total: int
    offset: int
    limit: int


class ImageDetail(BaseModel):
    image_id: int = Field(description="Id of the image within its batch (for /original)")
    row: int = Field(description="CSV row of the product (header is row 1)")
    serial: str
    product_name: str
    position: int = Field(description="1-based position of the URL within its cell")
    input_url: str
    status: ImageStatus
    output_url: str | None
    attempts: int
    error_code: str | None
    error_message: str | None
    bytes_in: int | None
    bytes_out: int | None
    width: int | None
    height: int | None
    source_format: str | None
    source_quality: int | None
    output_quality: int | None
    kept_original: bool = Field(
        description="The output is the source file itself with its metadata stripped"
        " losslessly: a re-encode in the same format was not smaller"
    )
    grew: bool = Field(
        description="The output is bigger than the source (bytes_out > bytes_in): only when"
        " a format or size change was asked for, which is done as asked"
    )
    duration_ms: float | None
    finished_at: datetime | None = Field(description="When its outcome was recorded")


class ImagePage(BaseModel):
    items: list[ImageDetail]
    total: int
    offset: int
    limit: int


class RetryResponse(BaseModel):
    request_id: uuid.UUID
    status: BatchStatus
    requeued: int


class Health(BaseModel):
    status: str
    detail: str | None = None


class HostFailures(BaseModel):
    host: str
    failures: int = Field(description="Failed images fetched from this host")
    error_codes: dict[str, int] = Field(description="Failures by error code, commonest first")


class HostStats(BaseModel):
    hours: float = Field(description="The window looked back over")
    hosts: list[HostFailures]
