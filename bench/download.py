"""CPU per download: pixelbatch's Fetcher against well-known clients, on the bench's server.

The per-image overhead of the small-image table is mostly Python in the API process, and
the download is its largest part. This measures that part alone against outside yardsticks
fetching the same files from the same server: urllib3 (the pooled client under requests and
botocore, pure Python over ``http.client``) and libcurl from C through pycurl (``pip install
'.[bench]'``; reported as n/a without it). Neither guards addresses, caps sizes or keeps a
deadline as the Fetcher does: the gap is what those guarantees and our Python cost.

Each client runs in a process of its own (``python -m bench.download``), so only its CPU is
counted, with 8 threads, after a warm-up that opens the connections.

    .venv/bin/python -m bench.run --modes download
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS = 8
CLIENTS = ("pixelbatch", "urllib3", "libcurl")


def _getter(client: str) -> Callable[[str], int] | None:
    """A function downloading one URL and returning its size, or None if not installed."""
    if client == "pixelbatch":
        from pixelbatch.fetch import FetchConfig, Fetcher
        from pixelbatch.settings import Settings

        fetcher = Fetcher(FetchConfig.from_settings(Settings()))
        return lambda url: len(fetcher.fetch(url).data)
    if client == "urllib3":
        import urllib3

        pool = urllib3.PoolManager(maxsize=THREADS)
        return lambda url: len(pool.request("GET", url).data)
    try:
        import pycurl  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    local = threading.local()

    def curl(url: str) -> int:
        handle = getattr(local, "handle", None)
        if handle is None:
            handle = local.handle = pycurl.Curl()
        body = io.BytesIO()
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.WRITEDATA, body)
        handle.perform()
        return len(body.getvalue())

    return curl


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(client: str, urls: list[str]) -> dict[str, Any]:
    get = _getter(client)
    if get is None:
        return {"client": client, "missing": True}
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(get, urls[: THREADS * 2]))  # connections open, code warm
        cpu, wall = _cpu(), time.perf_counter()
        sizes = list(pool.map(get, urls))
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    return {
        "client": client,
        "requests": len(urls),
        "bytes": sum(sizes),
        "cpu_ms_per_request": round(1000 * cpu / len(urls), 3),
        "wall_s": round(wall, 2),
    }


def measure(urls: list[str], env: dict[str, str], rounds: int) -> dict[str, Any]:
    """Every client over ``urls`` in each round (interleaved); medians of CPU per request."""
    samples: dict[str, list[float]] = {c: [] for c in CLIENTS}
    info: dict[str, Any] = {}
    for _ in range(rounds):
        for client in CLIENTS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.download", client],
                input="\n".join(urls),
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result = json.loads(out.stdout)
            if result.get("missing"):
                continue
            samples[client].append(result["cpu_ms_per_request"])
            info["kb_per_request"] = round(result["bytes"] / result["requests"] / 1000, 1)
    medians = {c: round(statistics.median(v), 3) if v else None for c, v in samples.items()}
    return {**info, "requests": len(urls), "cpu_ms_per_request": medians, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description="one client's CPU per download (stdin: URLs)")
    parser.add_argument("client", choices=CLIENTS)
    args = parser.parse_args()
    urls = [line for line in sys.stdin.read().splitlines() if line]
    print(json.dumps(_child(args.client, urls)))


if __name__ == "__main__":
    main()
