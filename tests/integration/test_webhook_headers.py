"""A webhook from a real server is a JSON API call, not an image download, in its headers."""

from __future__ import annotations

import time

from pixelbatch.demo.server import ImageServer
from tests import support


def test_webhook_is_sent_with_json_headers_not_the_image_fetchers(
    server: support.ServerProcess,
    images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    hook_server, sink = sink_server
    body = support.csv_bytes([["1", "Chair", f"{images.base_url}/q90.jpg"]])
    with server.client() as client:
        response = client.post(
            "/api/upload",
            files={"file": ("c.csv", body, "text/csv")},
            data={"webhook_url": f"{hook_server.base_url}/hook"},
        )
        assert response.status_code == 202, response.text
        support.wait_final(client, response.json()["request_id"])
    deadline = time.monotonic() + 20
    while not sink.received and time.monotonic() < deadline:
        time.sleep(0.1)  # the sink refuses the first attempt; the retry comes 0.2 s later
    assert sink.received, "the webhook never arrived"
    headers, _ = sink.received[0]
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("pixelbatch-webhooks/")
    assert "image" not in headers["accept"]
