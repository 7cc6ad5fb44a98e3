"""The Celery worker's in-process runner: downloads overlap, transforms take turns."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
from PIL import Image

from pixelbatch.errors import ImageError
from pixelbatch.jobs import memory, transform_pool
from pixelbatch.transform import TransformOptions, TransformResult, transform


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_inline_runner_transforms_for_real() -> None:
    result = transform_pool.inline_runner(50_000_000)(_jpeg(), TransformOptions())
    assert (result.width, result.height, result.content_type) == (64, 48, "image/jpeg")


def test_the_heap_is_trimmed_before_a_large_source_only(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[bool] = []
    real_trim = memory.trim_heap

    def counted_trim() -> bool:
        trims.append(real_trim())
        return trims[-1]

    monkeypatch.setattr("pixelbatch.jobs.transform_pool.trim_heap", counted_trim)
    noise = Image.frombytes("RGB", (1200, 1000), os.urandom(1200 * 1000 * 3))
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=95)
    large = buf.getvalue()
    assert len(large) >= memory.TRIM_BEFORE_BYTES
    run = transform_pool.inline_runner(50_000_000)
    run(_jpeg(), TransformOptions())
    assert trims == []
    assert run(large, TransformOptions()).width == 1200
    assert trims == [True]


def test_inline_runner_runs_one_transform_at_a_time_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = transform  # what transform_pool calls, before the patch below
    active = 0
    most = 0
    threads: set[int] = set()
    guard = threading.Lock()

    def counting(data: bytes, options: TransformOptions, *, max_pixels: int) -> TransformResult:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
            threads.add(threading.get_ident())
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
    # Always the same thread: one malloc arena, so freed image memory is reused.
    assert len(threads) == 1 and threading.get_ident() not in threads


def _slow_jpeg() -> bytes:
    """About a second of decode + encode: long enough to kill the child mid-image."""
    im = Image.effect_noise((7000, 5000), 64).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _children(pool: transform_pool.TransformPool) -> list[int]:
    return pool.child_pids()


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_pool_survives_a_child_killed_mid_image_and_fails_only_that_image() -> None:
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        small = _jpeg()
        assert pool(small, TransformOptions()).width == 64  # spawns the child
        (child,) = _children(pool)
        slow = _slow_jpeg()
        idle_cpu = _cpu_ticks(child)
        with ThreadPoolExecutor(1) as caller:
            in_flight = caller.submit(pool, slow, TransformOptions())
            # Kill only once the child has decoded for a while (a quarter second of its CPU
            # time): by then the pool has surely seen it take the image, while a child
            # killed before that looks idle to the pool, which then retries the image.
            deadline = time.monotonic() + 20
            while _cpu_ticks(child) < idle_cpu + 25 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(child, signal.SIGKILL)  # as the OOM killer would
            with pytest.raises(ImageError) as failed:
                in_flight.result(timeout=30)
        assert failed.value.code == "worker_crashed"
        # The next image gets a fresh child and succeeds.
        assert pool(small, TransformOptions()).width == 64
        assert _children(pool) and child not in _children(pool)
    finally:
        pool.shutdown()


def test_a_child_that_died_while_idle_costs_no_image() -> None:
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        small = _jpeg()
        pool(small, TransformOptions())
        (child,) = _children(pool)
        os.kill(child, signal.SIGKILL)
        time.sleep(0.5)  # the executor notices and marks itself broken
        assert pool(small, TransformOptions()).width == 64
    finally:
        pool.shutdown()


def test_pool_children_run_below_the_api_priority() -> None:
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        pool(_jpeg(), TransformOptions())
        (child,) = _children(pool)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        expected = min(19, mine + transform_pool.TRANSFORM_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, child) == expected
    finally:
        pool.shutdown()


def test_an_image_over_the_time_limit_fails_alone_and_the_pool_goes_on() -> None:
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=0.3)
    try:
        small = _jpeg()
        assert pool(small, TransformOptions()).width == 64  # spawns the child
        (child,) = _children(pool)
        slow = _slow_jpeg()  # made before the clock starts: on a loaded machine it takes a while
        started = time.monotonic()
        with pytest.raises(ImageError) as failed:
            pool(slow, TransformOptions())
        assert failed.value.code == "transform_timeout"
        assert time.monotonic() - started < 5  # stopped, not waited for
        # The child that ran it was replaced; the next image gets a fresh one.
        assert pool(small, TransformOptions()).width == 64
        assert child not in _children(pool)
    finally:
        pool.shutdown()


F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _pipe_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.add(target)
    return out


def test_the_pipes_to_the_children_hold_a_whole_result() -> None:
    """A result is written back in one go, not 64 KB at a time while the parent's reader
    thread waits for the GIL (the fd table of a real child is read from /proc)."""
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        pool(_jpeg(), TransformOptions())
        (child,) = _children(pool)
        shared = _pipe_inodes(child) & _pipe_inodes(os.getpid())
        assert shared, "no pipe shared with the child"
        sizes = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") in shared:
                    sizes.append(fcntl.fcntl(int(fd), F_GETPIPE_SZ))
            except OSError:
                continue
        assert sizes and min(sizes) >= transform_pool.PIPE_BYTES, sizes
    finally:
        pool.shutdown()


def _jpeg_of_width(width: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, 32), (width % 256, 90, 30)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_each_caller_gets_its_own_result_from_children_holding_two_tasks() -> None:
    """Callers read their answers off the children's pipes themselves, two tasks queued per
    child: a result read by the wrong thread would show as a width another caller asked for."""
    pool = transform_pool.TransformPool(2, 50_000_000, timeout=60)
    try:
        widths = [16 + i for i in range(48)]
        with ThreadPoolExecutor(4) as callers:  # two per child, as the embedded gate allows
            results = list(
                callers.map(lambda w: pool(_jpeg_of_width(w), TransformOptions()), widths)
            )
        assert [r.width for r in results] == widths
        assert len(_children(pool)) == 2
    finally:
        pool.shutdown()


def test_the_image_queued_behind_one_over_its_time_limit_is_not_failed() -> None:
    """The second task a child holds never ran when the child is stopped for the first: it
    goes to a fresh child and succeeds."""
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=0.5)
    try:
        small = _jpeg()
        pool(small, TransformOptions())
        slow = _slow_jpeg()
        with ThreadPoolExecutor(2) as callers:
            first = callers.submit(pool, slow, TransformOptions())
            time.sleep(0.1)  # sent second, so it waits behind the slow one in the same child
            second = callers.submit(pool, small, TransformOptions())
            with pytest.raises(ImageError) as failed:
                first.result(timeout=30)
            assert failed.value.code == "transform_timeout"
            assert second.result(timeout=30).width == 64
    finally:
        pool.shutdown()


def test_an_error_raised_in_the_child_reaches_the_caller_with_its_code() -> None:
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        with pytest.raises(ImageError) as failed:
            pool(b"not an image at all", TransformOptions())
        assert failed.value.code != "worker_crashed"
        assert pool(_jpeg(), TransformOptions()).width == 64  # the same child goes on
    finally:
        pool.shutdown()


def test_shutdown_ends_the_children() -> None:
    pool = transform_pool.TransformPool(2, 50_000_000, timeout=60)
    with ThreadPoolExecutor(2) as callers:
        list(callers.map(lambda _: pool(_jpeg(), TransformOptions()), range(4)))
    children = _children(pool)
    assert len(children) == 2
    pool.shutdown()
    for pid in children:  # joined, so reaped: gone from /proc
        assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(RuntimeError):
        pool(_jpeg(), TransformOptions())


def test_a_terminals_ctrl_c_does_not_kill_a_child() -> None:
    """Ctrl-C reaches the whole process group; the parent ends its children itself."""
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        pool(_jpeg(), TransformOptions())
        (child,) = _children(pool)
        os.kill(child, signal.SIGINT)
        time.sleep(0.3)
        assert pool(_jpeg(), TransformOptions()).width == 64
        assert _children(pool) == [child]
    finally:
        pool.shutdown()


def _noise_jpeg(width: int, height: int, seed: int) -> bytes:
    """Noise compresses badly: source and result both outgrow the 1 MB pipes."""
    im = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95 - seed % 3)
    return buf.getvalue()


def test_large_tasks_and_results_on_a_busy_child_do_not_deadlock() -> None:
    """A caller writing a large image to a child that is itself blocked writing a large
    result must not stop the result's reader from taking its turn: the send blocks until
    the child reads, and the child reads only after its result is read. Several callers on
    one child, each source and result larger than a pipe holds, repeated."""
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=60)
    try:
        images = [_noise_jpeg(1400, 1000, i) for i in range(3)]
        assert min(len(i) for i in images) > transform_pool.PIPE_BYTES
        callers = ThreadPoolExecutor(6)
        try:
            futures = [callers.submit(pool, images[i % 3], TransformOptions()) for i in range(90)]
            results = [f.result(timeout=60) for f in futures]
        except FutureTimeout:
            for pid in _children(pool):  # deadlocked: free the stuck threads, then fail
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            callers.shutdown()
        assert all(r.width == 1400 for r in results)
    finally:
        pool.shutdown()


def test_a_fresh_childs_start_up_does_not_count_against_the_time_limit() -> None:
    """Spawning a child and importing Pillow takes far longer than 0.1 s; a small image
    does not. The limit is the image's, from the moment the child is ready."""
    pool = transform_pool.TransformPool(1, 50_000_000, timeout=0.1)
    try:
        assert pool(_jpeg(), TransformOptions()).width == 64
    finally:
        pool.shutdown()
