"""Real PostgreSQL, real Redis, real Celery worker processes, real API process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pixelbatch.demo.server import ImageServer
from tests import support


@pytest.fixture
def pg_url() -> Iterator[str]:
    with support.postgres_database() as url:
        yield url


@pytest.fixture
def broker_url() -> Iterator[str]:
    """This xdist worker's own Redis database, emptied before and after."""
    url = support.worker_redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


class WorkerProcess:
    """``pixelbatch worker`` in its own session, so killing it kills its pool children too,
    as a machine dying would."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pixelbatch",
                "worker",
                "--concurrency",
                "1",
                "--hostname",
                f"{self.name}@%h",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if " ready." in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = {**os.environ, **env}
        self.api: support.ServerProcess | None = None
        self.workers: list[WorkerProcess] = []

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "pixelbatch", "db", "upgrade"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start_api(self) -> support.ServerProcess:
        self.api = support.ServerProcess(self.tmp_path / "api", self.env).start()
        return self.api

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(f"w{len(self.workers) + 1}", self.env, self.tmp_path).start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop()


@pytest.fixture
def cluster_env(tmp_path: Path, pg_url: str, broker_url: str) -> dict[str, str]:
    return {
        "PIXELBATCH_DATABASE_URL": pg_url,
        "PIXELBATCH_BROKER_URL": broker_url,
        "PIXELBATCH_STORAGE_URL": f"file://{tmp_path / 'shared'}",
        "PIXELBATCH_DATA_DIR": str(tmp_path / "data"),
        "PIXELBATCH_WEBHOOK_SECRET": "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXBpeGVsYmF0Y2gtdGVzdHM=",
        "PIXELBATCH_WEBHOOK_BACKOFF_BASE": "0.2",
        "PIXELBATCH_LEASE_SECONDS": "3",
        "PIXELBATCH_SWEEP_INTERVAL": "1",
        "PIXELBATCH_FINALIZE_LEASE_SECONDS": "10",
        "PIXELBATCH_FETCH_RETRIES": "1",
        "PIXELBATCH_FETCH_BACKOFF_BASE": "0.05",
        "PIXELBATCH_CHUNK_SIZE": "8",
        "PIXELBATCH_FETCH_CONCURRENCY": "8",
    }


@pytest.fixture
def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def sink() -> Iterator[tuple[ImageServer, support.WebhookSink]]:
    """A webhook receiver that takes every delivery at once."""
    server = ImageServer()
    hook = support.WebhookSink(fail_first=0)
    server.add("/hook", hook)
    with server:
        yield server, hook
