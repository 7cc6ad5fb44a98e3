"""Bytes of an uploaded CSV to the physical lines ``csv`` reads, with rows and bytes counted.

Decoding is done here rather than by ``io.TextIOWrapper`` so that the size cap is enforced
on bytes before they are decoded, an invalid UTF-8 sequence is reported with its byte
offset and the spreadsheet row it sits in (rather than aborting the read), and a file with
no line endings cannot make one line the size of the whole upload.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections import deque
from collections.abc import Iterator
from typing import IO

from pixelbatch.catalog.problems import CsvProblem, ProblemLog, StopReading

__all__ = ["CsvLines"]

_CHUNK_BYTES = 64 * 1024
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")
# Said once, with the file's first encoding problem. Windows-1252 (what Excel's plain
# "CSV (Comma delimited)" writes) is refused rather than guessed: most of its byte strings
# are also valid in other encodings, and a wrong guess would corrupt names silently.
_NOT_UTF8 = (
    ' (it is probably Windows-1252, what Excel\'s "CSV (Comma delimited)" writes: in Excel'
    ' use File > Save As > "CSV UTF-8 (Comma delimited) (*.csv)", in LibreOffice choose the'
    ' character set "Unicode (UTF-8)", then upload it again)'
)


class CsvLines:
    """Physical lines of a binary stream, and the spreadsheet row they belong to.

    ``records_done`` counts the spreadsheet rows fully read; the consumer (which alone
    knows where a quoted cell spanning several lines ends) advances it once per record, and
    problems found in a line are reported against row ``records_done + 1``.
    """

    def __init__(
        self, source: IO[bytes], *, max_bytes: int, max_line_chars: int, log: ProblemLog
    ) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._max_line_chars = max_line_chars
        self._log = log
        self.bytes_read = 0
        self.records_done = 0
        self.bom = False  # the file started with a UTF-8 byte order mark
        self._encoding_row = 0  # last row that got an encoding problem

    def _chunks(self) -> Iterator[bytes]:
        """Raw bytes, never reading more than one byte past the size limit."""
        cap = self._max_bytes
        while True:
            data = self._source.read(min(_CHUNK_BYTES, cap + 1 - self.bytes_read))
            if not data:
                return
            self.bytes_read += len(data)
            if self.bytes_read > cap:
                raise StopReading(
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
                    self.bom = True
                    out = out[1:]
                    errors = [(i - 1, b) for i, b in errors]
            if out or errors:
                yield out, errors

    def lines(self) -> Iterator[str]:
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
                    raise StopReading(
                        CsvProblem(
                            self.records_done + 1,
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
                    row = self.records_done + 1
                    if row != self._encoding_row:  # one per row: a Latin-1 file has many
                        first_one = not self._encoding_row
                        self._encoding_row = row
                        message = f"invalid UTF-8 at byte {byte}; save the file as UTF-8"
                        self._log.report(row, None, message + (_NOT_UTF8 if first_one else ""))
                if "\x00" in line:
                    self._log.report(
                        self.records_done + 1, None, "binary data (NUL byte) in a text file"
                    )
                    line = line.replace("\x00", "")
                yield line
            pending_errors = deque((i - cut, b) for i, b in pending_errors)
