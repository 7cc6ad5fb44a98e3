"""The API's ``/metrics``: database gauges, request latency, and this process's own work.

Gauges of state (batches and images by status, the queue per priority, the oldest waiting
batch) are read from the database at scrape time: it is the one place that is right in
both modes, on any number of machines, and across restarts; query them with ``max``, since
every API replica reports the same values. Counters of work done live in the process that
did it (``telemetry.instruments``, in the default registry): here the embedded workers and
the finalisations of cancels; in the distributed mode each worker serves its own
(``telemetry.multiproc``), and ``sum`` over all processes is the total.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from pixelbatch.api.middleware import HttpMiddleware, WatchedSend
from pixelbatch.db.engine import reading
from pixelbatch.db.models import BatchStatus, DeliveryStatus, ImageStatus
from pixelbatch.db.stats import oldest_pending_seconds, queue_by_priority, status_counts
from pixelbatch.runtime import Runtime
from pixelbatch.telemetry import instruments
from pixelbatch.telemetry.multiproc import WorkerCollector

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class DatabaseCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        batches = GaugeMetricFamily("pixelbatch_batches", "Batches by status", labels=["status"])
        images = GaugeMetricFamily(
            "pixelbatch_images", "Images of unfinished batches by status", labels=["status"]
        )
        hooks = GaugeMetricFamily(
            "pixelbatch_webhook_deliveries", "Webhook deliveries by status", labels=["status"]
        )
        queue = GaugeMetricFamily(
            "pixelbatch_queue_images",
            "Images waiting for a worker (pending or lease run out), by batch priority",
            labels=["priority"],
        )
        with reading(self.runtime.sessions) as session:
            counts = status_counts(session)
            for priority, count in queue_by_priority(session).items():
                queue.add_metric([priority], count)
            oldest = GaugeMetricFamily(
                "pixelbatch_oldest_pending_seconds",
                "Age of the oldest batch not finished yet (0: none waiting)",
                value=oldest_pending_seconds(session),
            )
        families: tuple[tuple[GaugeMetricFamily, type[StrEnum], dict[str, int]], ...] = (
            (batches, BatchStatus, counts.batches),
            (images, ImageStatus, counts.images),
            (hooks, DeliveryStatus, counts.deliveries),
        )
        for family, states, by_status in families:
            # Every state is reported, zeros included, so rates and alerts need no gaps.
            for state in states:
                family.add_metric([state.value], by_status.get(state.value, 0))
        yield from (batches, images, hooks, queue, oldest)


class Metrics:
    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(runtime))
        if runtime.settings.is_embedded:
            # The embedded server is the worker: its tree's memory includes the transforms.
            self.registry.register(WorkerCollector())
        instruments.instruments()  # the work series exist from the first scrape
        self.requests = Histogram(
            "pixelbatch_http_request_duration_seconds",
            "API request latency",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """This app's registry, then the process-wide one (work counters, process, GC)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestTimer(HttpMiddleware):
    """Times every request, labelled by route template (never by raw path: ids would
    explode the label set)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        sent = WatchedSend(send)
        try:
            await self.app(scope, receive, sent)
        finally:
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            route = scope.get("route")
            if metrics is not None:
                metrics.requests.labels(
                    scope["method"], getattr(route, "path", "unmatched"), str(sent.status or 500)
                ).observe(time.perf_counter() - started)
