"""The Celery worker's in-process runner: downloads overlap, transforms take turns."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from pixelbatch.jobs import transform_pool
from pixelbatch.transform import TransformOptions, TransformResult


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_inline_runner_transforms_for_real() -> None:
    result = transform_pool.inline_runner(50_000_000)(_jpeg(), TransformOptions())
    assert (result.width, result.height, result.content_type) == (64, 48, "image/jpeg")


def test_inline_runner_runs_one_transform_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    real = transform_pool.transform
    active = 0
    most = 0
    guard = threading.Lock()

    def counting(data: bytes, options: TransformOptions, *, max_pixels: int) -> TransformResult:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.02)  # long enough for the other threads to arrive
            return real(data, options, max_pixels=max_pixels)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(transform_pool, "transform", counting)
    runner = transform_pool.inline_runner(50_000_000)
    data = _jpeg()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: runner(data, TransformOptions()), range(16)))
    assert len(results) == 16
    assert most == 1
