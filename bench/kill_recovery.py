"""Kill-recovery delay (issue 12): what SIGKILLing one of two Celery workers mid-batch costs.

The same corpus twice on two workers: once undisturbed, once with worker ``w2`` killed with
SIGKILL (its whole process group: main process and pool child, as a vanished machine) when
a third of the images are done, and restarted at once, as a supervisor (Kubernetes,
systemd, compose ``restart:``) would. The delay is the difference of the two batch times:
what the dead worker's leased images wait before another worker takes them over, plus the
capacity lost while the worker restarts. Measured with the shipped lease and sweep settings.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx

from bench import procs
from bench.config import log
from bench.distributed import Distributed
from bench.measure import run_batch, workload
from bench.rig import Rig

KILL_AT = 1 / 3  # of the images done


def measure_kill_recovery(rig: Rig, dist: Distributed, api: procs.Api) -> dict[str, Any]:
    cfg = rig.cfg
    dist.scale(2)
    for i, w in enumerate(dist.workers):
        rig.mem.add(f"worker w{i + 1}", w.pid)
    total = rig.total
    base = rig.server.bases
    per, hz = cfg.images_per_product, cfg.status_hz

    unkilled = run_batch(api.base_url, workload(rig.corpus, total, "kill-a").csv(base, per), hz)
    log(cfg, f"  kill_recovery unkilled {total} images {unkilled['seconds']:.2f} s")

    result: dict[str, Any] = {}

    def killed_run() -> None:
        body = workload(rig.corpus, total, "kill-b").csv(base, per)
        result.update(run_batch(api.base_url, body, hz))

    runner = threading.Thread(target=killed_run, daemon=True)
    runner.start()
    killed_at = _wait_done(api, total, runner)
    victim = dist.workers[1]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)
    killed_clock = time.monotonic()
    dist.workers[1] = procs.Worker("w2-restarted", dist.env, dist.workdir)
    restart_s = time.monotonic() - killed_clock
    runner.join()
    if result.get("status") != "COMPLETED" or result["counts"]["images_done"] != total:
        raise RuntimeError(f"the killed run did not complete every image: {result}")
    delay = result["seconds"] - unkilled["seconds"]
    figures = {
        "images": total,
        "workers": 2,
        "killed": "w2, SIGKILL of its process group, restarted at once",
        "killed_at_done": killed_at,
        "restart_s": round(restart_s, 2),
        "unkilled_s": round(unkilled["seconds"], 2),
        "killed_s": round(result["seconds"], 2),
        "delay_s": round(delay, 2),
        "ratio": round(result["seconds"] / unkilled["seconds"], 2),
    }
    log(
        cfg,
        f"  kill_recovery killed at {killed_at}/{total}: {result['seconds']:.2f} s, "
        f"delay {delay:.2f} s (worker back in {restart_s:.1f} s)",
    )
    dist.scale(1)
    return figures


def _wait_done(api: procs.Api, total: int, runner: threading.Thread) -> int:
    """Wait until ``KILL_AT`` of the running batch's images are done; returns how many."""
    deadline = time.monotonic() + 600
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        while time.monotonic() < deadline and runner.is_alive():
            listed = client.get("/api/batches", params={"status": "PROCESSING"}).json()
            for batch in listed["items"]:
                done = int(batch["counts"]["images_done"])
                if done >= total * KILL_AT:
                    return done
            time.sleep(0.05)
    raise RuntimeError("the killed run never reached a third of its images")
