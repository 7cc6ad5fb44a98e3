"""The catalog CSV: streaming parse and validation of the input, writing of the output."""

from pixelbatch.catalog.dialect import CsvDialect
from pixelbatch.catalog.problems import CsvProblem, CsvRejected
from pixelbatch.catalog.reader import (
    NAME_COLUMN,
    SERIAL_COLUMN,
    URLS_COLUMN,
    CatalogReader,
    CsvLimits,
    ProductRow,
)
from pixelbatch.catalog.writer import (
    ERRORS_COLUMN,
    NOTES_COLUMN,
    OUTPUT_URLS_COLUMN,
    STATUS_COLUMN,
    OutputRow,
    format_image_error,
    join_urls,
    neutralise_cell,
    output_header,
    write_output_csv,
)

__all__ = [
    "ERRORS_COLUMN",
    "NAME_COLUMN",
    "NOTES_COLUMN",
    "OUTPUT_URLS_COLUMN",
    "SERIAL_COLUMN",
    "STATUS_COLUMN",
    "URLS_COLUMN",
    "CatalogReader",
    "CsvDialect",
    "CsvLimits",
    "CsvProblem",
    "CsvRejected",
    "OutputRow",
    "ProductRow",
    "format_image_error",
    "join_urls",
    "neutralise_cell",
    "output_header",
    "write_output_csv",
]
