"""Header matching and row validation of an uploaded catalog CSV, streamed.

The reader yields valid rows while it streams so the caller can insert them into an open
transaction, and raises :class:`CsvRejected` with every problem it found (row and column,
as a spreadsheet shows them) once the file has been read. It never holds the file in memory:
the only per-row state is the map of serial numbers seen, needed to report duplicates.
Bytes become lines in :mod:`pixelbatch.catalog.lines`; problems are collected by
:mod:`pixelbatch.catalog.problems`.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from pixelbatch.catalog.dialect import CsvDialect
from pixelbatch.catalog.lines import CsvLines
from pixelbatch.catalog.problems import CsvProblem, ProblemLog, StopReading, quote
from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings

__all__ = [
    "NAME_COLUMN",
    "SERIAL_COLUMN",
    "URLS_COLUMN",
    "CatalogReader",
    "CsvLimits",
    "ProductRow",
]

SERIAL_COLUMN = "S. No."
NAME_COLUMN = "Product Name"
URLS_COLUMN = "Input Image Urls"
_REQUIRED = (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)

# Header names reduced by _header_key -> the canonical required column they stand for.
_ALIASES: dict[str, str] = {
    "sno": SERIAL_COLUMN,
    "srno": SERIAL_COLUMN,
    "slno": SERIAL_COLUMN,
    "serialno": SERIAL_COLUMN,
    "serialnumber": SERIAL_COLUMN,
    "productname": NAME_COLUMN,
    "inputimageurls": URLS_COLUMN,
    "inputimageurl": URLS_COLUMN,
}

_MIN_LINE_CHARS = 1024 * 1024
_DELIMITERS = (",", ";", "\t")
_URL_SPLIT_RE = re.compile(r"[,\r\n]+")
# ';' and '|' are legal inside a URL (path parameters, queries), so a cell is never split
# on them; one followed by a new scheme is two URLs glued together by the wrong separator.
_GLUED_RE = re.compile(r"\s*([;|])\s*https?://", re.IGNORECASE)
_HEADERS_SHOWN = 20  # header names quoted in a "missing required column" problem
_HEADER_JUNK_RE = re.compile(r"[\s._\-]+")
_SPACES_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class CsvLimits:
    """Limits that keep one upload from exhausting memory, the database or the workers.

    A view of :class:`Settings`, which holds the defaults and validates them: build it with
    :meth:`from_settings`. The values are copied once because the reader reads them per row.
    """

    max_bytes: int
    max_rows: int
    max_urls_per_row: int
    max_url_length: int
    max_reported_errors: int

    @classmethod
    def from_settings(cls, s: Settings) -> CsvLimits:
        return s.view(cls, max_bytes="max_upload_bytes")


@dataclass(frozen=True)
class ProductRow:
    """One valid product; ``urls`` are normalised by the validator, ``extra`` follows
    ``CatalogReader.extra_columns``."""

    row: int
    serial: str
    name: str
    urls: tuple[str, ...]
    extra: tuple[str, ...]


def _header_key(name: str) -> str:
    return _HEADER_JUNK_RE.sub("", name.casefold())


def _sniff_delimiter(line: str) -> str:
    """Pick the delimiter Excel used from the header line: the most frequent of , ; tab
    outside quotes (comma on a tie, since that is what the format is named after)."""
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    return max(_DELIMITERS, key=lambda d: counts[d])  # first of equals: comma wins a tie


class CatalogReader:
    """Parse and validate a catalog CSV from a binary stream, one row at a time.

    The header is read in the constructor so ``extra_columns`` is known before any row;
    problems with it are raised (as :class:`CsvRejected`) by the first step of iteration.
    Once a problem is found no further rows are yielded (the caller will roll back anyway),
    but reading goes on so that every problem is reported in one go.
    """

    def __init__(
        self,
        source: IO[bytes],
        limits: CsvLimits,
        url_validator: Callable[[str], str],
    ) -> None:
        self._limits = limits
        self._validate_url = url_validator
        self._log = ProblemLog(limits.max_reported_errors)
        # A line past this is refused, so a file without line endings is not buffered
        # whole; it leaves room for a row with the most and longest URLs allowed, twice.
        max_line_chars = max(
            _MIN_LINE_CHARS, 2 * limits.max_urls_per_row * (limits.max_url_length + 2)
        )
        self._text = CsvLines(
            source, max_bytes=limits.max_bytes, max_line_chars=max_line_chars, log=self._log
        )
        self._iterated = False
        self.extra_columns: tuple[str, ...] = ()
        self.delimiter = ","
        self._header_ok = False
        self._width = 0
        self._serial_idx = self._name_idx = self._urls_idx = 0
        self._serial_col = SERIAL_COLUMN
        self._name_col = NAME_COLUMN
        self._urls_col = URLS_COLUMN
        self._extra_idx: tuple[int, ...] = ()
        self._csv: Iterator[list[str]] = iter(())
        try:
            self._read_header()
        except StopReading as stop:
            self._log.add(stop.problem)

    @property
    def dialect(self) -> CsvDialect:
        """The delimiter and BOM detected while reading the header (known once built)."""
        return CsvDialect(delimiter=self.delimiter, bom=self._text.bom)

    # -- header ---------------------------------------------------------------------------

    def _read_header(self) -> None:
        lines = self._text.lines()
        first: str | None = None
        sniff = True
        for line in lines:
            content = line.rstrip("\r\n")
            if (
                sniff
                and self._text.records_done == 0
                and len(content) == 5
                and content[:4].casefold() == "sep="
                and content[4] not in '"'
            ):
                # Excel's own delimiter hint; Excel hides that line, so it is not a row.
                self.delimiter = content[4]
                sniff = False
                continue
            if not content.strip():
                self._text.records_done += 1
                continue
            first = line
            break
        if first is None:
            raise StopReading(
                CsvProblem(
                    None,
                    None,
                    "the file is empty: a header row is required"
                    f" ({SERIAL_COLUMN}, {NAME_COLUMN}, {URLS_COLUMN})",
                )
            )
        if sniff:
            self.delimiter = _sniff_delimiter(first)
        self._csv = csv.reader(
            itertools.chain([first], lines),
            delimiter=self.delimiter,
            quotechar='"',
            doublequote=True,
            strict=True,
        )
        row = self._text.records_done + 1
        try:
            header = next(self._csv)
        except csv.Error as exc:
            raise StopReading(CsvProblem(row, None, f"malformed header: {exc}")) from None
        except StopIteration:  # pragma: no cover - a non-blank line always gives a record
            header = []
        self._text.records_done += 1
        self._parse_header(row, header)

    def _parse_header(self, row: int, header: list[str]) -> None:
        names = [h.strip() for h in header]
        while names and not names[-1]:
            names.pop()  # trailing empty columns: an Excel artefact
        found: dict[str, int] = {}
        seen: dict[str, str] = {}
        extra_idx: list[int] = []
        before = self._log.total
        for idx, name in enumerate(names):
            if not name:
                self._log.report(row, None, f"column {idx + 1} has no header name")
                continue
            key = _header_key(name)
            canonical = _ALIASES.get(key)
            dup_key = canonical or _SPACES_RE.sub(" ", name.casefold()).rstrip(".")
            if dup_key in seen:
                self._log.report(
                    row, name, f"duplicate column (same as column '{seen[dup_key]}')", name
                )
                continue
            seen[dup_key] = name
            if canonical is not None:
                found[canonical] = idx
            else:
                extra_idx.append(idx)
        missing = [c for c in _REQUIRED if c not in found]
        if missing:
            # One problem naming every missing column and what the row had instead: the
            # usual cause is a file whose first row is not the header, or other names.
            noun = "column" if len(missing) == 1 else "columns"
            had = ", ".join(quote(n) for n in names[:_HEADERS_SHOWN] if n)
            if len(names) > _HEADERS_SHOWN:
                had += f" and {len(names) - _HEADERS_SHOWN} more"
            self._log.report(
                row,
                None,
                f"missing required {noun} {', '.join(quote(c) for c in missing)};"
                f" the header row has {had or 'no names'}"
                " (the first row must be the header, columns in any order)",
            )
        if self._log.total > before or missing:
            return
        self._width = len(names)
        self._serial_idx = found[SERIAL_COLUMN]
        self._name_idx = found[NAME_COLUMN]
        self._urls_idx = found[URLS_COLUMN]
        self._serial_col = names[self._serial_idx]
        self._name_col = names[self._name_idx]
        self._urls_col = names[self._urls_idx]
        self._extra_idx = tuple(extra_idx)
        self.extra_columns = tuple(names[i] for i in extra_idx)
        self._header_ok = True

    # -- rows -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ProductRow]:
        if self._iterated:
            raise RuntimeError("a CatalogReader can be iterated only once")
        self._iterated = True
        if not self._header_ok:
            raise self._log.rejection()
        try:
            yield from self._rows()
        except StopReading as stop:
            self._log.add(stop.problem)
        if self._log.total:
            raise self._log.rejection()

    def _rows(self) -> Iterator[ProductRow]:
        seen: dict[str, int] = {}
        data_rows = 0
        max_rows = self._limits.max_rows
        text = self._text
        log = self._log
        while True:
            row = text.records_done + 1
            try:
                cells = next(self._csv)
            except StopIteration:
                break
            except csv.Error as exc:
                text.records_done += 1
                log.report(row, None, f"malformed CSV: {exc}")
                continue
            text.records_done += 1
            if not "".join(cells).strip():
                continue  # blank line (every cell empty or whitespace)
            data_rows += 1
            if data_rows > max_rows:
                raise StopReading(CsvProblem(row, None, f"too many rows (limit {max_rows})"))
            product = self._check_row(row, cells, seen)
            if product is not None and not log.total:
                yield product
        if not data_rows:
            self._log.report(None, None, "no data rows")

    def _check_row(self, row: int, cells: list[str], seen: dict[str, int]) -> ProductRow | None:
        # Runs once per row of catalogs 100,000 rows long: the common case is kept to a few
        # C-level string operations (joins stand in for any(c.strip() ...) over cells).
        before = self._log.total
        width = self._width
        if len(cells) != width:
            if len(cells) > width and "".join(cells[width:]).strip():
                last = max(i for i, c in enumerate(cells) if c.strip()) + 1
                self._log.report(row, None, f"row has {last} cells, header has {width}")
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))

        serial = cells[self._serial_idx].strip()
        if not serial:
            self._log.report(row, self._serial_col, "serial number is empty")
        elif serial in seen:
            self._log.report(
                row,
                self._serial_col,
                f"duplicate serial number {quote(serial)} (first in row {seen[serial]})",
                serial,
            )
        else:
            seen[serial] = row

        name = cells[self._name_idx].strip()
        if not name:
            self._log.report(row, self._name_col, "product name is empty")

        urls = self._check_urls(row, cells[self._urls_idx])
        if self._log.total > before:
            return None
        return ProductRow(row, serial, name, urls, tuple([cells[i] for i in self._extra_idx]))

    def _check_urls(self, row: int, cell: str) -> tuple[str, ...]:
        col = self._urls_col
        if "," in cell or "\n" in cell or "\r" in cell:
            raw = [p.strip() for p in _URL_SPLIT_RE.split(cell)]
            raw = [p for p in raw if p]
        else:  # one URL, the common case: no need for the regex split
            single = cell.strip()
            raw = [single] if single else []
        if not raw:
            self._log.report(row, col, "no image URL")
            return ()
        limit = self._limits.max_urls_per_row
        if len(raw) > limit:
            self._log.report(row, col, f"{len(raw)} image URLs, the limit is {limit} per row")
            return ()
        max_length = self._limits.max_url_length
        validate = self._validate_url
        urls: list[str] = []
        for url in raw:
            if ";" in url or "|" in url:
                glued = _GLUED_RE.search(url)
                if glued is not None:
                    self._log.report(
                        row,
                        col,
                        f"two URLs joined by '{glued.group(1)}' in one cell"
                        f" (separate image URLs with a comma): {quote(url)}",
                        url,
                    )
                    continue
            if len(url) > max_length:
                self._log.report(
                    row,
                    col,
                    f"URL longer than {max_length} characters: {quote(url)}",
                    url,
                )
                continue
            try:
                urls.append(validate(url))
            except InvalidInput as exc:
                # The validator's message may quote the URL already; say it once.
                details = exc.details if isinstance(exc.details, dict) else {}
                reason = details.get("reason") or exc.message
                self._log.report(row, col, f"{reason}: {quote(url)}", url)
        return tuple(urls)
