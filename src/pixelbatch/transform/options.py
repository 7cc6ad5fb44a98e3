"""What the caller may ask of a transform; validated once, frozen, safe to pickle."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class OutputFormat(StrEnum):
    """Requested output encoding; ``KEEP`` means "same family as the source"."""

    KEEP = "keep"
    JPEG = "jpeg"
    WEBP = "webp"
    AVIF = "avif"
    PNG = "png"

    @classmethod
    def _missing_(cls, value: object) -> OutputFormat | None:
        """Any case names a format: ``JPEG`` and ``Webp`` are ``jpeg`` and ``webp``."""
        if isinstance(value, str):
            for member in cls:
                if member.value == value.lower():
                    return member
        return None


class TransformOptions(BaseModel):
    """Per-batch image settings; immutable so one instance can be shared across workers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Absolute quality; when set it overrides ``relative_quality``.
    quality: int | None = Field(None, ge=1, le=100)
    # Fraction of the source's own JPEG quality (a q90 source at 0.5 is written at q45).
    relative_quality: float = Field(0.5, gt=0, le=1)
    output_format: OutputFormat = OutputFormat.KEEP
    # Bounding box; images are only ever shrunk to fit, never upscaled.
    max_width: int | None = Field(None, ge=1, le=20000)
    max_height: int | None = Field(None, ge=1, le=20000)
    keep_metadata: bool = False
