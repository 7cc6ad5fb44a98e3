"""Metrics proven against a real Prometheus: a real ``pixelbatch serve`` (embedded mode,
its transform processes included) scraped every second while a batch with known failures
runs; then every PromQL expression of the dashboard and the alert rules is evaluated
through Prometheus's HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelbatch.demo.server import ImageServer, Route
from tests import support
from tests.prometheus import Prometheus, alert_expressions, dashboard_expressions

pytestmark = pytest.mark.e2e

GOOD = 6
# Panels that must show data after a batch (the rest may be empty: no memory limit here,
# no download failure from a named host class, no API request of every route).
MAIN_PANELS = {
    "Images per second",
    "Failure ratio",
    "Queued images",
    "Oldest unfinished batch",
    "Bytes saved",
    "Worker utilisation",
    "Images processed by outcome",
    "Failures by error code",
    "Stage duration p95",
    "Stage duration p50",
    "Queue depth by priority",
    "Download failures by host class",
    "Throughput (bytes)",
    "Batches finished by status",
    "Webhook deliveries by result",
    "Worker utilisation by instance",
    "Worker memory (all processes)",
    "Process resident memory",
    "API request latency p95 by route",
    "Targets up",
}


@pytest.fixture
def catalog_rows(images: ImageServer) -> list[list[str]]:
    """GOOD distinct photos (one of them listed twice), two 404s, a truncated JPEG and an
    HTML page: 11 images, 4 failed, 10 distinct URLs."""
    for i in range(GOOD):
        images.add(f"/good{i}.jpg", Route(support.jpeg((320, 240), seed=i), "image/jpeg"))
    url = images.base_url
    return [
        ["1", "A", f"{url}/good0.jpg,{url}/good1.jpg,{url}/missing-a.jpg"],
        ["2", "B", f"{url}/good2.jpg,{url}/good3.jpg,{url}/truncated.jpg"],
        ["3", "C", f"{url}/good4.jpg,{url}/good5.jpg,{url}/missing-b.jpg"],
        ["4", "D", f"{url}/page.jpg,{url}/good0.jpg"],
    ]


@pytest.fixture
def prometheus(tmp_path: Path, server: support.ServerProcess) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path / "prometheus", {"pixelbatch-api": [f"127.0.0.1:{server.port}"]})
    try:
        yield prom.start()
    finally:
        prom.stop()


@pytest.fixture
def server_env(server_env: dict[str, str]) -> dict[str, str]:
    return {**server_env, "PIXELBATCH_LOG_FORMAT": "json"}


def test_counters_equal_the_batch_and_every_expression_evaluates(
    server: support.ServerProcess,
    prometheus: Prometheus,
    catalog_rows: list[list[str]],
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    hook_server, sink = sink_server
    prometheus.scrapes_after(2)
    assert prometheus.value("sum(pixelbatch_images_processed_total)") == 0
    with server.client() as client:
        response = client.post(
            "/api/upload",
            files={"file": ("c.csv", support.csv_bytes(catalog_rows))},
            data={"webhook_url": f"{hook_server.base_url}/hook"},
        )
        assert response.status_code == 202, response.text
        status = support.wait_final(client, response.json()["request_id"])
        hosts = client.get("/api/stats/hosts", params={"limit": 5}).json()
    counts = status["counts"]
    assert (counts["images_total"], counts["images_done"], counts["images_failed"]) == (11, 7, 4)
    assert status["status"] == "COMPLETED_WITH_ERRORS"
    db_codes = {e["code"]: e["count"] for e in status["errors"]}
    assert db_codes["http_404"] == 2
    # The hosts by name are in the API, not in a label: all four failures from one host.
    assert hosts == {
        "hours": 24.0,
        "hosts": [{"host": "127.0.0.1", "failures": 4, "error_codes": db_codes}],
    }
    # The webhook fails once (the sink answers 500 first), then is delivered.
    prometheus.wait_until(
        'pixelbatch_webhook_deliveries_total{result="delivered"}', lambda r: len(r) == 1
    )
    assert len(sink.received) == 1
    prometheus.scrapes_after(2)

    p = prometheus
    assert p.value("sum(pixelbatch_images_processed_total)") == 11
    assert p.by_label("pixelbatch_images_processed_total", "outcome") == {"done": 7, "failed": 4}
    failed = p.by_label('pixelbatch_images_processed_total{outcome="failed"}', "error_code")
    assert failed == db_codes
    # Per distinct URL fetched: 10 downloads, 8 decodes (not the 404s), 6 stored (one photo
    # is listed twice: fetched once, counted twice above).
    stages = p.by_label("pixelbatch_stage_duration_seconds_count", "stage")
    assert stages == {"queue": 10, "download": 10, "transform": 8, "store": 6}
    assert p.by_label("pixelbatch_download_failures_total", "error_code") == {"http_404": 2}
    assert p.by_label("pixelbatch_download_failures_total", "host_class") == {"ip": 2}
    assert p.value("pixelbatch_image_bytes_in_total") == status["bytes_in"]
    assert p.value("pixelbatch_image_bytes_out_total") == status["bytes_out"]
    assert status["bytes_in"] > status["bytes_out"] > 0
    assert p.by_label("pixelbatch_batches_finished_total", "status") == {"COMPLETED_WITH_ERRORS": 1}
    assert p.by_label("pixelbatch_webhook_deliveries_total", "result") == {
        "retrying": 1,
        "delivered": 1,
    }
    assert p.by_label("pixelbatch_queue_images", "priority") == {"low": 0, "normal": 0, "high": 0}
    assert p.value("pixelbatch_oldest_pending_seconds") == 0
    assert p.value("pixelbatch_worker_busy") == 0
    assert p.value("pixelbatch_worker_capacity") > 0
    # The embedded server's memory includes its transform process.
    assert p.value("pixelbatch_worker_processes") >= 2
    assert p.value("pixelbatch_worker_resident_memory_bytes") > p.value(
        "process_resident_memory_bytes"
    )

    shown = evaluate_everything(p)
    empty = MAIN_PANELS - {title for title, values in shown.items() if values}
    assert not empty, shown
    print("\n" + json.dumps(shown, indent=1))  # the panel values, for the record

    _assert_json_log_lines(server, status["request_id"])


def evaluate_everything(prometheus: Prometheus) -> dict[str, list[str]]:
    """Evaluate every dashboard and alert expression (a PromQL error fails the test);
    returns each panel's values as ``labels=value`` strings."""
    shown: dict[str, list[str]] = {}
    for title, expr in dashboard_expressions():
        for series in prometheus.query(expr):
            labels = ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items()))
            shown.setdefault(title, []).append(f"{labels or 'value'}={series['value'][1]}")
        shown.setdefault(title, [])
    for _alert, expr in alert_expressions():
        prometheus.query(expr)
    return shown


def _assert_json_log_lines(server: support.ServerProcess, request_id: str) -> None:
    """One JSON line per finished image, and one per batch event (accepted, finished)."""
    events = []
    for line in server.log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("batch_id") == request_id:
                events.append(record)
    finished = [e for e in events if e.get("event") == "image_finished"]
    assert len(finished) == 10  # one per recording (the duplicate URL is recorded with it)
    assert {e["outcome"] for e in finished} == {"done", "failed"}
    done = next(e for e in finished if e["outcome"] == "done")
    assert done["bytes_in"] > done["bytes_out"] > 0 and done["code"] is None
    assert set(done["stages_ms"]) == {"queue", "download", "transform", "store"}
    assert sorted(e["code"] for e in finished if e["outcome"] == "failed").count("http_404") == 2
    (accepted,) = [e for e in events if e.get("event") == "batch_accepted"]
    assert (accepted["products"], accepted["images"]) == (4, 11)
    (batch,) = [e for e in events if e.get("event") == "batch_finished"]
    assert batch["status"] == "COMPLETED_WITH_ERRORS"
    assert batch["counts"]["images_failed"] == 4
