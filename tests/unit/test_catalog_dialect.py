"""The output CSV keeps the input's dialect: the reader detects it, the writer repeats it."""

from __future__ import annotations

import csv
import io

import pytest

from pixelbatch.catalog import CatalogReader, CsvDialect, CsvLimits, OutputRow, write_output_csv
from pixelbatch.settings import Settings

ROW = OutputRow(
    serial="1",
    name="Shoe; red",
    input_urls=["https://x.test/a.jpg", "https://x.test/b.jpg"],
    output_urls=["https://cdn.test/1.jpg", None],
    extra=["9,99"],
    status="PARTIAL",
    errors=["image 2: HTTP 404", "x"],
)


def _read(data: bytes) -> CatalogReader:
    return CatalogReader(io.BytesIO(data), CsvLimits.from_settings(Settings()), lambda u: u)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"S. No.,Product Name,Input Image Urls\n", CsvDialect(",", False)),
        (b"\xef\xbb\xbfS. No.;Product Name;Input Image Urls\n", CsvDialect(";", True)),
        (b"S. No.\tProduct Name\tInput Image Urls\n", CsvDialect("\t", False)),
        (b"\xef\xbb\xbfsep=|\r\nS. No.|Product Name|Input Image Urls\r\n", CsvDialect("|", True)),
    ],
)
def test_reader_exposes_the_dialect_it_detected(data: bytes, expected: CsvDialect) -> None:
    assert _read(data).dialect == expected


def _write(dialect: CsvDialect | None) -> str:
    buf = io.StringIO(newline="")
    if dialect is None:
        write_output_csv(buf, ["Price"], [ROW])
    else:
        write_output_csv(buf, ["Price"], [ROW], dialect)
    return buf.getvalue()


def test_default_is_comma_without_bom() -> None:
    text = _write(None)
    assert not text.startswith("\ufeff")
    assert text.startswith("S. No.,Product Name,")


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_writer_repeats_delimiter_and_bom(delimiter: str) -> None:
    text = _write(CsvDialect(delimiter, bom=True))
    assert text.startswith("\ufeffS. No." + delimiter + "Product Name" + delimiter)
    rows = list(csv.reader(io.StringIO(text[1:]), delimiter=delimiter))
    assert rows[1] == [
        "1",
        "Shoe; red",
        "https://x.test/a.jpg, https://x.test/b.jpg",
        "https://cdn.test/1.jpg, ",
        "9,99",
        "PARTIAL",
        "image 2: HTTP 404; x",
        "",
    ]
    assert text.count("\ufeff") == 1


def test_dialect_survives_the_database_round_trip() -> None:
    for dialect in (CsvDialect(), CsvDialect(";", True), CsvDialect("\t", False)):
        assert CsvDialect.from_json(dialect.to_json()) == dialect
    assert CsvDialect.from_json(None) == CsvDialect()  # a batch stored before 0004
    assert CsvDialect.from_json({"delimiter": '"', "bom": True}) == CsvDialect(",", True)
