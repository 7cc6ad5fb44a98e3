"""The real CLI, as a user runs it."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pixelbatch.demo.server import ImageServer
from tests import support


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_process_writes_output_and_fails_on_bad_image(
    tmp_path: Path, images: ImageServer, server_env: dict[str, str]
) -> None:
    env = {**server_env, "PIXELBATCH_DATA_DIR": str(tmp_path / "data")}
    good = tmp_path / "good.csv"
    good.write_bytes(
        support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg,{images.base_url}/alpha.png"]])
    )
    # A narrow terminal and a long output path: the summary folds the path, never cuts it.
    out = tmp_path / ("a-rather-long-directory-name-for-the-outputs-" * 3) / "out.csv"
    result = _run(["process", str(good), "-o", str(out)], {**env, "COLUMNS": "60"}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COMPLETED" in result.stdout
    assert "…" not in result.stdout, result.stdout
    assert str(out) in _table_cells(result.stdout, "output CSV"), result.stdout
    # No server runs: the output CSV links to the outputs on this disk.
    rows = list(csv.reader(out.open()))
    urls = rows[1][3].split(", ")
    assert len(urls) == 2 and all(u.startswith("file:///") for u in urls), urls
    assert all(Path(url2pathname(urlparse(u).path)).is_file() for u in urls), urls

    served = tmp_path / "served.csv"
    args = ["process", str(good), "-o", str(served), "--public-url", "https://img.example/"]
    assert _run(args, env, tmp_path).returncode == 0
    urls = list(csv.reader(served.open()))[1][3].split(", ")
    assert all(re.fullmatch(r"https://img\.example/files/[^?]+", u) for u in urls), urls

    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        support.csv_bytes(
            [["1", "Mug", f"{images.base_url}/q90.jpg,{images.base_url}/missing.jpg"]]
        )
    )
    result = _run(["process", str(bad), "-o", str(tmp_path / "out2.csv")], env, tmp_path)
    assert result.returncode == 1, result.stdout
    assert "http_404" in result.stdout
    rows = list(csv.reader((tmp_path / "out2.csv").open()))
    assert rows[0][4] == "Status" and rows[1][4] == "PARTIAL"
    assert rows[1][5] == f"image 2 ({images.base_url}/missing.jpg): HTTP 404 Not Found"


def _table_cells(stdout: str, label: str) -> str:
    """The value cell of a summary row, its folded continuation lines joined."""
    value = ""
    inside = False
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) != 2:
            inside = False
            continue
        if cells[0] == label:
            inside = True
        elif cells[0]:
            inside = False
        if inside:
            value += cells[1]
    return value


def test_process_rejects_invalid_csv_with_row_numbers(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    env = {**server_env, "PIXELBATCH_DATA_DIR": str(tmp_path / "data")}
    bad = tmp_path / "bad.csv"
    bad.write_bytes(support.csv_bytes([["1", "", "javascript:alert(1)"]]))
    result = _run(["process", str(bad)], env, tmp_path)
    assert result.returncode == 2
    assert "row 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_offline(tmp_path: Path) -> None:
    result = _run(["demo", "--data-dir", str(tmp_path / "demo")], {}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.reader((tmp_path / "demo" / "example-output.csv").open()))
    assert len(rows) == 9
    assert rows[0][5] == "Status" and all(r[5] == "OK" for r in rows[1:])


def test_process_finishes_its_webhook_or_says_plainly_it_was_not_delivered(
    tmp_path: Path, images: ImageServer, server_env: dict[str, str]
) -> None:
    hooks = ImageServer()
    flaky = support.WebhookSink(fail_first=1)
    down = support.WebhookSink(fail_first=1000)
    hooks.add("/flaky", flaky)
    hooks.add("/down", down)
    env = {
        **server_env,
        "PIXELBATCH_DATA_DIR": str(tmp_path / "data"),
        "PIXELBATCH_FETCH_ALLOW": f"{images.allow_entry},{hooks.allow_entry}",
        "PIXELBATCH_WEBHOOK_MAX_ATTEMPTS": "2",
    }
    catalog = tmp_path / "c.csv"
    catalog.write_bytes(support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]]))
    with hooks:
        args = ["process", str(catalog), "-o", str(tmp_path / "out.csv"), "--webhook-url"]
        result = _run([*args, f"{hooks.base_url}/flaky"], env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert flaky.calls == 2 and len(flaky.received) == 1  # attempt 2 within the run
        assert "delivered to" in result.stdout and "NOT" not in result.stdout

        result = _run([*args, f"{hooks.base_url}/down"], env, tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "NOT delivered" in result.stdout and "HTTP 500" in result.stdout
        assert down.calls == 2
    assert flaky.calls == 2  # the second run never sent the first run's webhook


def test_process_says_when_a_format_change_made_the_batch_larger(
    tmp_path: Path, images: ImageServer, server_env: dict[str, str]
) -> None:
    env = {**server_env, "PIXELBATCH_DATA_DIR": str(tmp_path / "data")}
    photo = tmp_path / "photo.csv"
    photo.write_bytes(support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]]))
    out = tmp_path / "out.csv"
    result = _run(["process", str(photo), "-o", str(out), "--output-format", "png"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+% larger", _table_cells(result.stdout, "bytes in → out")), result.stdout
    [row] = list(csv.DictReader(out.open()))
    assert row["Status"] == "OK" and row["Output Notes"].startswith("image 1: grew ")
