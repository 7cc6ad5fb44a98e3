"""A ``pixelbatch worker``'s ``/metrics``: its prefork children and companions, summed.

Celery's image processes are forked children that come and go (recycled past
``PIXELBATCH_WORKER_MAX_MEMORY_MB``); each keeps its counters in prometheus-client's
multiprocess files in one directory per worker, cleaned at start, and the main process
serves their sum on ``PIXELBATCH_METRICS_PORT``, with its own process metrics and the
resident memory of its whole process tree. The webhook companion (``--role all``) inherits
the directory, so one port reports the whole worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE_RE = re.compile(r"gauge_live\w+_(\d+)\.db")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def use_directory(directory: Path | None, *, clean: bool) -> Path:
    """Switch this process (and the children it forks or starts) to multiprocess mode.

    Must run before the first instrument is built. ``clean``: the owning worker empties the
    directory, so counters of an earlier run on the same path are not added to this one's."""
    path = directory or Path(tempfile.mkdtemp(prefix="pixelbatch-metrics-"))
    if clean and path.exists():
        for entry in path.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


def forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges (busy, capacity) of children that are gone, also those killed
    without a word; their counters stay, so totals survive a recycled child."""
    for entry in directory.glob("gauge_live*.db"):
        match = _LIVE_FILE_RE.fullmatch(entry.name)
        if match and not pid_alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine still runs; one we may not signal (another user's)
    or cannot tell about counts as alive: only a process known gone is taken for dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _tree(root: int) -> Iterator[int]:
    """``root`` and its descendants, from /proc (Linux; elsewhere just ``root``)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
    todo = [root]
    while todo:
        pid = todo.pop()
        yield pid
        todo.extend(children.get(pid, ()))


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def memory_limit() -> int | None:
    """The container's memory limit (cgroup v2, then v1), or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max" and int(text) < 1 << 60:
                return int(text)
    return None


class WorkerCollector(Collector):
    """What no child can report for the others: the tree's memory and the live-gauge hygiene.
    The embedded server registers it too (without a directory): its transform processes
    are its children."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.directory is not None:
            forget_dead_processes(self.directory)
        pids = list(_tree(os.getpid()))
        yield GaugeMetricFamily(
            "pixelbatch_worker_resident_memory_bytes",
            "Resident memory of this worker and all its child processes",
            value=sum(_rss(pid) for pid in pids),
        )
        yield GaugeMetricFamily(
            "pixelbatch_worker_processes",
            "Processes of this worker (main + children)",
            value=len(pids),
        )
        limit = memory_limit()
        if limit is not None:
            yield GaugeMetricFamily(
                "pixelbatch_memory_limit_bytes",
                "The container's memory limit (cgroup)",
                value=limit,
            )


def serve(directory: Path, port: int, host: str) -> None:
    """Serve the worker's ``/metrics`` from a daemon thread of this (the main) process."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    registry.register(WorkerCollector(directory))
    start_http_server(port, addr=host, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics (%s)", host, port, directory)
