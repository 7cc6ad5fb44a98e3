"""The newcomer's path: ``pixelbatch demo`` says how to see its batch in the page,
``pixelbatch serve`` prints the page's address, and the page shows that batch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests import support
from tests.browser.conftest import watch

# The demo processes its whole catalog first: minutes on a loaded 2-core machine, more than
# the suite's default 120 s per test (the demo's own subprocess timeout is 300 s).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_the_demo_batch_opens_in_the_page(browser: Browser, tmp_path: Path) -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "pixelbatch", "demo", "--data-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    hint = re.search(
        r"see it in the web UI: PIXELBATCH_DATA_DIR=(\S+) (\S+) serve, "
        r"then open (http://\S+/)#/batches/([0-9a-f-]{36})",
        demo.stdout,
    )
    assert hint, demo.stdout
    data_dir, command, printed_base, batch_id = hint.groups()
    assert Path(data_dir) == (tmp_path / "demo").resolve()
    # This installation's own script, runnable without an activated virtualenv.
    assert Path(command) == Path(sys.executable).parent / "pixelbatch", command
    assert printed_base == "http://127.0.0.1:8000/"  # the defaults `make run` serves on

    server = support.ServerProcess(Path(data_dir), {}).start()
    try:
        log = server.log_path.read_text()
        assert f"web UI at {server.base_url}/" in log
        w = watch(browser)
        w.page.goto(f"{server.base_url}/#/batches/{batch_id}")
        expect(w.page.locator("#stat-status")).to_have_text("COMPLETED")
        expect(w.page.locator("#image-table tbody tr")).not_to_have_count(0)
        expect(w.page.locator("#image-table .badge[data-status='FAILED']")).to_have_count(0)
        w.page.wait_for_function(
            "() => [...document.querySelectorAll('#image-table img.thumb')]"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )
        expect(w.page.locator("#bytes-caption")).to_contain_text("saved")
        assert w.errors == [] and w.dialogs == []
        assert w.foreign_requests(server.base_url) == []
    finally:
        server.stop()
