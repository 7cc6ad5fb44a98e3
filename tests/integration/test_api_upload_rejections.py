"""Bad catalogs are rejected whole, with every problem named by row and column."""

from __future__ import annotations

from pathlib import Path

import httpx

from pixelbatch.demo.server import ImageServer
from tests import support


def _upload(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/api/upload", files={"file": ("bad.csv", body, "text/csv")})


def test_rejects_with_rows_and_columns_and_stores_nothing(
    server: support.ServerProcess, images: ImageServer
) -> None:
    good = f"{images.base_url}/q90.jpg"
    body = support.csv_bytes(
        [
            ["1", "Fine", good],
            ["2", "", good],
            ["3", "No urls", ""],
            ["1", "Duplicate serial", good],
            ["5", "Bad scheme", f"{good}, ftp://example.com/a.jpg"],
            ["6", "Glued", f"{good};{good}"],
        ]
    )
    with server.client() as client:
        response = _upload(client, body)
        assert response.status_code == 400
        error = response.json()
        assert error["code"] == "invalid_csv"
        problems = {(p["row"], p["column"]) for p in error["details"]["problems"]}
        assert (3, "Product Name") in problems
        assert (4, "Input Image Urls") in problems
        assert (5, "S. No.") in problems
        assert (6, "Input Image Urls") in problems
        assert (7, "Input Image Urls") in problems
        assert "two URLs joined by ';'" in str(error["details"])
        assert "ftp://example.com/a.jpg" in str(error["details"])
        assert "Traceback" not in response.text
        assert client.get("/api/batches").json()["total"] == 0


def test_missing_columns_are_listed(server: support.ServerProcess) -> None:
    body = support.csv_bytes([["1", "x"]], header=["S. No.", "Name"])
    with server.client() as client:
        response = _upload(client, body)
        assert response.status_code == 400
        message = str(response.json())
        assert "Product Name" in message and "Input Image Urls" in message


def test_non_utf8_names_the_row(server: support.ServerProcess, images: ImageServer) -> None:
    body = (
        support.csv_bytes([["1", "ok", f"{images.base_url}/q90.jpg"]])
        + b"2,caf\xe9,http://a/b.jpg\r\n"
    )
    with server.client() as client:
        response = _upload(client, body)
        assert response.status_code == 400
        assert "row 3" in str(response.json()).lower() or any(
            p["row"] == 3 for p in response.json()["details"]["problems"]
        )


def test_oversized_upload_is_413(tmp_path: Path, server_env: dict[str, str]) -> None:
    proc = support.ServerProcess(
        tmp_path / "small", {**server_env, "PIXELBATCH_MAX_UPLOAD_BYTES": "10000"}
    ).start()
    try:
        with proc.client() as client:
            body = (
                b"S. No.,Product Name,Input Image Urls\r\n"
                + b"1,x,http://a.example/b.jpg\r\n" * 5000
            )
            response = _upload(client, body)
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"
            assert client.get("/api/batches").json()["total"] == 0
    finally:
        proc.stop()


def test_semicolon_dialect_with_bom_is_accepted(
    server: support.ServerProcess, images: ImageServer
) -> None:
    body = "\ufeff" + "sno;PRODUCT NAME;input image urls;Colour\r\n"
    body += f'7;"Mug; blue";"{images.base_url}/q90.jpg,{images.base_url}/photo.webp";blue\r\n'
    with server.client() as client:
        response = _upload(client, body.encode())
        assert response.status_code == 202, response.text
        status = support.wait_final(client, response.json()["request_id"])
        assert status["status"] == "COMPLETED"
        assert status["counts"]["images_done"] == 2


def test_form_fields_are_checked_by_name_case_and_combination(
    server: support.ServerProcess, images: ImageServer
) -> None:
    """A misspelt field is named, not ignored; a format's case does not matter; an absolute
    and a relative quality together are refused as ambiguous."""
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    files = {"file": ("ok.csv", body, "text/csv")}
    with server.client() as client:
        misspelt = client.post("/api/upload", files=files, data={"qualty": "30"})
        assert misspelt.status_code == 422, misspelt.text
        assert misspelt.json()["code"] == "validation_error"
        assert "qualty" in misspelt.json()["message"]
        assert "unknown field" in misspelt.json()["message"]

        both = client.post(
            "/api/upload", files=files, data={"quality": "30", "relative_quality": "0.5"}
        )
        assert both.status_code == 422, both.text
        assert both.json()["code"] == "conflicting_options"
        assert "quality" in both.json()["message"]
        assert "relative_quality" in both.json()["message"]
        assert client.get("/api/batches").json()["total"] == 0

        upper = client.post("/api/upload", files=files, data={"output_format": "JPEG"})
        assert upper.status_code == 202, upper.text
        status = client.get(f"/api/status/{upper.json()['request_id']}").json()
        assert status["options"]["output_format"] == "jpeg"


def test_webhook_url_at_a_private_literal_address_is_refused(
    server: support.ServerProcess,
    images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    """The fetch address policy, applied at upload: a literal loopback, private or
    link-local address not on PIXELBATCH_FETCH_ALLOW can never be delivered to, so it is
    refused now instead of retried for an hour. The allowlisted receiver is accepted."""
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    files = {"file": ("ok.csv", body, "text/csv")}
    hook_server, _ = sink_server
    with server.client() as client:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://2130706433/hook",  # 127.0.0.1 spelt as a number
        ):
            response = client.post("/api/upload", files=files, data={"webhook_url": url})
            assert response.status_code == 400, (url, response.text)
            error = response.json()
            assert error["code"] == "invalid_webhook_url", url
            assert error["message"].startswith("webhook_url: "), error
            assert error["details"]["field"] == "webhook_url"
        assert client.get("/api/batches").json()["total"] == 0
        fine = client.post(
            "/api/upload", files=files, data={"webhook_url": f"{hook_server.base_url}/hook"}
        )
        assert fine.status_code == 202, fine.text


def test_idempotency_key_reused_for_a_different_request_is_refused(
    server: support.ServerProcess,
    images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    """Stripe's rule: the same key with the same request names the same batch; the same key
    with another file, other options or another webhook is a client bug, said as such."""
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    other_body = support.csv_bytes([["1", "Cup", f"{images.base_url}/q90.jpg"]])
    hook = f"{sink_server[0].base_url}/hook"
    key = {"Idempotency-Key": "order-42"}

    def post(client: httpx.Client, csv: bytes, **data: str) -> httpx.Response:
        files = {"file": ("c.csv", csv, "text/csv")}
        return client.post("/api/upload", files=files, data=data, headers=key)

    with server.client() as client:
        first = post(client, body, quality="60", webhook_url=hook)
        assert first.status_code == 202, first.text
        again = post(client, body, quality="60", webhook_url=hook)
        assert again.status_code == 202
        assert again.json()["request_id"] == first.json()["request_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        for changed in (
            post(client, other_body, quality="60", webhook_url=hook),
            post(client, body, quality="70", webhook_url=hook),
            post(client, body, quality="60"),
        ):
            assert changed.status_code == 422, changed.text
            error = changed.json()
            assert error["code"] == "idempotency_key_reused"
            assert "order-42" in error["message"]
            assert error["details"]["request_id"] == first.json()["request_id"]
        assert client.get("/api/batches").json()["total"] == 1
