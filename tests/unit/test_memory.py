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


_FRAGMENTED_HEAP = """
import gc
from pixelbatch.jobs.memory import trim_heap

def rss_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

big = bytearray(16 << 20)  # mmapped; freeing it raises glibc's mmap threshold to 16 MB
del big
chunks = [bytearray(1 << 20) for _ in range(150)]  # so these come from the heap
keep = chunks[-1]  # a live chunk on top: the heap cannot simply shrink
del chunks
gc.collect()
before = rss_mb()
print(trim_heap(), before - rss_mb())
"""


def test_trim_heap_gives_freed_heap_pages_back() -> None:
    """What a large image leaves free in the heap stops counting once trimmed."""
    result = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    trimmed, released_mb = result.stdout.split()
    assert trimmed == "True"
    assert float(released_mb) > 100, result.stdout
