"""The work counters and histograms, the same names in every process that does work.

They are built on first use, not at import: a ``pixelbatch worker`` must switch
prometheus-client to its multiprocess mode (``telemetry.multiproc``) before the first
instrument exists, and the CLI imports this module long before it knows which command runs.
``PIXELBATCH_METRICS_ENABLED=false`` (``disable()``) turns every call into a no-op, for the
benchmark's with/without comparison.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("queue", "download", "transform", "store")
# Seconds: a download or transform takes milliseconds to a minute; a queue wait up to hours.
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)


@dataclass(frozen=True)
class Instruments:
    images: Counter
    bytes_in: Counter
    bytes_out: Counter
    not_smaller: Counter
    stages: Histogram
    download_failures: Counter
    batches: Counter
    webhooks: Counter
    busy: Gauge
    capacity: Gauge


def _build(registry: CollectorRegistry) -> Instruments:
    return Instruments(
        images=Counter(
            "pixelbatch_images_processed",
            "Images recorded as finished (once per image, duplicates of a URL included)",
            ["outcome", "error_code"],
            registry=registry,
        ),
        bytes_in=Counter(
            "pixelbatch_image_bytes_in",
            "Bytes downloaded of images recorded done",
            [],
            registry=registry,
        ),
        bytes_out=Counter(
            "pixelbatch_image_bytes_out",
            "Bytes stored of images recorded done",
            [],
            registry=registry,
        ),
        stages=Histogram(
            "pixelbatch_stage_duration_seconds",
            "Time per stage of recorded images (queue: batch accepted to image leased)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        ),
        not_smaller=Counter(
            "pixelbatch_images_not_smaller",
            "Done images no smaller than their source: the source kept (kept_original) or"
            " grown by an asked-for format or size change (grew)",
            ["outcome"],
            registry=registry,
        ),
        download_failures=Counter(
            "pixelbatch_download_failures",
            "Images recorded failed at the download, by host class (never a raw host)",
            ["host_class", "error_code"],
            registry=registry,
        ),
        batches=Counter(
            "pixelbatch_batches_finished",
            "Batches finalised, by final status",
            ["status"],
            registry=registry,
        ),
        webhooks=Counter(
            "pixelbatch_webhook_deliveries",
            "Webhook delivery attempts by result (delivered, retrying, failed)",
            ["result"],
            registry=registry,
        ),
        busy=Gauge(
            "pixelbatch_worker_busy",
            "Images this process is working on now",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        capacity=Gauge(
            "pixelbatch_worker_capacity",
            "Images this process can work on at once (busy / capacity = utilisation)",
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


_lock = threading.Lock()
_instruments: Instruments | None = None
_enabled = True


def instruments() -> Instruments | None:
    """The process's instruments, or None when metrics are disabled."""
    global _instruments
    if not _enabled:
        return None
    if _instruments is None:
        with _lock:
            if _instruments is None:
                _instruments = _build(REGISTRY)
                # Series that exist from the start, so a rate over them is never empty.
                _instruments.images.labels("done", "")
                for stage in STAGES:
                    _instruments.stages.labels(stage)
    return _instruments


def disable() -> None:
    global _enabled
    _enabled = False


def image_recorded(
    *,
    count: int,
    error_code: str | None,
    bytes_in: int = 0,
    bytes_out: int = 0,
    stages: dict[str, float] | None = None,
    failed_stage: str | None = None,
    host_class: str = "other",
    kept_original: bool = False,
    grew: bool = False,
) -> None:
    """``count`` images were recorded with one outcome (an image and its duplicate URLs).
    Stage times are observed once per fetched image, not per duplicate: they are what the
    work cost."""
    metrics = instruments()
    if metrics is None or count <= 0:
        return
    if error_code is None:
        metrics.images.labels("done", "").inc(count)
        metrics.bytes_in.inc(bytes_in * count)
        metrics.bytes_out.inc(bytes_out * count)
        if kept_original:
            metrics.not_smaller.labels("kept_original").inc(count)
        elif grew:
            metrics.not_smaller.labels("grew").inc(count)
    else:
        metrics.images.labels("failed", error_code).inc(count)
        if failed_stage == "download":
            metrics.download_failures.labels(host_class, error_code).inc(count)
    for stage, seconds in (stages or {}).items():
        metrics.stages.labels(stage).observe(max(0.0, seconds))


def batch_finished(status: str) -> None:
    if (metrics := instruments()) is not None:
        metrics.batches.labels(status).inc()


def webhook_attempted(result: str) -> None:
    if (metrics := instruments()) is not None:
        metrics.webhooks.labels(result).inc()


def busy(delta: int) -> None:
    if (metrics := instruments()) is not None:
        metrics.busy.inc(delta)


def set_capacity(slots: int) -> None:
    if (metrics := instruments()) is not None:
        metrics.capacity.set(slots)
