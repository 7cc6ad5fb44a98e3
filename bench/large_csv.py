"""The large-CSV measurement: how fast and how lean an API accepts a 100,000-row upload.

The rows point at URLs that answer 404 at once and the batch is cancelled straight away:
what is measured is the upload path, not the processing.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.config import Config, log
from bench.measure import pct


def large_csv(
    cfg: Config, server: procs.ImageServer, env: dict[str, str], workdir: Path, name: str
) -> dict[str, Any]:
    """Upload ``large_rows`` rows (URLs answer 404 at once), time the 202, measure the API
    process's memory growth, cancel the batch straight away."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for i in range(1, cfg.large_rows + 1):
        writer.writerow([i, f"Product {i}", f"{server.base_url}/missing/{i}.jpg"])
    body = buf.getvalue().encode()
    api = procs.Api(name, env, workdir)
    try:
        with httpx.Client(base_url=api.base_url, timeout=300) as client:
            client.get("/healthz")
            before = procs.status_kb(api.pid)
            peak = {"kb": before.get("VmHWM", 0)}
            stop = threading.Event()

            def watch() -> None:  # VmHWM is the lifetime peak; this confirms the window
                while not stop.wait(0.05):
                    peak["kb"] = max(peak["kb"], procs.status_kb(api.pid).get("VmRSS", 0))

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            t0 = time.perf_counter()
            response = client.post("/api/upload", files={"file": ("large.csv", body, "text/csv")})
            to_202 = time.perf_counter() - t0
            stop.set()
            watcher.join()
            after = procs.status_kb(api.pid)
            result: dict[str, Any] = {
                "rows": cfg.large_rows,
                "csv_mb": round(len(body) / 1e6, 2),
                "status_code": response.status_code,
                "seconds_to_202": round(to_202, 3),
                "rss_before_mb": round(before.get("VmRSS", 0) / 1024, 1),
                "hwm_before_mb": round(before.get("VmHWM", 0) / 1024, 1),
                "hwm_after_mb": round(after.get("VmHWM", 0) / 1024, 1),
                "rss_after_mb": round(after.get("VmRSS", 0) / 1024, 1),
            }
            result["growth_mb"] = round(
                (max(after.get("VmHWM", 0), peak["kb"]) - before.get("VmHWM", 0)) / 1024, 1
            )
            if response.status_code == 202:
                result.update(_cancel(api, response.json()["request_id"]))
            else:
                result["error"] = response.text[:500]
        log(cfg, f"  large csv ({name}): {result}")
        return result
    finally:
        api.stop()


def _cancel(api: procs.Api, rid: str) -> dict[str, Any]:
    """Cancel at once; a failed cancel is retried (and reported: it is a finding). Then the
    status endpoint of the cancelled batch, which must stay quick."""
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    attempts: list[int | str] = []
    for _ in range(5):
        code: int | str
        try:
            with httpx.Client(base_url=api.base_url, timeout=60) as c2:
                code = c2.post(f"/api/batches/{rid}/cancel").status_code
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        attempts.append(code)
        if code in (200, 409):
            break
        time.sleep(0.5)
    result["cancel_s"] = round(time.perf_counter() - t0, 3)
    result["cancel_status"] = attempts[-1]
    result["cancel_attempts"] = attempts
    lat: list[float] = []
    pages: list[float] = []
    status_body: dict[str, Any] = {}
    with httpx.Client(base_url=api.base_url, timeout=60) as c3:
        for _ in range(10):
            t0 = time.perf_counter()
            status_body = c3.get(f"/api/status/{rid}").json()
            lat.append((time.perf_counter() - t0) * 1000)
        for _ in range(10):  # what the web UI reads each second while it shows the batch
            t0 = time.perf_counter()
            c3.get(f"/api/batches/{rid}/images", params={"limit": 50}).raise_for_status()
            pages.append((time.perf_counter() - t0) * 1000)
    result["status_after_cancel"] = status_body.get("status")
    result["status_latency_ms_p50"] = round(pct(lat, 50), 1)
    result["status_latency_ms_max"] = round(max(lat), 1)
    result["image_page_ms_p50"] = round(pct(pages, 50), 1)
    return result
