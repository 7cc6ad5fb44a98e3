"""Processes the benchmark starts and watches: the image server, `pixelbatch serve`, Celery
workers; peak memory from /proc (VmHWM of every process in a tree, children included);
CPU taken by processes that are not ours (other jobs on the machine skew the figures)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


def status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM", "VmRSS")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime+cutime+cstime, utime+stime) in ticks, or None. A reaped child's
    time moves into its parent's cutime: counted for our processes (short-lived children
    such as the naive run), not for foreign ones (a test runner reaping a long-lived child
    would book its whole life into one measurement)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    own = int(rest[11]) + int(rest[12])
    return int(rest[1]), own + int(rest[13]) + int(rest[14]), own


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _label(cmd: str) -> str:
    if "multiprocessing.resource_tracker" in cmd:
        return "resource_tracker"
    if "multiprocessing.spawn" in cmd or "spawn_main" in cmd:
        return "transform pool child"
    if "pixelbatch worker" in cmd or "pixelbatch worker" in cmd.replace("-m ", ""):
        return "celery pool child"
    return cmd[-60:]


class MemWatch:
    """Samples VmHWM/VmRSS of registered process trees every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.peaks: dict[int, dict[str, object]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memwatch")

    def add(self, role: str, pid: int) -> None:
        with self._lock:
            self.roots[role] = pid

    def start(self) -> MemWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sample()
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        for role, root in roots.items():
            for pid in [root, *descendants(root)]:
                kb = status_kb(pid)
                if "VmHWM" not in kb:
                    continue
                with self._lock:
                    entry = self.peaks.get(pid)
                    if entry is None or entry["role"] != role:
                        kind = "main" if pid == root else _label(cmdline(pid))
                        if kind.endswith("pixelbatch worker --concurrency 1") or (
                            pid != root and "pixelbatch" in kind and "worker" in kind
                        ):
                            kind = "celery pool child"
                        entry = {"role": role, "pid": pid, "kind": kind, "hwm_kb": 0}
                        self.peaks[pid] = entry
                    entry["hwm_kb"] = max(int(entry["hwm_kb"]), kb["VmHWM"])  # type: ignore[call-overload]

    def report(self) -> list[dict[str, object]]:
        with self._lock:
            rows = [
                {
                    "role": e["role"],
                    "pid": e["pid"],
                    "process": e["kind"],
                    "peak_rss_mb": round(int(e["hwm_kb"]) / 1024, 1),
                }  # type: ignore[call-overload]
                for e in self.peaks.values()
                if e["kind"] != "resource_tracker"
            ]
        return sorted(rows, key=lambda r: (str(r["role"]), int(r["pid"])))  # type: ignore[call-overload]


class CpuLedger:
    """CPU seconds used by every process on the machine between ``start`` and ``stop``,
    split into ours (descendants of this process), services (postgres, redis) and foreign."""

    SERVICES = ("postgres", "redis-server")

    def __init__(self) -> None:
        # Processes of ours reported on their own as well (still counted in "ours"):
        # name -> pid, e.g. the image server, which stands in for the suppliers.
        self.apart: dict[str, int] = {}

    def _snapshot(self) -> dict[int, tuple[str, int, int]]:
        snap = {}
        for pid in all_pids():
            st = _stat(pid)
            if st is None:
                continue
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            snap[pid] = (comm, st[1], st[2])
        return snap

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        wall = time.monotonic() - self._t0
        ours = set(descendants(os.getpid())) | {os.getpid()}
        split = {"ours": 0.0, "services": 0.0, "foreign": 0.0}
        split.update({name: 0.0 for name in self.apart})
        apart = {pid: name for name, pid in self.apart.items()}
        for pid, (comm, with_children, own) in after.items():
            prev = self._before.get(pid)
            same = prev is not None and prev[0] == comm
            if pid in ours:
                key = "ours"
                delta = with_children - (prev[1] if prev is not None and same else 0)
                if pid in apart:
                    split[apart[pid]] += delta / CLK_TCK
            else:
                key = "services" if comm.startswith(self.SERVICES) else "foreign"
                delta = own - (prev[2] if prev is not None and same else 0)
            split[key] += delta / CLK_TCK
        return {"wall_s": round(wall, 2), **{k: round(v, 2) for k, v in split.items()}}


# --------------------------------------------------------------------------- processes


def python() -> str:
    return sys.executable


class ImageServer:
    """The bench's suppliers: ``hosts`` loopback addresses (127.0.0.1 .. 127.0.0.N), one port."""

    def __init__(self, directory: Path, latency: float, bandwidth: float, hosts: int = 1) -> None:
        self.proc = subprocess.Popen(
            [
                python(),
                "-m",
                "bench.imageserver",
                str(directory),
                "--latency",
                str(latency),
                "--bandwidth",
                str(bandwidth),
                "--hosts",
                str(hosts),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        addresses = [f"127.0.0.{n}:{self.port}" for n in range(1, hosts + 1)]
        self.base_url = f"http://{addresses[0]}"  # for a single URL (the large CSV's 404s)
        self.bases = [f"http://{address}" for address in addresses]  # workloads spread over all
        self.allow = ",".join(addresses)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Managed:
    """A ``pixelbatch`` command in its own session, so that stopping it stops its children
    (Celery's pool, the transform processes) too; output goes to ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [python(), "-m", "pixelbatch", *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass


class Api(_Managed):
    """``pixelbatch serve`` (embedded: with its workers; distributed: API only)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PIXELBATCH_PORT": str(self.port), "PIXELBATCH_HOST": "127.0.0.1"}
        super().__init__(["serve"], self.env, log_dir / f"{name}.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} not ready: {self.log_path.read_text()[-3000:]}")


class Worker(_Managed):
    """``pixelbatch worker --concurrency 1`` in its own session (killpg stops its child)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        args = ["worker", "--concurrency", "1", "--hostname", f"{name}@%h"]
        super().__init__(args, env, log_dir / f"worker-{name}.log")
        start = self.log_path.stat().st_size
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited: {self.log_path.read_text()[-3000:]}")
            with self.log_path.open("rb") as f:
                f.seek(start)
                if b" ready." in f.read():
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker {name} not ready: {self.log_path.read_text()[-3000:]}")
