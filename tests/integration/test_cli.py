"""The real CLI, as a user runs it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

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
    result = _run(["process", str(good), "-o", str(tmp_path / "out.csv")], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COMPLETED" in result.stdout
    rows = list(csv.reader((tmp_path / "out.csv").open()))
    assert rows[1][3].count("/files/") == 2

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
