"""The README's object-storage check, pasted as written into a shell, against a real S3 API
(moto's server standing in for the compose stack's MinIO at localhost:9000)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import s3server

REPO = Path(__file__).resolve().parents[2]
ANCHOR = "bucket `pixelbatch`), from the repository root:"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(ANCHOR) :]
    start = after.index("```sh\n") + len("```sh\n")
    return after[start : after.index("```", start)]


def test_readme_storage_check_block_works_as_written(s3_endpoint: str, tmp_path: Path) -> None:
    client = s3server.client(s3_endpoint)
    if "pixelbatch" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="pixelbatch")  # what compose's createbucket does
    # The compose stack's .env (deploy/.env.example with its values set).
    (tmp_path / ".env").write_text(
        "MINIO_ROOT_USER=readme-user\nMINIO_ROOT_PASSWORD=readme-password\n"
    )
    script = readme_block()
    for old, new in (
        ("http://localhost:9000", s3_endpoint),
        (".venv/bin/pixelbatch", str(REPO / ".venv" / "bin" / "pixelbatch")),
    ):
        assert script.count(old) == 1, f"the README block no longer has {old!r} once"
        script = script.replace(old, new)
    result = subprocess.run(
        ["bash", "-euc", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "storage ok: s3://pixelbatch/outputs/ is reachable and writable" in result.stdout
