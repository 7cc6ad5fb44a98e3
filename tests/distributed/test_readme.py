"""The README's "Distributed mode" commands, run as written, process a batch end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pixelbatch.demo.server import ImageServer, Route
from tests import support

REPO = Path(__file__).resolve().parents[2]
ANCHOR = "Locally, against the machine's PostgreSQL and Redis:"


def readme_block() -> str:
    """The first ``sh`` block after the anchor sentence of the README."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(ANCHOR) :]
    start = after.index("```sh\n") + len("```sh\n")
    return after[start : after.index("```", start)]


def _substitute(script: str, replacements: dict[str, str]) -> str:
    """Replace what must differ per run; each text must be in the README exactly once, so a
    README edit that moves it fails here instead of running against shared state."""
    for old, new in replacements.items():
        assert script.count(old) == 1, f"README block no longer has {old!r} once:\n{script}"
        script = script.replace(old, new)
    return script


@pytest.fixture
def database_name() -> Iterator[str]:
    """A fresh name the README's own ``createdb`` creates; dropped afterwards."""
    name = f"pixelbatch_readme_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(support.PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """The script's background API and workers share its process group: end them all."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_readme_distributed_commands_process_a_batch(
    tmp_path: Path, database_name: str, broker_url: str
) -> None:
    script = _substitute(
        readme_block(),
        {
            "127.0.0.1:5432/pixelbatch\n": f"127.0.0.1:5432/{database_name}\n",
            "-U postgres pixelbatch\n": f"-U postgres {database_name}\n",
            "redis://127.0.0.1:6379/0\n": f"{broker_url}\n",
        },
    )
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    port = support.free_port()
    images = ImageServer()
    images.add("/mug.jpg", Route(support.jpeg((320, 240)), "image/jpeg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELBATCH_")}
    env |= {"PIXELBATCH_PORT": str(port), "PIXELBATCH_FETCH_ALLOW": images.allow_entry}
    log_path = tmp_path / "readme.log"
    with images, log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            body = support.csv_bytes([["1", "Mug", f"{images.base_url}/mug.jpg"]])
            with httpx.Client(base_url=base, timeout=30) as client:
                response = client.post(
                    "/api/upload", files={"file": ("catalog.csv", body, "text/csv")}
                )
                assert response.status_code == 202, response.text
                status = support.wait_final(client, response.json()["request_id"], timeout=120)
            assert status["status"] == "COMPLETED", (status, log_path.read_text()[-3000:])
        finally:
            _stop_group(proc)

    log_text = log_path.read_text(errors="replace")
    # The start-up line names what the distributed API really uses, not an unused data dir.
    assert f"database postgresql+psycopg://postgres@127.0.0.1:5432/{database_name}" in log_text
    assert f"outputs in file://{tmp_path}/shared-outputs" in log_text
    assert "pixelbatch-data" not in log_text
    assert not (tmp_path / "pixelbatch-data").exists()
    assert any((tmp_path / "shared-outputs").rglob("*.jpg"))
