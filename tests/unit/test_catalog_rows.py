"""The reader's per-row fast paths (one URL without the split regex, whitespace checks by
join) must report exactly what the general paths did."""

from __future__ import annotations

import io

import pytest

from pixelbatch.catalog import CatalogReader, CsvLimits, CsvRejected, ProductRow
from pixelbatch.settings import Settings

HEADER = "S. No.,Product Name,Input Image Urls"
LIMITS = CsvLimits.from_settings(
    Settings(
        max_upload_bytes=1 << 20,
        max_rows=100,
        max_urls_per_row=3,
        max_url_length=40,
        max_reported_errors=50,
    )
)


def _read(text: str) -> list[ProductRow]:
    return list(CatalogReader(io.BytesIO(text.encode()), LIMITS, lambda u: u.lower()))


def _problems(text: str) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(CsvRejected) as info:
        _read(text)
    return [(p.row, p.column, p.message) for p in info.value.problems]


def test_single_and_split_url_cells() -> None:
    rows = _read(
        f"{HEADER}\n"
        "1,A,  HTTP://X/1  \n"
        '2,B," http://x/2 ,\r\n http://x/3 "\n'
        '3,C,"http://x/4\rhttp://x/5"\n'
        '4,D," , http://x/6 ,"\n'
    )
    assert [r.urls for r in rows] == [
        ("http://x/1",),
        ("http://x/2", "http://x/3"),
        ("http://x/4", "http://x/5"),
        ("http://x/6",),
    ]


def test_whitespace_only_rows_and_cells() -> None:
    rows = _read(f"{HEADER}\n \t, ,\n1,A,http://x/1, \t ,\n")
    assert [(r.row, r.serial) for r in rows] == [(3, "1")]
    assert _problems(f"{HEADER}\n1,A,http://x/1, ,x,\n2,B,  \n3,C, , \n") == [
        (2, None, "row has 5 cells, header has 3"),
        (3, "Input Image Urls", "no image URL"),
        (4, "Input Image Urls", "no image URL"),
    ]


def test_url_limits_on_both_paths() -> None:
    long_url = "http://x/" + "a" * 40
    assert _problems(f'{HEADER}\n1,A,{long_url}\n2,B,"http://x/1,http://x/2,{long_url}"\n') == [
        (2, "Input Image Urls", f"URL longer than 40 characters: '{long_url}'"),
        (3, "Input Image Urls", f"URL longer than 40 characters: '{long_url}'"),
    ]


def test_two_urls_glued_by_semicolon_or_bar_are_rejected() -> None:
    """';' and '|' are legal in a URL, so a cell is never split on them; but one followed by
    a new http(s):// is two URLs glued together, which would fail later as one 404."""
    assert _problems(
        f"{HEADER}\n"
        "1,A,http://x/a.jpg;http://x/b.jpg\n"
        "2,B,http://x/a.jpg | HTTPS://x/b.jpg\n"
        "3,C,http://x/a;v=1\n"
    ) == [
        (
            2,
            "Input Image Urls",
            "two URLs joined by ';' in one cell (separate image URLs with a comma):"
            " 'http://x/a.jpg;http://x/b.jpg'",
        ),
        (
            3,
            "Input Image Urls",
            "two URLs joined by '|' in one cell (separate image URLs with a comma):"
            " 'http://x/a.jpg | HTTPS://x/b.jpg'",
        ),
    ]
