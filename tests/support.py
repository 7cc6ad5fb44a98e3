"""Test helpers: generated images, a pixelbatch server in a real subprocess, a webhook sink,
and the databases each pytest-xdist worker owns."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import psycopg
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from pixelbatch.db.engine import make_engine, make_session_factory
from pixelbatch.db.migrate import upgrade
from pixelbatch.demo.catalog import product_photo


def jpeg(
    size: tuple[int, int] = (640, 480), quality: int = 90, seed: int = 1, **params: Any
) -> bytes:
    buf = io.BytesIO()
    product_photo(seed, size).save(buf, "JPEG", quality=quality, **params)
    return buf.getvalue()


def png_with_alpha(size: tuple[int, int] = (300, 200)) -> bytes:
    im = product_photo(7, size).convert("RGBA")
    alpha = Image.new("L", size, 255)
    alpha.paste(0, (0, 0, size[0] // 4, size[1] // 4))  # transparent top-left corner
    im.putalpha(alpha)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


CMYK_COLOUR = (200, 40, 60)


def cmyk_jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    im = Image.new("RGB", size, CMYK_COLOUR).convert("CMYK")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def rotated_jpeg() -> bytes:
    """Stored 240x120 with a red block in the stored top-left; EXIF orientation 6 (rotate 90
    clockwise to display), so upright it is 120x240 with the red block at the top-right."""
    im = Image.new("RGB", (240, 120), (20, 20, 200))
    im.paste((230, 10, 10), (0, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def webp(size: tuple[int, int] = (400, 300)) -> bytes:
    buf = io.BytesIO()
    product_photo(3, size).save(buf, "WEBP", quality=85)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebhookSink:
    """Records webhook POSTs; answers the first ``fail_first`` with 500."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        body = handler.rfile.read(length)
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.fail_first
            if not failing:
                self.received.append(({k.lower(): v for k, v in handler.headers.items()}, body))
        status = 500 if failing else 200
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


class ServerProcess:
    """``pixelbatch serve`` in a real subprocess, talked to over real HTTP."""

    def __init__(self, data_dir: Path, env: dict[str, str], port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "PIXELBATCH_DATA_DIR": str(data_dir),
            "PIXELBATCH_PORT": str(self.port),
            "PIXELBATCH_HOST": "127.0.0.1",
            "PIXELBATCH_POLL_INTERVAL": "0.2",
            # One image process per server: the tests' batches are small, and each extra
            # process is an interpreter start that competes with the parallel test workers.
            "PIXELBATCH_TRANSFORM_WORKERS": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pixelbatch", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)


def csv_bytes(
    rows: list[list[str]], header: list[str] | None = None, delimiter: str = ","
) -> bytes:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)
    writer.writerow(header or ["S. No.", "Product Name", "Input Image Urls"])
    writer.writerows(rows)
    return buf.getvalue().encode()


def wait_final(client: httpx.Client, request_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/status/{request_id}").json()
        if body["status"] not in ("PENDING", "PROCESSING"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"batch {request_id} did not finish: {json.dumps(body)}")


# --------------------------------------------------------------------------- databases

PG_ADMIN = os.environ.get("PIXELBATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL (``PIXELBATCH_TEST_PG``), as a SQLAlchemy URL;
    dropped afterwards, whoever is still connected. No server is a failure, not a skip: CI
    starts one, and a skipped database test would hide a broken code path."""
    name = f"pixelbatch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``url``, its engine disposed afterwards."""
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def migrated_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``url`` after running every migration, disposed afterwards."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def empty_postgres(url: str) -> None:
    """Truncate every table but Alembic's, restarting identities, so a migrated database
    reused between tests looks freshly migrated. The lock timeout turns a connection some
    earlier test leaked mid-transaction into a failure instead of a hang."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            tables = conn.scalars(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables"
                    " WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
                )
            ).all()
            if tables:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


def migrate_sqlite(path: Path) -> None:
    """Create ``path`` as a migrated SQLite database, all in the one file (WAL checkpointed
    on close), so copying that file gives a fresh database without migrating again."""
    with migrated_sessions(f"sqlite:///{path}"):
        pass
    leftover = [p for p in path.parent.glob(path.name + "-*") if p.stat().st_size]
    assert not leftover, f"SQLite left {leftover} next to the template"


def copy_sqlite(template: Path, path: Path) -> str:
    """A fresh copy of a ``migrate_sqlite`` template at ``path``, as a SQLAlchemy URL."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- xdist workers

REDIS_BASE = os.environ.get("PIXELBATCH_TEST_REDIS", "redis://127.0.0.1:6379")

# One Redis database per xdist worker. Never 0 (a developer's default), and 12-15 stay free:
# tests/unit/test_ratelimit.py and other tools use fixed numbers there.
WORKER_REDIS_DBS = (8, 9, 10, 11, 1, 2, 3, 4, 5, 6, 7)


def worker_index() -> int:
    """This pytest-xdist worker's number (``gw3`` is 3); 0 when not under xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def worker_redis_url() -> str:
    """This worker's own Redis database: the Celery broker's keys have fixed names, so two
    workers sharing a database would take each other's messages."""
    index = worker_index()
    if index >= len(WORKER_REDIS_DBS):
        raise RuntimeError(
            f"xdist worker {index} has no Redis database of its own: "
            f"run with at most {len(WORKER_REDIS_DBS)} workers"
        )
    return f"{REDIS_BASE}/{WORKER_REDIS_DBS[index]}"
