"""freeze_startup_objects: start-up garbage is freed first, what lives is frozen."""

from __future__ import annotations

import gc
import weakref

from pixelbatch.heap import freeze_startup_objects


class _Node:
    other: object


def test_garbage_cycles_are_collected_before_the_heap_is_frozen() -> None:
    garbage = _Node()
    garbage.other = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_startup_objects()
        assert gone() is None  # frozen instead, it would never have been freed
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
