"""API keys, tenant isolation, signed output URLs and upload rate limits, through a real
server with keys on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelbatch.demo.server import ImageServer
from pixelbatch.webhooks.signing import verify
from tests import support


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_key(env: dict[str, str], name: str) -> tuple[str, str]:
    """Create a key through the CLI, as an operator would; returns (api key, webhook secret).
    Shared with the schemathesis run that fuzzes with keys on."""
    result = _cli(["keys", "create", "--name", name], env)
    assert result.returncode == 0, result.stderr
    key = re.search(r"api key:\s+(pb_\S+)", result.stdout)
    secret = re.search(r"webhook secret:\s+(whsec_\S+)", result.stdout)
    assert key and secret, result.stdout
    return key.group(1), secret.group(1)


AuthServer = tuple[support.ServerProcess, dict[str, tuple[str, str]], dict[str, str]]


@pytest.fixture
def auth_server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[AuthServer]:
    data_dir = tmp_path / "data"
    env = {
        **server_env,
        "PIXELBATCH_DATA_DIR": str(data_dir),
        "PIXELBATCH_AUTH": "on",
        "PIXELBATCH_UPLOAD_RATE_PER_MINUTE": "4",
    }
    keys = {name: create_key(env, name) for name in ("acme", "globex")}
    proc = support.ServerProcess(data_dir, env).start()
    try:
        yield proc, keys, env
    finally:
        proc.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


UNKNOWN = "0b6f2d7e-1c1f-4e8b-9a7e-3f1d2c3b4a5e"
# Every route that takes a request id. Each must answer another tenant's id exactly like an
# id that does not exist: any difference (a 409 for a finished batch, another message, an
# extra header) tells a caller which ids are real.
CROSS_TENANT_PROBES = [
    ("GET", "/api/status/{}"),
    ("GET", "/api/batches/{}"),
    ("GET", "/api/batches/{}/images"),
    ("GET", "/api/batches/{}/images?status=FAILED&offset=0&limit=5"),
    ("GET", "/api/batches/{}/output.csv"),
    ("POST", "/api/batches/{}/cancel"),
    ("POST", "/api/batches/{}/retry"),
    ("DELETE", "/api/batches/{}"),
]
# Differ between any two responses, whoever asks.
VOLATILE_HEADERS = {"date"}


def _assert_same_answer(
    theirs: httpx.Response, their_id: str, nobody: httpx.Response, unknown_id: str
) -> None:
    """Same status, same JSON body and same headers once the id asked about is swapped out
    (a UUID has a fixed length, so even Content-Length must agree)."""
    where = f"{theirs.request.method} {theirs.request.url.path}"
    assert theirs.status_code == nobody.status_code == 404, f"{where}: {theirs.text}"
    assert nobody.json()["code"] == "not_found", f"{where}: {nobody.text}"
    assert json.loads(theirs.text.replace(their_id, unknown_id)) == nobody.json(), where

    def headers(response: httpx.Response, request_id: str) -> list[tuple[str, str]]:
        return sorted(
            (name.lower(), value.replace(request_id, unknown_id))
            for name, value in response.headers.multi_items()
            if name.lower() not in VOLATILE_HEADERS
        )

    assert headers(theirs, their_id) == headers(nobody, unknown_id), where


AUTH_OFF_WARNING = "WARNING: API keys are OFF"


def test_startup_warns_when_keys_are_off(server: support.ServerProcess) -> None:
    """The default server (auth "auto", bound to 127.0.0.1) runs without keys: whoever
    starts it must be told, with the address anyone could reach it on."""
    server.stop()  # flushes the log
    log = server.log_path.read_text(errors="replace")
    assert f"{AUTH_OFF_WARNING}: anyone who can reach 127.0.0.1:{server.port}" in log, log
    assert "PIXELBATCH_AUTH=on" in log, log


def test_no_keys_off_warning_when_keys_are_on(tmp_path: Path) -> None:
    proc = support.ServerProcess(tmp_path / "data", {"PIXELBATCH_AUTH": "on"}).start()
    proc.stop()  # flushes the log
    log = proc.log_path.read_text(errors="replace")
    assert "API keys are required" in log, log  # the right log, fully written
    assert AUTH_OFF_WARNING not in log and "API keys are OFF" not in log, log


def test_keys_tenants_signed_urls_and_rate_limits(
    auth_server: AuthServer,
    images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    proc, keys, env = auth_server
    hook_server, sink = sink_server
    acme, acme_secret = keys["acme"]
    globex, _ = keys["globex"]
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    with proc.client() as client:
        # No key, a malformed key, a wrong key: 401 with a JSON error, nothing stored.
        for headers in ({}, _bearer("nope"), _bearer(acme[:-4] + "AAAA"), {"X-API-Key": "pb_x"}):
            r = client.post("/api/upload", files={"file": ("c.csv", body)}, headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
            assert r.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/batches").status_code == 401
        assert client.get("/healthz").status_code == 200

        r = client.post(
            "/api/upload",
            files={"file": ("c.csv", body)},
            data={"webhook_url": f"{hook_server.base_url}/hook"},
            headers=_bearer(acme),
        )
        assert r.status_code == 202, r.text
        acme_id = r.json()["request_id"]
        status = support.wait_final(
            httpx.Client(base_url=proc.base_url, headers=_bearer(acme)), acme_id
        )
        assert status["status"] == "COMPLETED"

        # Another tenant gets exactly what an unknown id gets, byte for byte but the id.
        for method, path in CROSS_TENANT_PROBES:
            theirs = client.request(method, path.format(acme_id), headers=_bearer(globex))
            nobody = client.request(method, path.format(UNKNOWN), headers=_bearer(globex))
            _assert_same_answer(theirs, acme_id, nobody, UNKNOWN)
        # ... and its cancel, retry and delete changed nothing.
        again = client.get(f"/api/status/{acme_id}", headers=_bearer(acme)).json()
        assert again["status"] == "COMPLETED" and again["updated_at"] == status["updated_at"]
        assert client.get("/api/batches", headers=_bearer(globex)).json()["total"] == 0
        assert client.get("/api/batches", headers=_bearer(acme)).json()["total"] == 1

        # Same Idempotency-Key from two tenants: two batches, each sees its own.
        ids = {
            name: client.post(
                "/api/upload",
                files={"file": ("c.csv", body)},
                headers={**_bearer(key), "Idempotency-Key": "shared-key"},
            ).json()["request_id"]
            for name, (key, _) in keys.items()
        }
        assert ids["acme"] != ids["globex"]

        # Output files: signed URL works without a key; tampered or bare URLs do not.
        image = client.get(f"/api/batches/{acme_id}/images", headers=_bearer(acme)).json()
        signed = image["items"][0]["output_url"]
        assert "sig=" in signed and "expires=" in signed
        assert client.get(signed).status_code == 200
        bare = signed.split("?", 1)[0]
        assert client.get(bare).status_code == 404
        assert client.get(bare, headers=_bearer(globex)).status_code == 404
        _assert_same_answer(
            client.get(bare, headers=_bearer(globex)),
            acme_id,
            client.get(bare.replace(acme_id, UNKNOWN), headers=_bearer(globex)),
            UNKNOWN,
        )
        assert client.get(bare, headers=_bearer(acme)).status_code == 200
        tampered = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 1}", signed)
        assert client.get(tampered).status_code == 404
        expired = re.sub(r"expires=\d+", "expires=1000", signed)
        assert client.get(expired).status_code == 404

        # The webhook is signed with acme's own secret.
        deadline = time.monotonic() + 20
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        headers, hook_body = sink.received[0]
        verify(acme_secret, headers, hook_body)

        # Rate limit: 4 uploads a minute per key (acme used 2 so far).
        codes = [
            client.post("/api/upload", files={"file": ("c.csv", body)}, headers=_bearer(acme))
            for _ in range(3)
        ]
        assert [c.status_code for c in codes] == [202, 202, 429]
        assert codes[-1].json()["code"] == "rate_limited"
        assert 1 <= int(codes[-1].headers["retry-after"]) <= 61
        # Another key is not affected.
        other = client.post("/api/upload", files={"file": ("c.csv", body)}, headers=_bearer(globex))
        assert other.status_code == 202

    # Revoked keys stop working at once.
    assert _cli(["keys", "revoke", acme.split("_")[1]], env).returncode == 0
    listing = _cli(["keys", "list"], env).stdout
    assert "acme" in listing and acme not in listing
    with proc.client() as client:
        assert client.get("/api/batches", headers=_bearer(acme)).status_code == 401


def test_auth_defaults_on_for_non_loopback_binds() -> None:
    from pixelbatch.settings import Settings

    assert not Settings(host="127.0.0.1").auth_enabled
    assert not Settings(host="::1").auth_enabled
    assert not Settings(host="localhost").auth_enabled
    assert Settings(host="0.0.0.0").auth_enabled
    assert Settings(host="10.1.2.3").auth_enabled
    assert not Settings(host="0.0.0.0", auth="off").auth_enabled
    assert Settings(host="127.0.0.1", auth="on").auth_enabled
