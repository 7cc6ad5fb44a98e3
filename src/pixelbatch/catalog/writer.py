"""Writing the output CSV: the input rows with their output URLs, status, errors and notes.

URL lists are written as one cell joined with ``", "``. Every input URL has a slot in the
output list, in the same order; an image that failed leaves its slot empty, so splitting the
cell on ``","`` and stripping each piece always gives exactly as many slots as inputs (e.g.
``"https://x/1.jpg, , https://x/3.jpg"``). Commas inside URLs are percent-encoded so that
split stays exact.

The caller opens ``dest`` as UTF-8 text with ``newline=""``. The output keeps the input's
dialect (:class:`CsvDialect`): its delimiter, and a BOM when the input had one, so the
spreadsheet that wrote the input opens the output the same way.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from pixelbatch.catalog.dialect import CsvDialect
from pixelbatch.catalog.reader import NAME_COLUMN, SERIAL_COLUMN, URLS_COLUMN

__all__ = [
    "ERRORS_COLUMN",
    "NOTES_COLUMN",
    "OUTPUT_URLS_COLUMN",
    "STATUS_COLUMN",
    "OutputRow",
    "format_image_error",
    "join_urls",
    "neutralise_cell",
    "output_header",
    "write_output_csv",
]

OUTPUT_URLS_COLUMN = "Output Image Urls"
STATUS_COLUMN = "Status"
ERRORS_COLUMN = "Errors"
# Last, after Errors: Status still follows the extra columns and Errors still follows
# Status, as DESIGN.md lays them out, so a consumer reading by name or by index from the
# left reads the same cells as before (one counting from the right end would not).
NOTES_COLUMN = "Output Notes"
URL_SEPARATOR = ", "
ERROR_SEPARATOR = "; "

# Leading characters that make Excel, LibreOffice or Sheets evaluate a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SPACES_RE = re.compile(r"\s+")
_PLAIN = CsvDialect()  # comma, no BOM


@dataclass(frozen=True)
class OutputRow:
    """One product as it ends up; ``output_urls`` aligns with ``input_urls`` (None: failed)."""

    serial: str
    name: str
    input_urls: Sequence[str]
    output_urls: Sequence[str | None]
    extra: Sequence[str]
    status: str
    errors: Sequence[str]
    # Per image facts that are not errors: an original kept, an output that grew.
    notes: Sequence[str] = ()


def neutralise_cell(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would execute (CSV/formula injection).

    Applied to every cell, names and serials included: a product called ``=HYPERLINK(...)``
    comes from an untrusted supplier file and must stay text when opened in Excel.
    """
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


def join_urls(urls: Sequence[str | None]) -> str:
    """One cell for a URL list, keeping one slot per URL (see the module docstring)."""
    return URL_SEPARATOR.join("" if u is None else u.replace(",", "%2C") for u in urls)


def format_image_error(position: int, url: str, reason: str) -> str:
    """The ``Errors`` entry for one failed image, ``image N (URL): reason`` for every image
    (``position`` is 1-based). Fetch errors name the URL themselves; it is taken out of the
    reason so the entry names it once, in the same place whatever failed."""
    return f"image {position} ({url}): {_without_url(reason, url)}"


def _without_url(reason: str, url: str) -> str:
    if not url or url not in reason:
        return reason
    for joined in (f" from {url}", f" for {url}"):
        reason = reason.replace(joined, "")
    reason = reason.replace(url, "the URL")
    return "The URL" + reason[len("the URL") :] if reason.startswith("the URL") else reason


def _column_key(name: str) -> str:
    return _SPACES_RE.sub(" ", name.strip().casefold()).rstrip(".")


def output_header(extra_columns: Sequence[str]) -> list[str]:
    """The output header; an extra column whose name clashes with one of ours (a previous
    output uploaded again) is renamed ``"<name> (input)"`` so no header is ambiguous."""
    fixed_before = [SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN, OUTPUT_URLS_COLUMN]
    fixed_after = [STATUS_COLUMN, ERRORS_COLUMN, NOTES_COLUMN]
    taken = {_column_key(c) for c in fixed_before + fixed_after}
    extras = []
    for name in extra_columns:
        while _column_key(name) in taken:
            name = f"{name} (input)"
        taken.add(_column_key(name))
        extras.append(name)
    return fixed_before + extras + fixed_after


def write_output_csv(
    dest: TextIO,
    extra_columns: Sequence[str],
    rows: Iterable[OutputRow],
    dialect: CsvDialect = _PLAIN,
) -> int:
    """Stream ``rows`` to ``dest`` as the output CSV in ``dialect``; returns the number of
    data rows.

    Rows are written one at a time, so ``rows`` can be a generator over database pages.
    """
    if dialect.bom:
        dest.write("\ufeff")
    writer = csv.writer(
        dest, delimiter=dialect.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
    )
    writer.writerow([neutralise_cell(c) for c in output_header(extra_columns)])
    width = len(extra_columns)
    count = 0
    for row in rows:
        if len(row.output_urls) != len(row.input_urls):
            raise ValueError(
                f"row {row.serial!r}: {len(row.output_urls)} output URLs"
                f" for {len(row.input_urls)} inputs"
            )
        if len(row.extra) != width:
            raise ValueError(
                f"row {row.serial!r}: {len(row.extra)} extra cells for {width} extra columns"
            )
        cells = [
            row.serial,
            row.name,
            join_urls(row.input_urls),
            join_urls(row.output_urls),
            *row.extra,
            row.status,
            ERROR_SEPARATOR.join(row.errors),
            ERROR_SEPARATOR.join(row.notes),
        ]
        writer.writerow([neutralise_cell(c) for c in cells])
        count += 1
    return count
