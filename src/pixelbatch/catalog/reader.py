"""Streaming parse and validation of an uploaded catalog CSV.

The reader yields valid rows while it streams so the caller can insert them into an open
transaction, and raises :class:`CsvRejected` with every problem it found (row and column,
as a spreadsheet shows them) once the file has been read. It never holds the file in memory:
the only per-row state is the map of serial numbers seen, needed to report duplicates.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any

from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings

__all__ = [
    "NAME_COLUMN",
    "SERIAL_COLUMN",
    "URLS_COLUMN",
    "CatalogReader",
    "CsvLimits",
    "CsvProblem",
    "CsvRejected",
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

_CHUNK_BYTES = 64 * 1024
_MIN_LINE_CHARS = 1024 * 1024
_QUOTE_LIMIT = 200  # characters of an offending value quoted in a message
_MESSAGE_PROBLEMS = 3  # problems spelled out in the exception message itself
_DELIMITERS = (",", ";", "\t")
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")
_URL_SPLIT_RE = re.compile(r"[,\r\n]+")
_HEADER_JUNK_RE = re.compile(r"[\s._\-]+")
_SPACES_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class CsvLimits:
    """Limits that keep one upload from exhausting memory, the database or the workers."""

    max_bytes: int
    max_rows: int
    max_urls_per_row: int
    max_url_length: int
    max_reported_errors: int

    @classmethod
    def from_settings(cls, s: Settings) -> CsvLimits:
        return cls(
            max_bytes=s.max_upload_bytes,
            max_rows=s.max_rows,
            max_urls_per_row=s.max_urls_per_row,
            max_url_length=s.max_url_length,
            max_reported_errors=s.max_reported_errors,
        )


@dataclass(frozen=True)
class CsvProblem:
    """One thing wrong with the file, located the way a spreadsheet user would look for it.

    ``row`` is the 1-based spreadsheet row (the header is row 1; blank lines count, a quoted
    cell spanning several lines is one row); ``column`` is the header name as written in the
    file (the canonical name for a missing column). Either is None when it does not apply.
    """

    row: int | None
    column: str | None
    message: str
    value: str | None = None

    def describe(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class CsvRejected(InvalidInput):
    """The whole file is refused; ``problems`` lists the first ones, ``total`` counts all."""

    code = "invalid_csv"

    def __init__(self, problems: list[CsvProblem], total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else max(total, len(self.problems))
        shown = "; ".join(p.describe() for p in self.problems[:_MESSAGE_PROBLEMS])
        more = self.total - min(len(self.problems), _MESSAGE_PROBLEMS)
        if more > 0:
            shown += f"; and {more} more"
        noun = "problem" if self.total == 1 else "problems"
        super().__init__(
            f"CSV rejected: {self.total} {noun} ({shown})",
            details={
                "problems": [asdict(p) for p in self.problems],
                "total": self.total,
                "truncated": self.total > len(self.problems),
            },
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.total))


@dataclass(frozen=True)
class ProductRow:
    """One valid product; ``urls`` are normalised by the validator, ``extra`` follows
    ``CatalogReader.extra_columns``."""

    row: int
    serial: str
    name: str
    urls: tuple[str, ...]
    extra: tuple[str, ...]


class _StopReading(Exception):
    """Raised inside the reader when going on would be pointless or unsafe."""

    def __init__(self, problem: CsvProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _header_key(name: str) -> str:
    return _HEADER_JUNK_RE.sub("", name.casefold())


def _quote(value: str) -> str:
    """Quote a user value in a message without letting a huge one flood it."""
    if len(value) <= _QUOTE_LIMIT:
        return f"'{value}'"
    return f"'{value[:_QUOTE_LIMIT]}…' (truncated, {len(value)} characters)"


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
        self._source = source
        self._limits = limits
        self._validate_url = url_validator
        self._problems: list[CsvProblem] = []
        self._total = 0
        self._bytes_read = 0
        self._records_done = 0  # spreadsheet rows fully read so far
        self._iterated = False
        self._encoding_row = 0  # last row that got an encoding problem
        self._max_line_chars = max(
            _MIN_LINE_CHARS, 2 * limits.max_urls_per_row * (limits.max_url_length + 2)
        )
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
        except _StopReading as stop:
            self._add(stop.problem)

    # -- problems -------------------------------------------------------------------------

    def _add(self, problem: CsvProblem) -> None:
        self._total += 1
        if len(self._problems) < self._limits.max_reported_errors:
            self._problems.append(problem)

    def _problem(
        self, row: int | None, column: str | None, message: str, value: str | None = None
    ) -> None:
        if value is not None and len(value) > _QUOTE_LIMIT:
            value = value[:_QUOTE_LIMIT] + "…"
        self._add(CsvProblem(row, column, message, value))

    def _rejection(self) -> CsvRejected:
        return CsvRejected(self._problems, self._total)

    # -- bytes -> lines -------------------------------------------------------------------

    def _chunks(self) -> Iterator[bytes]:
        """Raw bytes, never reading more than one byte past the size limit."""
        cap = self._limits.max_bytes
        while True:
            data = self._source.read(min(_CHUNK_BYTES, cap + 1 - self._bytes_read))
            if not data:
                return
            self._bytes_read += len(data)
            if self._bytes_read > cap:
                raise _StopReading(
                    CsvProblem(None, None, f"file is larger than the limit of {cap} bytes")
                )
            yield data

    def _decoded(self) -> Iterator[tuple[str, list[tuple[int, int]]]]:
        """UTF-8 text per chunk plus (char index, byte offset) of each invalid sequence.

        Invalid bytes become U+FFFD so parsing goes on and later problems are still found;
        the positions let the line splitter name the row where each one sits.
        """
        carry = b""
        offset = 0  # file offset of carry[0]
        first = True
        for data, final in itertools.chain(
            ((d, False) for d in self._chunks()), iter([(b"", True)])
        ):
            buf = memoryview(carry + data)
            pieces: list[str] = []
            errors: list[tuple[int, int]] = []
            length = 0
            pos = 0
            while True:
                try:
                    text, used = codecs.utf_8_decode(buf[pos:], "strict", final)
                except UnicodeDecodeError as exc:
                    good = codecs.utf_8_decode(buf[pos : pos + exc.start], "strict", True)[0]
                    pieces += (good, "\ufffd")
                    length += len(good)
                    errors.append((length, offset + pos + exc.start))
                    length += 1
                    pos += exc.end
                    continue
                pieces.append(text)
                pos += used
                break
            carry = bytes(buf[pos:])
            offset += pos
            out = "".join(pieces)
            if first and out:
                first = False
                if out[0] == "\ufeff":
                    out = out[1:]
                    errors = [(i - 1, b) for i, b in errors]
            if out or errors:
                yield out, errors

    def _lines(self) -> Iterator[str]:
        """Physical lines with their endings, as ``open(newline="")`` would give csv.

        Only ``\\r\\n``, ``\\r`` and ``\\n`` end a line (unlike ``str.splitlines``), so
        other separators inside cells survive. Encoding and NUL problems are reported as
        each line is handed to csv, when the row it belongs to is known.
        """
        pending = ""
        pending_errors: deque[tuple[int, int]] = deque()
        for item in itertools.chain(self._decoded(), [None]):
            final = item is None
            if item is not None:
                text, errors = item
                pending_errors.extend((i + len(pending), b) for i, b in errors)
                pending += text
            end = len(pending)
            if final:
                cut = end
            else:
                if pending.endswith("\r"):
                    end -= 1  # a \r\n pair may straddle two chunks
                cut = max(pending.rfind("\n", 0, end), pending.rfind("\r", 0, end)) + 1
            if cut == 0:
                if len(pending) > self._max_line_chars:
                    raise _StopReading(
                        CsvProblem(
                            self._records_done + 1,
                            None,
                            f"line is longer than {self._max_line_chars} characters"
                            " (is this a CSV file?)",
                        )
                    )
                continue
            block, pending = pending[:cut], pending[cut:]
            lines = _LINE_RE.findall(block)
            used = sum(map(len, lines))
            if used < len(block):  # the last line of the file has no line ending
                lines.append(block[used:])
            start = 0
            for line in lines:
                start += len(line)
                while pending_errors and pending_errors[0][0] < start:
                    byte = pending_errors.popleft()[1]
                    row = self._records_done + 1
                    if row != self._encoding_row:  # one per row: a Latin-1 file has many
                        self._encoding_row = row
                        self._problem(
                            row,
                            None,
                            f"invalid UTF-8 at byte {byte} (row {row}); save the file as UTF-8",
                        )
                if "\x00" in line:
                    self._problem(
                        self._records_done + 1, None, "binary data (NUL byte) in a text file"
                    )
                    line = line.replace("\x00", "")
                yield line
            pending_errors = deque((i - cut, b) for i, b in pending_errors)

    # -- header ---------------------------------------------------------------------------

    def _read_header(self) -> None:
        lines = self._lines()
        first: str | None = None
        sniff = True
        for line in lines:
            content = line.rstrip("\r\n")
            if (
                sniff
                and self._records_done == 0
                and len(content) == 5
                and content[:4].casefold() == "sep="
                and content[4] not in '"'
            ):
                # Excel's own delimiter hint; Excel hides that line, so it is not a row.
                self.delimiter = content[4]
                sniff = False
                continue
            if not content.strip():
                self._records_done += 1
                continue
            first = line
            break
        if first is None:
            raise _StopReading(
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
        row = self._records_done + 1
        try:
            header = next(self._csv)
        except csv.Error as exc:
            raise _StopReading(CsvProblem(row, None, f"malformed header: {exc}")) from None
        except StopIteration:  # pragma: no cover - a non-blank line always gives a record
            header = []
        self._records_done += 1
        self._parse_header(row, header)

    def _parse_header(self, row: int, header: list[str]) -> None:
        names = [h.strip() for h in header]
        while names and not names[-1]:
            names.pop()  # trailing empty columns: an Excel artefact
        found: dict[str, int] = {}
        seen: dict[str, str] = {}
        extra_idx: list[int] = []
        before = self._total
        for idx, name in enumerate(names):
            if not name:
                self._problem(row, None, f"column {idx + 1} has no header name")
                continue
            key = _header_key(name)
            canonical = _ALIASES.get(key)
            dup_key = canonical or _SPACES_RE.sub(" ", name.casefold()).rstrip(".")
            if dup_key in seen:
                self._problem(
                    row, name, f"duplicate column (same as column '{seen[dup_key]}')", name
                )
                continue
            seen[dup_key] = name
            if canonical is not None:
                found[canonical] = idx
            else:
                extra_idx.append(idx)
        missing = [c for c in _REQUIRED if c not in found]
        for col in missing:
            self._problem(
                row,
                col,
                f"missing required column '{col}' (the first row must be the header:"
                f" {', '.join(_REQUIRED)})",
            )
        if self._total > before or missing:
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
            raise self._rejection()
        try:
            yield from self._rows()
        except _StopReading as stop:
            self._add(stop.problem)
        if self._total:
            raise self._rejection()

    def _rows(self) -> Iterator[ProductRow]:
        seen: dict[str, int] = {}
        data_rows = 0
        max_rows = self._limits.max_rows
        while True:
            row = self._records_done + 1
            try:
                cells = next(self._csv)
            except StopIteration:
                break
            except csv.Error as exc:
                self._records_done += 1
                self._problem(row, None, f"malformed CSV: {exc}")
                continue
            self._records_done += 1
            if not "".join(cells).strip():
                continue  # blank line (every cell empty or whitespace)
            data_rows += 1
            if data_rows > max_rows:
                raise _StopReading(CsvProblem(row, None, f"too many rows (limit {max_rows})"))
            product = self._check_row(row, cells, seen)
            if product is not None and not self._total:
                yield product
        if not data_rows:
            self._problem(None, None, "no data rows")

    def _check_row(self, row: int, cells: list[str], seen: dict[str, int]) -> ProductRow | None:
        # Runs once per row of catalogs 100,000 rows long: the common case is kept to a few
        # C-level string operations (joins stand in for any(c.strip() ...) over cells).
        before = self._total
        width = self._width
        if len(cells) != width:
            if len(cells) > width and "".join(cells[width:]).strip():
                last = max(i for i, c in enumerate(cells) if c.strip()) + 1
                self._problem(row, None, f"row has {last} cells, header has {width}")
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))

        serial = cells[self._serial_idx].strip()
        if not serial:
            self._problem(row, self._serial_col, "serial number is empty")
        elif serial in seen:
            self._problem(
                row,
                self._serial_col,
                f"duplicate serial number {_quote(serial)} (first in row {seen[serial]})",
                serial,
            )
        else:
            seen[serial] = row

        name = cells[self._name_idx].strip()
        if not name:
            self._problem(row, self._name_col, "product name is empty")

        urls = self._check_urls(row, cells[self._urls_idx])
        if self._total > before:
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
            self._problem(row, col, "no image URL")
            return ()
        limit = self._limits.max_urls_per_row
        if len(raw) > limit:
            self._problem(row, col, f"{len(raw)} image URLs, the limit is {limit} per row")
            return ()
        max_length = self._limits.max_url_length
        validate = self._validate_url
        urls: list[str] = []
        for url in raw:
            if len(url) > max_length:
                self._problem(
                    row,
                    col,
                    f"URL longer than {max_length} characters: {_quote(url)}",
                    url,
                )
                continue
            try:
                urls.append(validate(url))
            except InvalidInput as exc:
                self._problem(row, col, f"{exc.message}: {_quote(url)}", url)
        return tuple(urls)
