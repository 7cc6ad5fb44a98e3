"""Each message a user reads about a catalog says each thing once: the URL, the row, the
header list, and the Errors column of the output has one format for every failed image."""

from __future__ import annotations

import functools
import io

import pytest

from pixelbatch.catalog import CatalogReader, CsvLimits, CsvRejected, format_image_error
from pixelbatch.fetch.urls import normalize_http_url
from pixelbatch.settings import Settings

HEADER = "S. No.,Product Name,Input Image Urls"
LIMITS = CsvLimits.from_settings(Settings())


def _rejection(data: bytes) -> CsvRejected:
    validate = functools.partial(normalize_http_url, max_length=LIMITS.max_url_length)
    with pytest.raises(CsvRejected) as info:
        list(CatalogReader(io.BytesIO(data), LIMITS, validate))
    return info.value


def test_a_bad_url_is_quoted_once() -> None:
    err = _rejection(f"{HEADER}\n1,Mug,notaurl\n".encode())
    [problem] = err.problems
    assert problem.message == "URL must start with http:// or https://: 'notaurl'"
    assert err.message.count("notaurl") == 1


def test_invalid_utf8_names_its_row_once() -> None:
    head = f"{HEADER}\n".encode()
    err = _rejection(head + b"1,caf\xe9,http://x.test/a.jpg\n")
    [problem] = err.problems
    offset = len(head) + len(b"1,caf")
    assert problem.describe().startswith(
        f"row 2: invalid UTF-8 at byte {offset}; save the file as UTF-8"
    )
    assert err.message.count("row 2") == 1


def test_missing_columns_are_one_problem_listing_what_was_found() -> None:
    err = _rejection(b"Serial,Name,URLs\n1,Mug,http://x.test/a.jpg\n")
    [problem] = err.problems
    assert (problem.row, problem.column) == (1, None)
    assert problem.message == (
        "missing required columns 'S. No.', 'Product Name', 'Input Image Urls';"
        " the header row has 'Serial', 'Name', 'URLs'"
        " (the first row must be the header, columns in any order)"
    )
    assert err.message.count("first row must be the header") == 1


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("HTTP 404 Not Found from http://x.test/2.jpg", "HTTP 404 Not Found"),
        ("unsupported_format: not an image", "unsupported_format: not an image"),
        (
            "Could not download http://x.test/2.jpg: connection refused",
            "Could not download the URL: connection refused",
        ),
        (
            "Refused to connect to 127.0.0.1 (loopback address) for http://x.test/2.jpg;"
            " set PIXELBATCH_FETCH_ALLOW=127.0.0.1:80 to allow it",
            "Refused to connect to 127.0.0.1 (loopback address);"
            " set PIXELBATCH_FETCH_ALLOW=127.0.0.1:80 to allow it",
        ),
    ],
)
def test_errors_column_has_one_format(reason: str, expected: str) -> None:
    """``image N (URL): reason`` for every image, the URL named once, whether or not the
    reason (a fetch error usually) named it already."""
    assert format_image_error(2, "http://x.test/2.jpg", reason) == (
        f"image 2 (http://x.test/2.jpg): {expected}"
    )
