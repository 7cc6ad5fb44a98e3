"""``GET /api/batches/{id}/images/{image_id}/original`` through a real server: the
supplier's bytes come back through the hardened fetcher, for the batch's tenant only, and
the SSRF guard holds for it as for the workers."""

from __future__ import annotations

import httpx
import pytest

from pixelbatch.demo.server import ImageServer
from tests import support

pytestmark = pytest.mark.e2e


def test_original_is_fetched_again_through_the_guarded_fetcher(
    server: support.ServerProcess, images: ImageServer, canary: ImageServer
) -> None:
    base = images.base_url
    csv = support.csv_bytes(
        [
            ["1", "Mug", f"{base}/q90.jpg,{base}/page.jpg"],
            ["2", "Cup", f"{base}/to-blocked.jpg"],
        ]
    )
    with server.client() as client:
        created = client.post("/api/upload", files={"file": ("c.csv", csv, "text/csv")})
        assert created.status_code == 202, created.text
        batch_id = created.json()["request_id"]
        support.wait_final(client, batch_id)
        items = client.get(f"/api/batches/{batch_id}/images").json()["items"]
        by_url = {item["input_url"].rsplit("/", 1)[1]: item for item in items}
        assert by_url["q90.jpg"]["product_name"] == "Mug"

        def original(image_id: int, batch: str = batch_id) -> httpx.Response:
            return client.get(f"/api/batches/{batch}/images/{image_id}/original")

        good = original(by_url["q90.jpg"]["image_id"])
        assert good.status_code == 200
        assert good.headers["content-type"] == "image/jpeg"
        assert good.headers["content-security-policy"] == "default-src 'none'"
        assert good.content == images.routes["/q90.jpg"].body  # type: ignore[union-attr]

        page = original(by_url["page.jpg"]["image_id"])
        assert page.status_code == 422
        assert page.json()["code"] == "original_unavailable"
        assert page.json()["details"]["reason"] == "not_displayable"

        blocked = original(by_url["to-blocked.jpg"]["image_id"])
        assert blocked.status_code == 422
        assert blocked.json()["code"] == "original_unavailable"
        assert blocked.json()["details"]["reason"] == "blocked_address"
        assert canary.requests == []

        # Another batch's image, an unknown image, an unknown batch: all the same 404.
        other = client.post(
            "/api/upload",
            files={"file": ("d.csv", support.csv_bytes([["1", "X", f"{base}/q90.jpg"]]))},
        ).json()["request_id"]
        support.wait_final(client, other)
        assert original(by_url["q90.jpg"]["image_id"], other).status_code == 404
        assert original(10**9).status_code == 404
        missing = original(1, "00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        assert original(2**63).status_code == 422
