"""Output URLs as others reach them, through a real server: embeddable and cacheable files,
CORS for browser clients, and URLs built from the address clients used, not the bind."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from pixelbatch.demo.server import ImageServer
from tests import support
from tests.integration.test_auth import create_key

TTL = 3600


@pytest.fixture
def keyed_server(
    tmp_path: Path, server_env: dict[str, str]
) -> Iterator[tuple[support.ServerProcess, str]]:
    data_dir = tmp_path / "data"
    env = {
        **server_env,
        "PIXELBATCH_DATA_DIR": str(data_dir),
        "PIXELBATCH_AUTH": "on",
        "PIXELBATCH_SIGNED_URL_TTL": str(TTL),
    }
    key, _ = create_key(env, "shop")
    proc = support.ServerProcess(data_dir, env).start()
    try:
        yield proc, key
    finally:
        proc.stop()


def test_output_files_are_embeddable_and_signed_ones_cacheable(
    keyed_server: tuple[support.ServerProcess, str], images: ImageServer
) -> None:
    """A storefront on another site shows the outputs with <img src=signed URL>: the file
    must allow cross-origin embedding, and a CDN may keep it until the signature expires.
    The same file fetched with a key instead is the key holder's only."""
    proc, key = keyed_server
    bearer = {"Authorization": f"Bearer {key}"}
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    with httpx.Client(base_url=proc.base_url, headers=bearer, timeout=30) as client:
        r = client.post("/api/upload", files={"file": ("c.csv", body)})
        assert r.status_code == 202, r.text
        request_id = r.json()["request_id"]
        final = support.wait_final(client, request_id)
        assert final["status"] == "COMPLETED"
        page = client.get(f"/api/batches/{request_id}/images").json()
        # The API itself stays same-site.
        assert client.get("/api/batches").headers["cross-origin-resource-policy"] == "same-site"
    signed = page["items"][0]["output_url"]
    expires = int(re.search(r"expires=(\d+)", signed).group(1))  # type: ignore[union-attr]
    # The status states when the output CSV's signed URLs expire: signed at the finalisation,
    # no later than this page's fresh ones.
    csv_expiry = datetime.fromisoformat(final["output_urls_expire_at"]).timestamp()
    assert expires - 120 <= csv_expiry <= expires

    anonymous = httpx.get(signed, timeout=30)
    assert anonymous.status_code == 200
    assert anonymous.headers["content-type"] == "image/jpeg"
    assert anonymous.headers.get_list("cross-origin-resource-policy") == ["cross-origin"]
    cache = anonymous.headers["cache-control"]
    match = re.fullmatch(r"public, max-age=(\d+)", cache)
    assert match, cache
    remaining = expires - time.time()
    assert remaining - 5 <= int(match.group(1)) <= remaining + 1 and remaining <= TTL

    keyed = httpx.get(signed.split("?", 1)[0], headers=bearer, timeout=30)
    assert keyed.status_code == 200
    assert keyed.headers.get_list("cross-origin-resource-policy") == ["cross-origin"]
    assert keyed.headers["cache-control"] == "private"


SHOP = "https://admin.shop.example"
PREFLIGHT = {
    "Origin": SHOP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, idempotency-key",
}


def test_cors_for_configured_origins(tmp_path: Path, server: support.ServerProcess) -> None:
    """A browser app on another origin may call the API once its origin is configured: the
    preflight allows the upload's headers, and the simple answer exposes the headers a
    client reads. Off by default: no CORS header at all."""
    with server.client() as client:
        assert (
            "access-control-allow-origin"
            not in client.options("/api/upload", headers=PREFLIGHT).headers
        )
        assert (
            "access-control-allow-origin"
            not in client.get("/api/batches", headers={"Origin": SHOP}).headers
        )
    server.stop()

    proc = support.ServerProcess(
        tmp_path / "cors", {"PIXELBATCH_CORS_ORIGINS": f"{SHOP}, https://other.example"}
    ).start()
    try:
        with proc.client() as client:
            pre = client.options("/api/upload", headers=PREFLIGHT)
            assert pre.status_code == 200, pre.text
            assert pre.headers["access-control-allow-origin"] == SHOP
            allowed = {
                h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")
            }
            assert {"authorization", "idempotency-key"} <= allowed
            assert "POST" in pre.headers["access-control-allow-methods"]
            assert pre.headers["x-content-type-options"] == "nosniff"

            simple = client.get("/api/batches", headers={"Origin": SHOP})
            assert simple.status_code == 200
            assert simple.headers["access-control-allow-origin"] == SHOP
            exposed = {
                h.strip().lower()
                for h in simple.headers["access-control-expose-headers"].split(",")
            }
            assert exposed == {"location", "idempotent-replayed", "retry-after"}

            stranger = client.get("/api/batches", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in stranger.headers
            refused = client.options(
                "/api/upload", headers={**PREFLIGHT, "Origin": "https://evil.example"}
            )
            assert refused.status_code == 400
            assert "access-control-allow-origin" not in refused.headers
    finally:
        proc.stop()


def _hook_payload(sink: support.WebhookSink) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while not sink.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sink.received, "no webhook arrived"
    payload: dict[str, object] = json.loads(sink.received[0][1])
    return payload


def test_urls_use_the_host_clients_reach_a_wildcard_bind_at(
    tmp_path: Path,
    server_env: dict[str, str],
    images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    """Bound to 0.0.0.0 without PUBLIC_URL, no URL may name 0.0.0.0: status_url, the output
    CSV's image URLs, the status's output_csv and the webhook's all use the Host the
    upload came with; start-up warns that PUBLIC_URL is unset."""
    hook_server, sink = sink_server
    proc = support.ServerProcess(
        tmp_path / "data",
        {**server_env, "PIXELBATCH_HOST": "0.0.0.0", "PIXELBATCH_AUTH": "off"},
    ).start()
    public = "http://catalog.shop.example:8443"
    host = {"Host": "catalog.shop.example:8443"}
    try:
        with proc.client() as client:
            body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
            r = client.post(
                "/api/upload",
                files={"file": ("c.csv", body)},
                data={"webhook_url": f"{hook_server.base_url}/hook"},
                headers=host,
            )
            assert r.status_code == 202, r.text
            request_id = r.json()["request_id"]
            assert r.json()["status_url"] == f"{public}/api/status/{request_id}"
            assert r.headers["location"] == r.json()["status_url"]
            # Polled without that Host: the batch keeps the base it was uploaded through.
            status = support.wait_final(client, request_id)
            assert status["status"] == "COMPLETED", status
            assert status["status_url"] == f"{public}/api/status/{request_id}"
            assert status["output_csv"] == f"{public}/api/batches/{request_id}/output.csv"
            rows = list(
                csv.DictReader(
                    io.StringIO(client.get(status["output_csv"].replace(public, "")).text)
                )
            )
            assert rows[0]["Output Image Urls"].startswith(f"{public}/files/{request_id}/"), rows
            page = client.get(f"/api/batches/{request_id}/images").json()
            assert page["items"][0]["output_url"] == rows[0]["Output Image Urls"]
        assert _hook_payload(sink)["output_csv"] == status["output_csv"]
    finally:
        proc.stop()
    log = proc.log_path.read_text(errors="replace")
    assert "WARNING: no PIXELBATCH_PUBLIC_URL" in log and "0.0.0.0" in log, log
