"""A whole batch through the real HTTP API of a real ``pixelbatch serve`` process."""

from __future__ import annotations

import csv
import io
import time

import httpx
from PIL import Image, ImageStat
from PIL.JpegImagePlugin import JpegImageFile

from pixelbatch.demo.server import ImageServer
from pixelbatch.transform.quality import estimate_jpeg_quality
from pixelbatch.webhooks.signing import verify
from tests import support
from tests.integration.conftest import WEBHOOK_SECRET


def _open(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


def _pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple), value
    return value


def test_batch_end_to_end(
    server: support.ServerProcess,
    images: ImageServer,
    canary: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    hook_server, sink = sink_server
    u = images.base_url
    rows = [
        ["1", "Good photos", f"{u}/q90.jpg, {u}/alpha.png,{u}/photo.webp"],
        ["2", "Colour and orientation", f"{u}/cmyk.jpg\n{u}/rotated.jpg"],
        ["3", "Broken, one good", f"{u}/truncated.jpg,{u}/page.jpg,{u}/q90.jpg"],
        ["4", "Network trouble", f"{u}/missing.jpg,{u}/flaky.jpg,{u}/slow.jpg,{u}/to-blocked.jpg"],
    ]
    header = ["S. No.", "Product Name", "Input Image Urls", "Brand"]
    body = support.csv_bytes([[*r, f"brand-{r[0]}"] for r in rows], header)
    with server.client() as client:
        started = time.monotonic()
        response = client.post(
            "/api/upload",
            files={"file": ("catalog.csv", body, "text/csv")},
            data={"webhook_url": f"{hook_server.base_url}/hook"},
        )
        assert response.status_code == 202, response.text
        assert time.monotonic() - started < 2, "upload must answer at once"
        upload = response.json()
        request_id = upload["request_id"]
        assert upload["status"] == "PENDING"
        assert upload["status_url"].endswith(f"/api/status/{request_id}")

        status = support.wait_final(client, request_id, timeout=90)
        assert status["status"] == "COMPLETED_WITH_ERRORS"
        assert status["counts"] == {
            "products": 4,
            "images_total": 12,
            "images_done": 7,
            "images_failed": 5,
            "images_pending": 0,
            "images_kept_original": 1,
            "images_grew": 0,
        }
        assert status["progress"] == 1.0

        page = client.get(f"/api/batches/{request_id}/images", params={"limit": 100}).json()
        assert page["total"] == 12
        by_url = {(i["row"], i["input_url"]): i for i in page["items"]}
        failed = {
            key[1].rsplit("/", 1)[1]: i["error_code"]
            for key, i in by_url.items()
            if i["status"] == "FAILED"
        }
        assert failed == {
            "truncated.jpg": "corrupt_image",
            "page.jpg": "unsupported_format",
            "missing.jpg": "http_404",
            "slow.jpg": "timeout",
            "to-blocked.jpg": "blocked_address",
        }
        assert canary.hits("/secret") == 0, "a blocked redirect target was contacted"
        assert images.hits("/flaky.jpg") == 2, "the 500 must be retried once"
        assert images.hits("/missing.jpg") == 1, "a 404 must not be retried"
        assert images.hits("/q90.jpg") == 1, "a URL repeated in a batch is fetched once"

        q90 = by_url[(2, f"{u}/q90.jpg")]
        assert q90["source_quality"] == 90 and q90["output_quality"] == 45
        out = _open(client, q90["output_url"])
        assert out.format == "JPEG" and isinstance(out, JpegImageFile)
        quality = estimate_jpeg_quality(out.quantization)
        assert quality is not None and abs(quality - 45) <= 1
        assert q90["bytes_out"] < q90["bytes_in"]

        alpha = _open(client, by_url[(2, f"{u}/alpha.png")]["output_url"])
        assert alpha.format == "PNG" and alpha.mode == "RGBA"
        assert _pixel(alpha, (2, 2))[3] == 0 and _pixel(alpha, (250, 150))[3] == 255

        assert _open(client, by_url[(2, f"{u}/photo.webp")]["output_url"]).format == "WEBP"

        cmyk = _open(client, by_url[(3, f"{u}/cmyk.jpg")]["output_url"])
        assert cmyk.mode == "RGB"
        mean = ImageStat.Stat(cmyk).mean
        assert all(abs(m - e) < 12 for m, e in zip(mean, support.CMYK_COLOUR, strict=True)), mean

        rotated = _open(client, by_url[(3, f"{u}/rotated.jpg")]["output_url"])
        assert rotated.size == (120, 240)
        red = _pixel(rotated, (110, 10))
        assert red[0] > 180 and red[2] < 80, red
        assert 0x0112 not in rotated.getexif()

        # Output CSV: columns, order, slot alignment, errors.
        csv_response = client.get(f"/api/batches/{request_id}/output.csv")
        assert csv_response.status_code == 200
        assert csv_response.headers["content-type"].startswith("text/csv")
        assert status["output_csv"].endswith(f"/api/batches/{request_id}/output.csv")
        out_rows = list(csv.reader(io.StringIO(csv_response.text)))
        assert out_rows[0] == [
            "S. No.",
            "Product Name",
            "Input Image Urls",
            "Output Image Urls",
            "Brand",
            "Status",
            "Errors",
            "Output Notes",
        ]
        assert [r[0] for r in out_rows[1:]] == ["1", "2", "3", "4"]
        for row in out_rows[1:]:
            inputs = [s.strip() for s in row[2].split(",")]
            outputs = [s.strip() for s in row[3].split(",")]
            assert len(inputs) == len(outputs), row
            assert row[4] == f"brand-{row[0]}"
        row3 = out_rows[3]
        outs3 = [s.strip() for s in row3[3].split(",")]
        assert outs3[0] == "" and outs3[1] == "" and outs3[2].startswith(server.base_url)
        assert row3[5] == "PARTIAL"
        assert "truncated.jpg" in row3[6] and "page.jpg" in row3[6]
        assert out_rows[1][5] == "OK" and out_rows[1][6] == ""
        assert out_rows[4][5] == "PARTIAL"

        # Webhook: first attempt got a 500, the retry succeeded, the signature verifies.
        deadline = time.monotonic() + 20
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(sink.received) == 1 and sink.calls == 2
        headers, hook_body = sink.received[0]
        verify(WEBHOOK_SECRET, headers, hook_body)
        payload = httpx.Response(200, content=hook_body).json()
        assert payload["request_id"] == request_id
        assert payload["status"] == "COMPLETED_WITH_ERRORS"
        assert payload["counts"]["images_failed"] == 5
        assert payload["output_csv"] == status["output_csv"]
        time.sleep(0.5)
        hook_status = client.get(f"/api/status/{request_id}").json()["webhook"]
        assert hook_status["status"] == "DELIVERED" and hook_status["attempts"] == 2

        listed = client.get("/api/batches").json()
        assert [b["request_id"] for b in listed["items"]] == [request_id]

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'pixelbatch_batches{status="COMPLETED_WITH_ERRORS"} 1.0' in metrics.text
        assert 'pixelbatch_batches{status="PROCESSING"} 0.0' in metrics.text
        assert (
            'pixelbatch_http_request_duration_seconds_count{method="GET",'
            'route="/api/status/{request_id}",status="200"}'
        ) in metrics.text


def test_idempotent_upload_returns_same_request(
    server: support.ServerProcess, images: ImageServer
) -> None:
    body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
    with server.client() as client:
        ids = set()
        for _ in range(3):
            response = client.post(
                "/api/upload",
                files={"file": ("c.csv", body, "text/csv")},
                headers={"Idempotency-Key": "order-42"},
            )
            assert response.status_code == 202
            ids.add(response.json()["request_id"])
        assert len(ids) == 1
        assert client.get("/api/batches").json()["total"] == 1
        other = client.post(
            "/api/upload",
            files={"file": ("c.csv", body, "text/csv")},
            headers={"Idempotency-Key": "order-43"},
        )
        assert other.json()["request_id"] not in ids
        support.wait_final(client, ids.pop())


def test_errors_are_json_with_codes(server: support.ServerProcess) -> None:
    with server.client() as client:
        missing = client.get("/api/status/7a1f2c64-4d6c-4a3e-9a51-6b0f1c0d2e3f")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"
        bad_id = client.get("/api/status/not-a-uuid")
        assert bad_id.status_code == 422 and bad_id.json()["code"] == "validation_error"
        assert client.get("/healthz").json() == {"status": "ok", "detail": None}
        assert client.get("/readyz").status_code == 200
        assert "/api/upload" in client.get("/openapi.json").json()["paths"]
        no_file = client.post("/api/upload", data={"webhook_url": "x"})
        assert no_file.status_code == 422 and "Traceback" not in no_file.text
        traversal = client.get("/files/..%2f..%2fetc/passwd")
        assert traversal.status_code in (400, 404)
        assert "root:" not in traversal.text
