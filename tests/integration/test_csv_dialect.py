"""The output CSV of a real server keeps the uploaded CSV's delimiter and BOM."""

from __future__ import annotations

import csv
import io

from pixelbatch.demo.server import ImageServer
from tests import support


def test_semicolon_csv_with_bom_gives_semicolon_output_with_bom(
    server: support.ServerProcess, images: ImageServer
) -> None:
    u = images.base_url
    rows = [["1", "Chaussure; rouge", f"{u}/q90.jpg,{u}/missing.jpg", "12,50"]]
    header = ["S. No.", "Product Name", "Input Image Urls", "Prix"]
    body = b"\xef\xbb\xbf" + support.csv_bytes(rows, header, delimiter=";")
    with server.client() as client:
        response = client.post("/api/upload", files={"file": ("excel.csv", body, "text/csv")})
        assert response.status_code == 202, response.text
        request_id = response.json()["request_id"]
        support.wait_final(client, request_id)
        output = client.get(f"/api/batches/{request_id}/output.csv")
        assert output.status_code == 200
    raw = output.content
    assert raw.startswith(b"\xef\xbb\xbf"), raw[:20]
    text = raw[3:].decode("utf-8")
    assert text.startswith("S. No.;Product Name;Input Image Urls;Output Image Urls;Prix;")
    out = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert out[1][0:3] == ["1", "Chaussure; rouge", f"{u}/q90.jpg, {u}/missing.jpg"]
    assert out[1][4] == "12,50"
    assert out[1][5] == "PARTIAL"


def test_windows_1252_upload_is_refused_saying_how_to_save_as_utf8(
    server: support.ServerProcess,
) -> None:
    body = "S. No.;Product Name;Input Image Urls\r\n1;Café;https://x.test/a.jpg\r\n"
    with server.client() as client:
        response = client.post(
            "/api/upload", files={"file": ("excel.csv", body.encode("cp1252"), "text/csv")}
        )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_csv"
    assert "Windows-1252" in error["message"]
    assert "CSV UTF-8 (Comma delimited)" in error["message"]
