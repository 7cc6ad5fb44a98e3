"""The input CSV's dialect (delimiter, BOM), kept so the output CSV is written the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CsvDialect"]


@dataclass(frozen=True)
class CsvDialect:
    """What the reader detected and the writer repeats: a ``;``-separated file with a
    UTF-8 BOM (what Excel writes in many locales) gets a ``;``-separated output with a BOM,
    so the spreadsheet that made the input opens the output the same way."""

    delimiter: str = ","
    bom: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "bom": self.bom}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> CsvDialect:
        """The stored dialect; a batch stored before it was recorded (None) gets the
        defaults, and a delimiter csv cannot use falls back to a comma."""
        if not value:
            return cls()
        delimiter = value.get("delimiter", ",")
        valid = isinstance(delimiter, str) and len(delimiter) == 1 and delimiter not in '"\r\n'
        return cls(
            delimiter=delimiter if valid else ",",
            bom=bool(value.get("bom", False)),
        )
