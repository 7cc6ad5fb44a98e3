"""parse(write(x)) == x: what pixelbatch writes, pixelbatch (and so any CSV reader) reads
back unchanged, whatever a supplier put in a product name or an extra column.

The output CSV is itself a valid input (its extra columns are kept), which is how users
re-run a batch; so the property is checked through the real writer and the real reader.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelbatch.catalog import CatalogReader, CsvLimits, OutputRow, write_output_csv
from pixelbatch.catalog.writer import neutralise_cell
from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings

LIMITS = CsvLimits.from_settings(
    Settings(
        max_upload_bytes=10 * 1024 * 1024,
        max_rows=1000,
        max_urls_per_row=10,
        max_url_length=300,
        max_reported_errors=100,
    )
)
FIXED_EXTRAS = ["Output Image Urls", "Colour", "Notes", "Status", "Errors", "Output Notes"]


def _check_url(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise InvalidInput("URL must be absolute http(s)")
    return url


# Quotes, commas, semicolons, tabs, CR, LF, CRLF, BOM-like and non-BMP characters: all that
# breaks a hand-rolled CSV writer. NUL is refused by the reader by design.
tricky = st.sampled_from(['"', ",", ";", "\t", "\r", "\n", "\r\n", "\ufeff", "é", "😀", "'"])
cell = st.lists(
    st.one_of(tricky, st.text(st.characters(codec="utf-8", exclude_characters="\x00"))),
    max_size=6,
).map("".join)
# The reader strips the whitespace around a name (suppliers pad them); a name is never blank.
name = cell.map(str.strip).filter(bool)


def _read(rows: list[OutputRow]) -> tuple[CatalogReader, list[tuple[str, tuple[str, ...]]]]:
    text = io.StringIO(newline="")
    write_output_csv(text, ["Colour", "Notes"], rows)
    reader = CatalogReader(io.BytesIO(text.getvalue().encode()), LIMITS, _check_url)
    return reader, [(p.name, tuple(p.extra)) for p in reader]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(name, cell, cell), min_size=1, max_size=6))
def test_names_and_extra_cells_round_trip_exactly(rows: list[tuple[str, str, str]]) -> None:
    out_rows = [
        OutputRow(
            serial=str(i),
            name=product,
            input_urls=[f"https://x.test/{i}.jpg"],
            output_urls=[f"https://cdn.test/{i}.jpg"],
            extra=[colour, notes],
            status="COMPLETED",
            errors=[],
        )
        for i, (product, colour, notes) in enumerate(rows, start=1)
    ]
    reader, parsed = _read(out_rows)
    assert list(reader.extra_columns) == FIXED_EXTRAS
    # Exactly what went in, except that a cell a spreadsheet would execute comes back
    # with the apostrophe that keeps it text (formula injection, see neutralise_cell).
    assert [(p_name, extra[1:3]) for p_name, extra in parsed] == [
        (neutralise_cell(n), (neutralise_cell(c), neutralise_cell(x))) for n, c, x in rows
    ]


def test_formula_cells_are_neutralised_and_plain_ones_untouched() -> None:
    rows = [
        OutputRow(
            "1",
            '=HYPERLINK("http://evil")',
            ["https://x.test/1"],
            [None],
            ["+1", "a"],
            "FAILED",
            ["image 1: HTTP 404"],
        ),
        OutputRow(
            "2",
            'Mug, "large"\nblue',
            ["https://x.test/2"],
            ["https://c.test/2"],
            ["-", "@x"],
            "COMPLETED",
            [],
        ),
    ]
    _, parsed = _read(rows)
    assert parsed[0][0] == '\'=HYPERLINK("http://evil")'
    assert parsed[0][1][1:3] == ("'+1", "a")
    assert parsed[1][0] == 'Mug, "large"\nblue'
    assert parsed[1][1][1:3] == ("'-", "'@x")
