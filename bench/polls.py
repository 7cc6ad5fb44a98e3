"""The API's CPU per status poll and per image page, against a plain FastAPI endpoint.

Clients poll: the web UI asks for the status and the first page of images every second while
it shows a batch, scripts poll the status, and each poll is CPU the API's download threads
and transforms do not get. This measures one embedded API's own CPU (``/proc``) over many
requests for a finished batch of ``ROWS`` images with failures of two kinds (so the
status carries its error summary), against the yardstick of a plain FastAPI app with one
``def`` endpoint returning a small JSON object, served by the same uvicorn in a process of
its own: what the framework costs before any of our work.

    .venv/bin/python -m bench.run --modes polls
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.measure import FINAL

ROWS = 2000
REQUESTS = 500
QUICK = 200  # rows and requests of the smoke run (``--quick``)

YARDSTICK_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/status")
def status() -> dict[str, object]:
    return {"request_id": "x", "status": "PROCESSING", "counts": {"done": 1, "failed": 2}}
"""


def _cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(client: httpx.Client, pid: int, path: str, requests: int) -> float:
    for _ in range(20):  # warm: connection open, caches filled
        client.get(path).raise_for_status()
    before = _cpu_ms(pid)
    for _ in range(requests):
        client.get(path)
    return (_cpu_ms(pid) - before) / requests


def _failing_catalog(base: str, rows: int) -> bytes:
    """Rows whose URLs fail in two ways (the server answers 404; a private address, which
    the fetcher refuses), so the error summary has codes to count."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for i in range(1, rows + 1):
        url = f"{base}/missing/{i}.jpg" if i % 2 else f"http://10.255.255.1/{i}.jpg"
        lines.append(f"{i},Product {i},{url}")
    return "\n".join(lines).encode()


def measure(
    server: procs.ImageServer, env: dict[str, str], workdir: Path, rounds: int, quick: bool
) -> dict[str, Any]:
    rows, requests = (QUICK, QUICK) if quick else (ROWS, REQUESTS)
    api = procs.Api("polls", {**env, "PIXELBATCH_DATA_DIR": str(workdir / "polls-data")}, workdir)
    yard_port = procs.free_port()
    app_dir = workdir / "yardstick"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "plain_app.py").write_text(YARDSTICK_APP)
    yardstick = subprocess.Popen(
        [
            procs.python(),
            "-m",
            "uvicorn",
            "plain_app:app",
            "--port",
            str(yard_port),
            "--log-level",
            "warning",
        ],
        cwd=app_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            body = _failing_catalog(server.base_url, rows)
            upload = client.post("/api/upload", files={"file": ("polls.csv", body, "text/csv")})
            rid = upload.json()["request_id"]
            deadline = time.monotonic() + 300
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                status = client.get(f"/api/status/{rid}").json()
                if status["status"] in FINAL and status.get("output_csv"):
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the polled batch did not finish in 300 s: {status}")
            samples: dict[str, list[float]] = {"status": [], "image_page": [], "yardstick": []}
            with httpx.Client(base_url=f"http://127.0.0.1:{yard_port}", timeout=60) as plain:
                _wait_ready(plain)
                for _ in range(rounds):
                    samples["status"].append(
                        _cpu_per_request(client, api.pid, f"/api/status/{rid}", requests)
                    )
                    samples["image_page"].append(
                        _cpu_per_request(
                            client, api.pid, f"/api/batches/{rid}/images?limit=50", requests
                        )
                    )
                    samples["yardstick"].append(
                        _cpu_per_request(plain, yardstick.pid, "/status", requests)
                    )
        return {
            "images": rows,
            "failed": status.get("counts", {}).get("images_failed"),
            "error_codes": len(status.get("errors", [])),
            "requests": requests,
            "cpu_ms_per_request": {k: round(statistics.median(v), 3) for k, v in samples.items()},
            "samples": samples,
        }
    finally:
        yardstick.terminate()
        yardstick.wait(timeout=10)
        api.stop()


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.get("/status")
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the yardstick app did not start")
