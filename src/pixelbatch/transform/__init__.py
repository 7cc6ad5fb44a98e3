"""Pure image transforms: bytes in, bytes out, no database and no network."""

from pixelbatch.transform.options import OutputFormat, TransformOptions
from pixelbatch.transform.pipeline import ALLOWED_FORMATS, TransformResult, transform
from pixelbatch.transform.quality import estimate_jpeg_quality

__all__ = [
    "ALLOWED_FORMATS",
    "OutputFormat",
    "TransformOptions",
    "TransformResult",
    "estimate_jpeg_quality",
    "transform",
]
