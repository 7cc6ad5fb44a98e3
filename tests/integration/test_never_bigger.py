"""Never a bigger file, through a real ``pixelbatch serve`` fetching from a local image
server: a PNG that cannot shrink comes back no bigger, marked ``kept_original`` in the
listing and the CSV; a format change that grows the file is done and reported."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, PngImagePlugin

from pixelbatch.demo.server import ImageServer, Route
from tests import support
from tests.unit.test_strip import gps_exif


def _tight_png() -> bytes:
    """Noise at compression level 9 with a text chunk and EXIF (GPS): no re-encode beats it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "shot in the back garden")
    buf = io.BytesIO()
    noise = random.Random(11).randbytes(160 * 120 * 3)  # seeded: the same image every run
    Image.frombytes("RGB", (160, 120), noise).save(
        buf, "PNG", optimize=True, compress_level=9, pnginfo=info, exif=gps_exif()
    )
    return buf.getvalue()


TIGHT_PNG = _tight_png()
PHOTO = support.jpeg((640, 480), quality=90)


@pytest.fixture
def files() -> Iterator[ImageServer]:
    server = ImageServer()
    server.add("/tight.png", Route(TIGHT_PNG, "image/png"))
    server.add("/photo.jpg", Route(PHOTO, "image/jpeg"))
    with server:
        yield server


@pytest.fixture
def served(tmp_path: Path, files: ImageServer) -> Iterator[support.ServerProcess]:
    env = {"PIXELBATCH_FETCH_ALLOW": files.allow_entry}
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        yield proc
    finally:
        proc.stop()


def _run(
    client: httpx.Client, body: bytes, **options: str
) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """Upload, wait, and return the listing by file name, the output CSV's rows and the
    final status."""
    response = client.post(
        "/api/upload", files={"file": ("catalog.csv", body, "text/csv")}, data=options
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    status = support.wait_final(client, request_id, timeout=90)
    assert status["status"] == "COMPLETED", status
    page = client.get(f"/api/batches/{request_id}/images", params={"limit": 100}).json()
    by_name = {i["input_url"].rsplit("/", 1)[1]: i for i in page["items"]}
    text = client.get(f"/api/batches/{request_id}/output.csv").text
    return by_name, list(csv.DictReader(io.StringIO(text))), status


def test_a_png_that_cannot_shrink_is_kept_and_a_format_change_reports_growth(
    served: support.ServerProcess, files: ImageServer
) -> None:
    u = files.base_url
    body = support.csv_bytes([["1", "Tight", f"{u}/tight.png"], ["2", "Photo", f"{u}/photo.jpg"]])
    with served.client() as client:
        listing, rows, status = _run(client, body)
        tight, photo = listing["tight.png"], listing["photo.jpg"]
        counts = status["counts"]
        assert (counts["images_kept_original"], counts["images_grew"]) == (1, 0)
        assert tight["kept_original"] is True and tight["grew"] is False
        assert tight["bytes_in"] == len(TIGHT_PNG)
        assert tight["bytes_out"] < tight["bytes_in"]  # its text and EXIF went
        stored = client.get(tight["output_url"])
        assert stored.status_code == 200
        assert len(stored.content) == tight["bytes_out"]
        assert b"back garden" not in stored.content and b"SecretCam" not in stored.content
        with (
            Image.open(io.BytesIO(stored.content)) as out,
            Image.open(io.BytesIO(TIGHT_PNG)) as src,
        ):
            assert out.convert("RGB").tobytes() == src.convert("RGB").tobytes()
        assert photo["kept_original"] is False and photo["grew"] is False
        assert photo["bytes_out"] < photo["bytes_in"]

        by_serial = {r["S. No."]: r for r in rows}
        assert list(rows[0])[-3:] == ["Status", "Errors", "Output Notes"]
        assert by_serial["1"]["Status"] == "OK" and by_serial["1"]["Errors"] == ""
        assert by_serial["1"]["Output Notes"] == (
            f"image 1: kept the original, metadata stripped ({tight['bytes_in']} ->"
            f" {tight['bytes_out']} bytes; a re-encode was not smaller)"
        )
        assert by_serial["2"]["Output Notes"] == ""

        body = support.csv_bytes([["1", "Photo as PNG", f"{u}/photo.jpg"]])
        listing, rows, status = _run(client, body, output_format="png")
        grown = listing["photo.jpg"]
        counts = status["counts"]
        assert (counts["images_kept_original"], counts["images_grew"]) == (0, 1)
        metrics = client.get("/metrics").text
        assert 'pixelbatch_images_not_smaller_total{outcome="kept_original"} 1.0' in metrics
        assert 'pixelbatch_images_not_smaller_total{outcome="grew"} 1.0' in metrics
        assert grown["kept_original"] is False and grown["grew"] is True
        assert grown["bytes_out"] > grown["bytes_in"] == len(PHOTO)
        assert client.get(grown["output_url"]).headers["content-type"] == "image/png"
        assert rows[0]["Status"] == "OK"
        assert rows[0]["Output Notes"] == (
            f"image 1: grew {grown['bytes_in']} -> {grown['bytes_out']} bytes"
            " (the format or size change asked for)"
        )
