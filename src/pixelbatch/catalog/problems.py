"""What is wrong with an uploaded CSV, collected the way the client will be shown it.

The reader reports every problem it finds in one go rather than stopping at the first, so a
supplier can fix the file in one round; the log keeps the first few for the response and
counts the rest, so a file with a million bad rows cannot make the rejection itself huge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pixelbatch.errors import InvalidInput

__all__ = ["CsvProblem", "CsvRejected", "ProblemLog", "StopReading", "quote"]

_QUOTE_LIMIT = 200  # characters of an offending value quoted in a message
_MESSAGE_PROBLEMS = 3  # problems spelled out in the exception message itself


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


class StopReading(Exception):
    """Raised inside the reader when going on would be pointless or unsafe."""

    def __init__(self, problem: CsvProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class ProblemLog:
    """Every problem counted, the first ``keep`` kept; shared by the line splitter and the
    row validator so the rejection lists them in file order whichever found them."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.problems: list[CsvProblem] = []
        self.total = 0

    def add(self, problem: CsvProblem) -> None:
        self.total += 1
        if len(self.problems) < self.keep:
            self.problems.append(problem)

    def report(
        self, row: int | None, column: str | None, message: str, value: str | None = None
    ) -> None:
        if value is not None and len(value) > _QUOTE_LIMIT:
            value = value[:_QUOTE_LIMIT] + "…"
        self.add(CsvProblem(row, column, message, value))

    def rejection(self) -> CsvRejected:
        return CsvRejected(self.problems, self.total)


def quote(value: str) -> str:
    """Quote a user value in a message without letting a huge one flood it."""
    if len(value) <= _QUOTE_LIMIT:
        return f"'{value}'"
    return f"'{value[:_QUOTE_LIMIT]}…' (truncated, {len(value)} characters)"
