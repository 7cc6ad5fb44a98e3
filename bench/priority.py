"""The high-priority latency under a large running batch (issue 12): how long a 10-image
``high`` batch takes while a large ``normal`` batch keeps the embedded server busy, against
the same 10 images on the idle server, in the same run.

Each round times the idle case first, then uploads the large batch, waits until it runs,
times the high batch, and cancels the large batch (its remaining work would only cost
time). The figure is the median over rounds of busy / idle: 1.0 means the large batch did
not delay the urgent one at all; with a first-come-first-served queue it would be the
large batch's whole duration.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench.measure import rate, run_batch, workload
from bench.rig import Rig

URGENT_IMAGES = 10
MIN_BIG_IMAGES = 240


def measure_priority(rig: Rig, r: int) -> None:
    assert rig.embedded is not None
    api_url = rig.embedded.base_url
    base = rig.server.bases
    per_product = rig.cfg.images_per_product
    big = workload(rig.corpus, max(4 * rig.total, MIN_BIG_IMAGES), f"r{r}big")
    idle_wl = workload(rig.corpus, URGENT_IMAGES, f"r{r}hi-idle")
    busy_wl = workload(rig.corpus, URGENT_IMAGES, f"r{r}hi-busy")

    def sample() -> dict[str, Any]:
        hz = rig.cfg.status_hz
        idle = run_batch(api_url, idle_wl.csv(base, per_product), hz, data={"priority": "high"})
        with httpx.Client(base_url=api_url, timeout=60) as client:
            response = client.post(
                "/api/upload", files={"file": ("big.csv", big.csv(base, per_product), "text/csv")}
            )
            response.raise_for_status()
            big_id = response.json()["request_id"]
            _wait_running(client, big_id)
            busy = run_batch(api_url, busy_wl.csv(base, per_product), hz, data={"priority": "high"})
            big_status = client.get(f"/api/status/{big_id}").json()
            client.post(f"/api/batches/{big_id}/cancel")
        return rate(
            URGENT_IMAGES,
            busy_wl.megapixels,
            busy["seconds"],
            failed=busy["counts"]["images_failed"] + idle["counts"]["images_failed"],
            errors=busy["errors"] + idle["errors"],  # the statuses' summaries
            status=busy["status"],
            idle_s=round(idle["seconds"], 3),
            busy_over_idle=round(busy["seconds"] / idle["seconds"], 3),
            big_images=len(big.files),
            big_done_when_high_finished=big_status["counts"]["images_done"],
            big_status_when_high_finished=big_status["status"],
        )

    rig.measure("priority", sample)


def _wait_running(client: httpx.Client, request_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/api/status/{request_id}").json()["counts"]["images_done"] > 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the large batch {request_id} did not start in {timeout}s")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the high batch's time under load and idle, and their ratio."""
    return {
        "images": URGENT_IMAGES,
        "median_busy_s": statistics.median(r["seconds"] for r in rows),
        "median_idle_s": statistics.median(r["idle_s"] for r in rows),
        "median_busy_over_idle": statistics.median(r["busy_over_idle"] for r in rows),
        "big_images": rows[0]["big_images"],
        "big_still_running": all(r["big_status_when_high_finished"] != "COMPLETED" for r in rows),
    }
