"""How one measurement is taken: the images it covers, its rate, and a batch timed end to end.

Status latency is sampled by the same polls that wait for a batch (the figure under load)
and by a probe of idle APIs (the control).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench import corpus as corpus_mod
from bench.config import Config

FINAL = ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELLED")


# --------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """The images of one measurement: corpus files (repeating) behind distinct URLs."""

    files: list[corpus_mod.CorpusFile]
    tag: str

    @property
    def megapixels(self) -> float:
        return sum(f.megapixels for f in self.files)

    def urls(self, bases: list[str]) -> list[str]:
        """Spread over the suppliers in turn (each of ``bases`` is one image host)."""
        return [
            f"{bases[i % len(bases)]}/img/{f.name}?n={self.tag}-{i}"
            for i, f in enumerate(self.files)
        ]

    def csv(self, bases: list[str], per_product: int) -> bytes:
        urls = self.urls(bases)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["S. No.", "Product Name", "Input Image Urls", "Brand"])
        for row, start in enumerate(range(0, len(urls), per_product), start=1):
            writer.writerow(
                [row, f"Bench product {row}", ",".join(urls[start : start + per_product]), "Bench"]
            )
        return buf.getvalue().encode()


def workload(corpus: corpus_mod.Corpus, count: int, tag: str) -> Workload:
    files = corpus.files
    return Workload([files[i % len(files)] for i in range(count)], tag)


def subset_count(cfg: Config, corpus: corpus_mod.Corpus, total: int) -> int:
    """Whole passes over the corpus, so every mode sees the same mix of files."""
    n = len(corpus.files)
    wanted = max(1, round(total * cfg.subset))
    return max(n, (wanted // n) * n) if total >= n else total


def rate(images: int, megapixels: float, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "images": images,
        "megapixels": round(megapixels, 1),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 2),
        "mp_per_s": round(megapixels / seconds, 2),
        **extra,
    }


# --------------------------------------------------------------------------- batches


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_batch(
    api_url: str,
    body: bytes,
    hz: float,
    timeout: float = 1800,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Upload (``data``: more form fields); poll the status endpoint ``hz`` times a second
    until final. The polls are also the status-latency samples (taken while it runs)."""
    latencies: list[float] = []
    with httpx.Client(base_url=api_url, timeout=60) as client:
        started = time.perf_counter()
        response = client.post(
            "/api/upload", files={"file": ("bench.csv", body, "text/csv")}, data=data or {}
        )
        if response.status_code != 202:
            raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
        accepted = time.perf_counter()
        request_id = response.json()["request_id"]
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status = client.get(f"/api/status/{request_id}").json()
            latencies.append((time.perf_counter() - t0) * 1000)
            if status["status"] in FINAL:
                break
            time.sleep(max(0.0, 1 / hz - (time.perf_counter() - t0)))
        finished = time.perf_counter()
        if status.get("status") not in FINAL:
            raise RuntimeError(f"batch {request_id} did not finish in {timeout}s: {status}")
        sizes = output_sizes(client, request_id, status)  # after the clock stopped
    return {
        **sizes,
        "request_id": request_id,
        "seconds": finished - started,
        "upload_s": accepted - started,
        "status": status["status"],
        "counts": status["counts"],
        "errors": status.get("errors", []),
        "latencies_ms": latencies[:-1] or latencies,  # the last poll saw the batch done
    }


def output_sizes(client: httpx.Client, request_id: str, status: dict[str, Any]) -> dict[str, Any]:
    """Total bytes in and out (from the status) and how many images kept their original or
    grew (from the images listing, paged): never a bigger file, measured. None for a count
    the measured code does not report (a build from before ``kept_original``)."""
    kept: int | None = 0
    grew: int | None = 0
    offset = 0
    while True:
        page = client.get(
            f"/api/batches/{request_id}/images", params={"offset": offset, "limit": 1000}
        ).json()
        for item in page["items"]:
            if "kept_original" not in item:
                kept = grew = None
            elif kept is not None and grew is not None:
                kept += bool(item["kept_original"])
                grew += bool(item["grew"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    return {
        "bytes_in": status.get("bytes_in"),
        "bytes_out": status.get("bytes_out"),
        "kept_original": kept,
        "grew": grew,
    }


class StatusProbe:
    """Polls GET /api/status of finished batches in a thread (the control measurement)."""

    def __init__(self, hz: float, targets: list[tuple[str, str, str]]) -> None:
        self.hz = hz
        self.targets = targets
        self.values: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        if self.targets:
            self._thread.start()

    def _loop(self) -> None:
        clients = {name: httpx.Client(base_url=url, timeout=30) for name, url, _ in self.targets}
        try:
            while not self._stop.is_set():
                t_loop = time.perf_counter()
                for name, _, rid in self.targets:
                    t0 = time.perf_counter()
                    clients[name].get(f"/api/status/{rid}")
                    self.values[name].append((time.perf_counter() - t0) * 1000)
                self._stop.wait(max(0.0, 1 / self.hz - (time.perf_counter() - t_loop)))
        finally:
            for c in clients.values():
                c.close()

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return self.values
