"""intake.processing_options, the one path from asked-for options to TransformOptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelbatch import intake
from pixelbatch.errors import InvalidInput
from pixelbatch.settings import Settings
from pixelbatch.transform import OutputFormat


def test_quality_and_relative_quality_together_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InvalidInput) as caught:
        intake.processing_options(settings, quality=30, relative_quality=0.5)
    assert caught.value.code == "conflicting_options"
    assert "quality" in caught.value.message and "relative_quality" in caught.value.message
    assert intake.processing_options(settings, quality=30).quality == 30


def test_output_format_in_any_case() -> None:
    assert OutputFormat("JPEG") is OutputFormat.JPEG
    assert OutputFormat("Webp") is OutputFormat.WEBP
    with pytest.raises(ValueError):
        OutputFormat("gif")
