"""The CLI's first hour: bad settings, unreachable services, --version, copyable key prefixes
and generated secrets, each through the real command line as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pixelbatch

KEY_PREFIX_LENGTH = 12  # pb_<12 characters>_<secret>


def _run(
    args: list[str], env: dict[str, str], cwd: Path, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIXELBATCH_")}
    if columns is not None:
        base["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", *args],
        env={**base, "PIXELBATCH_DATA_DIR": str(cwd / "data"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refused(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines of a start-up refusal: exit 2, no traceback, nothing on stdout."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create", "--name", "x"],
        ["keys", "list"],
        ["db", "upgrade"],
        ["serve"],
        ["worker"],
        ["process", "missing.csv"],
        ["demo"],
    ],
)
def test_every_command_names_the_bad_variable_in_one_line(tmp_path: Path, args: list[str]) -> None:
    lines = _refused(_run(args, {"PIXELBATCH_AUTH": "required"}, tmp_path))
    assert lines == ["error: PIXELBATCH_AUTH='required': must be one of auto, on, off"]


def test_each_bad_variable_gets_its_own_line_and_secrets_are_not_echoed(tmp_path: Path) -> None:
    env = {
        "PIXELBATCH_PORT": "99999",
        "PIXELBATCH_MAX_ROWS": "lots",
        "PIXELBATCH_FETCH_ALLOWED_PORTS": "80,0",
    }
    lines = _refused(_run(["keys", "list"], env, tmp_path))
    assert len(lines) == 3, lines
    assert lines[0].startswith("error: PIXELBATCH_PORT='99999': must be less than or equal")
    assert lines[1].startswith("error: PIXELBATCH_MAX_ROWS='lots': must be a valid integer")
    assert lines[2].startswith("error: PIXELBATCH_FETCH_ALLOWED_PORTS='80,0': ")


def test_serve_port_option_is_validated_like_the_variable(tmp_path: Path) -> None:
    lines = _refused(_run(["serve", "--port", "0"], {}, tmp_path))
    assert len(lines) == 1 and lines[0].startswith("error: --port=0: must be greater than")


def test_unreachable_database_names_the_url_with_the_password_masked(tmp_path: Path) -> None:
    url = "postgresql+psycopg://someone:hunter2@127.0.0.1:9/nowhere"
    for args in (["keys", "list"], ["db", "upgrade"], ["db", "current"]):
        lines = _refused(_run(args, {"PIXELBATCH_DATABASE_URL": url}, tmp_path))
        assert len(lines) == 1, lines
        assert lines[0].startswith(
            "error: cannot reach the database at postgresql+psycopg://someone:***@127.0.0.1:9/nowhere"
        )
        assert "hunter2" not in lines[0]


def test_worker_names_an_unreachable_broker(tmp_path: Path, worker_pg_url: str) -> None:
    env = {
        "PIXELBATCH_DATABASE_URL": worker_pg_url,
        "PIXELBATCH_BROKER_URL": "redis://:s3cret@127.0.0.1:9/0",
        "PIXELBATCH_WEBHOOK_SECRET": "whsec_x",
    }
    lines = _refused(_run(["worker"], env, tmp_path))
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot reach the broker at redis://:***@127.0.0.1:9/0")


def test_version(tmp_path: Path) -> None:
    result = _run(["--version"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pixelbatch {pixelbatch.__version__}"


def test_keys_list_prints_whole_ids_at_80_columns_and_revoke_takes_them(tmp_path: Path) -> None:
    created = _run(["keys", "create", "--name", "a-rather-long-client-name"], {}, tmp_path)
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"key id:\s+(\S+)", created.stdout)
    api_key = re.search(r"api key:\s+(pb_\S+)", created.stdout)
    assert key_id and api_key
    prefix = api_key.group(1)[: len("pb_") + KEY_PREFIX_LENGTH]

    listed = _run(["keys", "list"], {}, tmp_path, columns=80)
    assert listed.returncode == 0, listed.stderr
    assert all(len(line) <= 80 for line in listed.stdout.splitlines()), listed.stdout
    printed = re.findall(r"pb_[A-Za-z0-9]+", listed.stdout)
    assert printed == [prefix], listed.stdout
    assert key_id.group(1) in listed.stdout

    wide = _run(["keys", "list"], {}, tmp_path, columns=200)
    assert re.findall(r"pb_[A-Za-z0-9]+", wide.stdout) == [prefix], wide.stdout
    assert key_id.group(1) in wide.stdout

    revoked = _run(["keys", "revoke", printed[0]], {}, tmp_path, columns=80)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert f"revoked {key_id.group(1)}" in revoked.stdout


def test_secrets_generate_prints_shell_exports(tmp_path: Path) -> None:
    result = _run(["secrets", "generate"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export PIXELBATCH_WEBHOOK_SECRET",
        "export PIXELBATCH_SECRET_KEY",
    ]
    assert lines[0].split("=", 1)[1].startswith("whsec_")
    shell = subprocess.run(
        ["bash", "-c", f'eval "{result.stdout}"; echo "$PIXELBATCH_WEBHOOK_SECRET"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.strip() == lines[0].split("=", 1)[1]


def test_worker_names_a_metrics_port_in_use(tmp_path: Path, worker_pg_url: str) -> None:
    import socket

    from tests import support

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PIXELBATCH_DATABASE_URL": worker_pg_url,
            "PIXELBATCH_BROKER_URL": support.worker_redis_url(),
            "PIXELBATCH_WEBHOOK_SECRET": "whsec_x",
            "PIXELBATCH_METRICS_PORT": str(port),
            "PIXELBATCH_METRICS_HOST": "127.0.0.1",
        }
        lines = _refused(_run(["worker"], env, tmp_path))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot serve metrics on 127.0.0.1:{port}")
    assert "PIXELBATCH_METRICS_PORT" in lines[0]


def test_a_bad_host_class_names_the_variable_and_the_entry(tmp_path: Path) -> None:
    env = {"PIXELBATCH_METRICS_HOST_CLASSES": "cdn.example.com=cdn,oops"}
    lines = _refused(_run(["keys", "list"], env, tmp_path))
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: PIXELBATCH_METRICS_HOST_CLASSES=")
    assert "'oops'" in lines[0]
