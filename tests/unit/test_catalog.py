"""Unit tests for the catalog CSV reader and writer."""

from __future__ import annotations

import csv
import io
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pixelbatch.catalog import (
    CatalogReader,
    CsvLimits,
    CsvProblem,
    CsvRejected,
    OutputRow,
    ProductRow,
    format_image_error,
    neutralise_cell,
    write_output_csv,
)
from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings

HEADER = "S. No.,Product Name,Input Image Urls"


def check_url(url: str) -> str:
    """Stand-in for the real validator: absolute http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("URL must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInput("URL has no host")
    return url


def limits(**overrides: int) -> CsvLimits:
    """Limits smaller than the production ones, from ``Settings`` fields (and validated by
    it) so that the tests exercise the only way the service builds them."""
    values: dict[str, Any] = {
        "max_upload_bytes": 10 * 1024 * 1024,
        "max_rows": 1000,
        "max_urls_per_row": 10,
        "max_url_length": 300,
        "max_reported_errors": 100,
    }
    values.update(overrides)
    return CsvLimits.from_settings(Settings(**values))


def reader_for(data: bytes | str, **overrides: int) -> CatalogReader:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return CatalogReader(io.BytesIO(raw), limits(**overrides), check_url)


def parse(data: bytes | str, **overrides: int) -> list[ProductRow]:
    return list(reader_for(data, **overrides))


def problems(data: bytes | str, **overrides: int) -> CsvRejected:
    with pytest.raises(CsvRejected) as info:
        parse(data, **overrides)
    return info.value


def has(err: CsvRejected, row: int | None, column: str | None, text: str) -> bool:
    return any(p.row == row and p.column == column and text in p.message for p in err.problems)


# -- valid files ------------------------------------------------------------------------


def test_aliases_any_case_and_order_with_extra_columns() -> None:
    data = (
        "Brand,input image URLs ,  product   NAME,Colour,serial number\r\n"
        "Acme,https://img.example/a.jpg,Shoe,red,1\r\n"
        "Bolt,http://img.example/b.jpg,Hat,blue,2\r\n"
    )
    reader = reader_for(data)
    assert reader.extra_columns == ("Brand", "Colour")
    rows = list(reader)
    assert rows == [
        ProductRow(2, "1", "Shoe", ("https://img.example/a.jpg",), ("Acme", "red")),
        ProductRow(3, "2", "Hat", ("http://img.example/b.jpg",), ("Bolt", "blue")),
    ]


@pytest.mark.parametrize("alias", ["S. No.", "S.No", "SNo", "S No", "Serial No", "s. no"])
def test_serial_aliases(alias: str) -> None:
    rows = parse(f"{alias},Product Name,Input Image Urls\n7,Shoe,https://x.test/a.jpg\n")
    assert rows[0].serial == "7"


def test_utf8_bom_is_ignored() -> None:
    data = "\ufeff" + HEADER + "\n1,Café,https://x.test/a.jpg\n"
    reader = reader_for(data)
    rows = list(reader)
    assert rows[0].serial == "1"
    assert rows[0].name == "Café"


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_dialects(delimiter: str) -> None:
    lines = [
        ["S. No.", "Product Name", "Input Image Urls", "Price, EUR"],
        ["1", "Shoe, red", "https://x.test/a.jpg,https://x.test/b.jpg", "9,99"],
    ]
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter).writerows(lines)
    reader = reader_for(buf.getvalue())
    assert reader.delimiter == delimiter
    assert reader.extra_columns == ("Price, EUR",)
    [row] = list(reader)
    assert row.name == "Shoe, red"
    assert row.urls == ("https://x.test/a.jpg", "https://x.test/b.jpg")
    assert row.extra == ("9,99",)


def test_excel_sep_hint_line() -> None:
    data = "sep=;\r\nS. No.;Product Name;Input Image Urls\r\n1;Shoe;https://x.test/a.jpg\r\n"
    [row] = parse(data)
    assert row.row == 2  # Excel hides the hint line
    assert row.name == "Shoe"


def test_quoted_multi_url_cells_with_commas_and_newlines() -> None:
    data = (
        HEADER + "\r\n"
        '1,"Shoe ""Deluxe"", red","https://x.test/1.jpg, https://x.test/2.jpg\r\n'
        'https://x.test/3.jpg\n\n , https://x.test/4.jpg,"\r\n'
        "2,Hat,https://x.test/5.jpg\r\n"
    )
    rows = parse(data)
    assert rows[0].name == 'Shoe "Deluxe", red'
    assert rows[0].urls == tuple(f"https://x.test/{i}.jpg" for i in range(1, 5))
    # The quoted cell spans three lines but is one spreadsheet row.
    assert [r.row for r in rows] == [2, 3]


def test_blank_lines_skipped_but_counted_as_rows() -> None:
    data = "\n" + HEADER + "\n\n1,Shoe,https://x.test/a.jpg\n,,\n2,Hat,https://x.test/b.jpg"
    rows = parse(data)
    assert [(r.row, r.serial) for r in rows] == [(4, "1"), (6, "2")]


def test_short_rows_padded_and_trailing_empty_cells_tolerated() -> None:
    data = HEADER + ",Colour\n1,Shoe,https://x.test/a.jpg\n2,Hat,https://x.test/b.jpg,red,,\n"
    rows = parse(data)
    assert rows[0].extra == ("",)
    assert rows[1].extra == ("red",)


def test_validator_normalises_urls() -> None:
    reader = CatalogReader(
        io.BytesIO(f"{HEADER}\n1,Shoe,HTTPS://X.test/a.jpg\n".encode()),
        limits(),
        lambda u: u.replace("HTTPS://X.test", "https://x.test"),
    )
    assert next(iter(reader)).urls == ("https://x.test/a.jpg",)


def test_limits_from_settings() -> None:
    s = Settings(max_upload_bytes=123, max_rows=4, max_urls_per_row=5, max_url_length=6)
    lim = CsvLimits.from_settings(s)
    assert (lim.max_bytes, lim.max_rows, lim.max_urls_per_row, lim.max_url_length) == (
        123,
        4,
        5,
        6,
    )
    assert lim.max_reported_errors == s.max_reported_errors


@pytest.mark.parametrize(
    "field",
    ["max_upload_bytes", "max_rows", "max_urls_per_row", "max_url_length", "max_reported_errors"],
)
def test_settings_refuse_limits_that_would_refuse_every_file(field: str) -> None:
    zero: dict[str, Any] = {field: 0}
    with pytest.raises(ValidationError, match=field):
        Settings(**zero)


# -- rejections -------------------------------------------------------------------------


def test_missing_columns_rejected_before_any_row() -> None:
    reader = reader_for("S. No.,Name,URLs\n1,Shoe,https://x.test/a.jpg\n")
    assert reader.extra_columns == ()
    it = iter(reader)
    with pytest.raises(CsvRejected) as info:
        next(it)
    err = info.value
    assert err.code == "invalid_csv"
    assert err.status_code == 400
    assert has(err, 1, None, "missing required columns 'Product Name', 'Input Image Urls';")
    assert not has(err, 1, None, "'S. No.', 'Product Name'")


def test_duplicate_header_names() -> None:
    err = problems("S. No.,Product Name,Input Image Urls,Serial Number,Colour,colour\n1,a,b\n")
    assert has(err, 1, "Serial Number", "duplicate column")
    assert has(err, 1, "colour", "duplicate column")


def test_empty_file_and_header_only() -> None:
    assert has(problems(b""), None, None, "header row is required")
    assert has(problems(HEADER + "\r\n\r\n"), None, None, "no data rows")


def test_row_problems_name_row_and_column() -> None:
    data = (
        "Input Image Urls,S. No.,Product Name\n"
        "https://x.test/1.jpg,1,Shoe\n"  # row 2: fine
        "https://x.test/2.jpg,,Hat\n"  # row 3: empty serial
        "https://x.test/3.jpg,1,Coat\n"  # row 4: duplicate serial
        "https://x.test/4.jpg,4,\n"  # row 5: empty name
        ",5,Sock\n"  # row 6: no URL
        "ftp://x.test/a.jpg,6,Belt\n"  # row 7: not http(s)
        "https://x.test/7.jpg,7,Cap,extra,more\n"  # row 8: too many cells
        "https://x.test/8.jpg,8\n"  # row 9: short row -> empty name
    )
    err = problems(data)
    assert has(err, 3, "S. No.", "serial number is empty")
    assert has(err, 4, "S. No.", "duplicate serial number '1' (first in row 2)")
    assert has(err, 5, "Product Name", "product name is empty")
    assert has(err, 6, "Input Image Urls", "no image URL")
    assert has(err, 7, "Input Image Urls", "URL must start with http:// or https://")
    assert has(err, 7, "Input Image Urls", "'ftp://x.test/a.jpg'")
    assert has(err, 8, None, "row has 5 cells, header has 3")
    assert has(err, 9, "Product Name", "product name is empty")
    assert err.total == 7
    assert err.details["total"] == 7
    assert err.details["truncated"] is False
    assert err.details["problems"][0] == {
        "row": 3,
        "column": "S. No.",
        "message": "serial number is empty",
        "value": None,
    }
    assert err.message.startswith("CSV rejected: 7 problems (row 3, column 'S. No.': ")
    assert err.message.endswith("; and 4 more)")


def test_no_rows_yielded_after_first_problem() -> None:
    data = f"{HEADER}\n1,a,https://x.test/1\n2,,https://x.test/2\n3,c,https://x.test/3\n"
    seen: list[str] = []
    with pytest.raises(CsvRejected):
        for row in reader_for(data):
            seen.append(row.serial)
    assert seen == ["1"]


def test_too_many_urls_and_too_long_url() -> None:
    long_url = "https://x.test/" + "a" * 400
    data = (
        f"{HEADER}\n"
        f'1,Shoe,"{",".join(f"https://x.test/{i}" for i in range(4))}"\n'
        f"2,Hat,{long_url}\n"
    )
    err = problems(data, max_urls_per_row=3, max_url_length=300)
    assert has(err, 2, "Input Image Urls", "4 image URLs, the limit is 3")
    assert has(err, 3, "Input Image Urls", "URL longer than 300 characters")
    [p] = [p for p in err.problems if p.row == 3]
    assert "(truncated, 415 characters)" in p.message
    assert len(p.message) < 300
    assert p.value is not None and len(p.value) <= 201


def test_error_cap_keeps_total() -> None:
    rows = "".join(f"{i},,https://x.test/{i}\n" for i in range(1, 51))
    err = problems(HEADER + "\n" + rows, max_reported_errors=10)
    assert len(err.problems) == 10
    assert err.total == 50
    assert err.details["truncated"] is True
    assert len(err.details["problems"]) == 10
    assert "CSV rejected: 50 problems" in err.message


def test_too_many_rows_stops_reading() -> None:
    rows = "".join(f"{i},p{i},https://x.test/{i}\n" for i in range(1, 11))
    err = problems(HEADER + "\n" + rows + "bad line without enough,\n", max_rows=5)
    assert has(err, 7, None, "too many rows (limit 5)")
    assert err.total == 1  # nothing after the limit was read


def test_invalid_utf8_names_row_and_offset() -> None:
    head = f'{HEADER}\n1,Shoe,https://x.test/a\n2,"multi\nline",https://x.test/b\n'.encode()
    data = head + b"3,caf\xe9,https://x.test/c\n"
    err = problems(data)
    offset = len(head) + len(b"3,caf")
    assert has(err, 4, None, f"invalid UTF-8 at byte {offset};")


def test_invalid_utf8_across_chunk_boundary_and_truncated_at_end() -> None:
    # A valid multi-byte character split by the 64 KiB read boundary must not be flagged.
    name = "x" * (64 * 1024 - len(HEADER) - 4) + "é" * 10
    rows = parse(f"{HEADER}\n1,{name},https://x.test/a\n".encode())
    assert rows[0].name == name
    err = problems(f"{HEADER}\n1,a,https://x.test/a\n".encode() + b"2,b,https://x.test/b\xc3")
    assert has(err, 3, None, "invalid UTF-8 at byte")


def test_latin1_file_reports_each_row_once() -> None:
    data = (
        HEADER + "\n" + "".join(f"{i},Caf\xe9 cr\xe8me,https://x.test/{i}\n" for i in range(1, 6))
    )
    err = problems(data.encode("latin-1"))
    assert [p.row for p in err.problems] == [2, 3, 4, 5, 6]


def test_nul_bytes_are_binary_data() -> None:
    err = problems(f"{HEADER}\n1,a\x00b,https://x.test/a\n".encode())
    assert has(err, 2, None, "binary data")


def test_binary_file_rejected_quickly() -> None:
    err = problems(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10)
    assert err.total >= 1
    assert has(err, 1, None, "missing required columns")


def test_size_limit_stops_reading_at_the_cap() -> None:
    class Counting(io.BytesIO):
        taken = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            self.taken += len(data)
            return data

    body = f"{HEADER}\n" + "".join(f"{i},p,https://x.test/{i}\n" for i in range(10_000))
    source = Counting(body.encode())
    with pytest.raises(CsvRejected) as info:
        list(CatalogReader(source, limits(max_upload_bytes=1000), check_url))
    assert has(info.value, None, None, "larger than the limit of 1000 bytes")
    assert source.taken == 1001


def test_line_too_long_is_rejected() -> None:
    err = problems(b"a" * (3 * 1024 * 1024))
    assert has(err, 1, None, "line is longer than")


def test_unterminated_quote_is_malformed() -> None:
    err = problems(f'{HEADER}\n1,"Shoe,https://x.test/a\n2,Hat,https://x.test/b\n')
    assert has(err, 2, None, "malformed CSV")


def test_rejection_pickles() -> None:
    err = CsvRejected([CsvProblem(2, "S. No.", "serial number is empty")], 5)
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, CsvRejected)
    assert copy.problems == err.problems
    assert copy.total == 5
    assert copy.message == err.message
    assert copy.details == err.details


def test_reader_iterates_once() -> None:
    reader = reader_for(f"{HEADER}\n1,a,https://x.test/a\n")
    assert len(list(reader)) == 1
    with pytest.raises(RuntimeError):
        list(reader)


# -- round trip -------------------------------------------------------------------------

cell_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    max_size=30,
)
name_text = cell_text.filter(lambda s: s.strip() != "")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(name_text, cell_text, cell_text), min_size=1, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
    line_end=st.sampled_from(["\r\n", "\n"]),
    bom=st.booleans(),
)
def test_names_and_extras_round_trip(
    rows: list[tuple[str, str, str]], delimiter: str, line_end: str, bom: bool
) -> None:
    # csv.writer quotes a lone CR only when it is part of the line terminator, so a
    # "\n"-terminated file is written fully quoted to stay unambiguous.
    buf = io.StringIO()
    if line_end == "\r\n":
        writer = csv.writer(buf, delimiter=delimiter, lineterminator=line_end)
    else:
        writer = csv.writer(
            buf, delimiter=delimiter, lineterminator=line_end, quoting=csv.QUOTE_ALL
        )
    writer.writerow(["S. No.", "Extra, one", "Product Name", "Input Image Urls", "Extra\ntwo"])
    for i, (name, a, b) in enumerate(rows, start=1):
        writer.writerow([str(i), a, name, f"https://x.test/{i}.jpg, https://x.test/{i}b", b])
    raw = ("\ufeff" if bom else "") + buf.getvalue()
    reader = reader_for(raw)
    assert reader.extra_columns == ("Extra, one", "Extra\ntwo")
    parsed = list(reader)
    assert [(p.name, *p.extra) for p in parsed] == [(n.strip(), a, b) for n, a, b in rows]
    assert all(len(p.urls) == 2 for p in parsed)


# -- writer -----------------------------------------------------------------------------


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_writer_columns_slots_and_errors() -> None:
    out = io.StringIO(newline="")
    rows = [
        OutputRow(
            serial="1",
            name="Shoe",
            input_urls=["https://x.test/1", "https://x.test/2", "https://x.test/3"],
            output_urls=["https://cdn.test/1", None, "https://cdn.test/3"],
            extra=["red"],
            status="PARTIAL",
            errors=[format_image_error(2, "https://x.test/2", "HTTP 404")],
        ),
        OutputRow("2", "Hat", ["https://x.test/4"], [None], ["blue"], "FAILED", ["a", "b"]),
    ]
    assert write_output_csv(out, ["Colour"], iter(rows)) == 2
    text = out.getvalue()
    assert text.count("\r\n") == 3
    table = read_back(text)
    assert table[0] == [
        "S. No.",
        "Product Name",
        "Input Image Urls",
        "Output Image Urls",
        "Colour",
        "Status",
        "Errors",
        "Output Notes",
    ]
    assert table[1][2] == "https://x.test/1, https://x.test/2, https://x.test/3"
    assert table[1][3] == "https://cdn.test/1, , https://cdn.test/3"
    slots = [s.strip() for s in table[1][3].split(",")]
    assert slots == ["https://cdn.test/1", "", "https://cdn.test/3"]
    assert table[1][4:] == ["red", "PARTIAL", "image 2 (https://x.test/2): HTTP 404", ""]
    assert [s.strip() for s in table[2][3].split(",")] == [""]
    assert table[2][6] == "a; b"


def test_writer_keeps_slots_when_urls_contain_commas() -> None:
    out = io.StringIO(newline="")
    row = OutputRow(
        "1",
        "a",
        ["https://x.test/a,b", "https://x.test/c"],
        [None, "https://o/1,2"],
        [],
        "PARTIAL",
        [],
    )
    write_output_csv(out, [], [row])
    cell = read_back(out.getvalue())[1][3]
    assert [s.strip() for s in cell.split(",")] == ["", "https://o/1%2C2"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("https://x.test/a", "https://x.test/a"),
        ("Shoe = nice", "Shoe = nice"),
        ("", ""),
    ],
)
def test_neutralise_cell(value: str, expected: str) -> None:
    assert neutralise_cell(value) == expected


def test_writer_neutralises_every_cell() -> None:
    out = io.StringIO(newline="")
    row = OutputRow(
        "-1", "=cmd|' /C calc'!A0", ["https://x.test/a"], [None], ["@x"], "FAILED", ["+oops"]
    )
    write_output_csv(out, ["=col"], [row])
    header, cells = read_back(out.getvalue())
    assert header[4] == "'=col"
    assert cells[0] == "'-1"
    assert cells[1] == "'=cmd|' /C calc'!A0"
    assert cells[2] == "https://x.test/a"
    assert cells[4] == "'@x"
    assert cells[6] == "'+oops"


def test_writer_renames_extra_columns_that_clash() -> None:
    out = io.StringIO(newline="")
    write_output_csv(out, ["Status", "status (input)", "Output Image URLs"], [])
    header = read_back(out.getvalue())[0]
    assert header[4:7] == ["Status (input)", "status (input) (input)", "Output Image URLs (input)"]
    assert len(set(h.casefold() for h in header)) == len(header)


def test_writer_rejects_misaligned_rows() -> None:
    with pytest.raises(ValueError, match="output URLs"):
        write_output_csv(io.StringIO(), [], [OutputRow("1", "a", ["u"], [], [], "OK", [])])


def test_output_round_trips_through_reader_dialect() -> None:
    out = io.StringIO(newline="")
    write_output_csv(
        out,
        ["Note"],
        [
            OutputRow(
                "1",
                'Shoe, "red"\nsize 9',
                ["https://x.test/a"],
                ["https://o/a"],
                ["ü,\n"],
                "OK",
                [],
            )
        ],
    )
    reader = reader_for(out.getvalue())
    assert "Output Image Urls" in reader.extra_columns
    [row] = list(reader)
    assert row.name == 'Shoe, "red"\nsize 9'
    assert row.extra[reader.extra_columns.index("Note")] == "ü,\n"


# -- streaming --------------------------------------------------------------------------


def _big_csv(path: Path, rows: int) -> None:
    def lines() -> Iterator[str]:
        yield HEADER + ",Colour\r\n"
        for i in range(1, rows + 1):
            yield f'{i},"Product {i}, size M","https://img.test/{i}/a.jpg, https://img.test/{i}/b.jpg",blue\r\n'

    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.writelines(lines())


_READ_AND_MEASURE = """
import functools, sys
from pixelbatch.catalog import CatalogReader, CsvLimits
from pixelbatch.fetch.urls import normalize_http_url
from pixelbatch.settings import Settings

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

limits = CsvLimits.from_settings(Settings(max_rows=200_000, max_upload_bytes=50_000_000))
check = functools.partial(normalize_http_url, max_length=2048)
before = peak_kib()
with open(sys.argv[1], "rb") as fh:
    count = sum(1 for _ in CatalogReader(fh, limits, check))
print(count, peak_kib() - before)
"""


def test_streaming_100k_rows_in_bounded_memory(tmp_path: Path) -> None:
    """Peak resident memory of a fresh process while it reads the catalog, over what it held
    before (VmHWM): the real cost, allocator included, at the speed of an untraced run."""
    path = tmp_path / "big.csv"
    _big_csv(path, 100_000)
    assert path.stat().st_size > 8_000_000
    out = subprocess.run(
        [sys.executable, "-c", _READ_AND_MEASURE, str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    count, grown_kib = int(out[0]), int(out[1])
    assert count == 100_000
    assert grown_kib < 30 * 1024, f"peak grew {grown_kib / 1024:.1f} MiB"


def test_windows_1252_export_is_refused_with_how_to_fix_it_once() -> None:
    # What Excel's plain "CSV (Comma delimited)" writes for French product names.
    data = (HEADER + "\n1,Café crème,https://x.test/1\n2,Thé,https://x.test/2\n").encode("cp1252")
    err = problems(data)
    assert [p.row for p in err.problems] == [2, 3]
    first, second = (p.message for p in err.problems)
    assert "Windows-1252" in first
    assert '"CSV UTF-8 (Comma delimited) (*.csv)"' in first
    assert second.startswith("invalid UTF-8 at byte")
    assert "Save As" not in second  # the fix is said once, not per row
    assert "CSV UTF-8" in str(err)  # and it is in the message the API and the CLI print
