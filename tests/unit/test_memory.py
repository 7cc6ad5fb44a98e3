"""The worker's malloc tuning reaches glibc (this test machine runs glibc)."""

from __future__ import annotations

import subprocess
import sys


def test_tune_malloc_applies_on_glibc() -> None:
    # A fresh interpreter, so the test process's own allocator is left alone.
    code = "from pixelbatch.jobs.memory import tune_malloc; print(tune_malloc())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "True", result.stderr
