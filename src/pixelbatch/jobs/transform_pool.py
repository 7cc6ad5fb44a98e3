"""Run transforms where the GIL does not bind, each with a time limit.

Decoding and encoding hold the GIL for much of their time, so two threads of one process
reach ~28 images/s on two cores where two processes reach 43-49. The embedded mode therefore
hands transforms to a process pool; a Celery worker, already one process per core, calls
``transform`` directly (its chunk's time limit bounds a hanging decode there).

The pool is pebble's: unlike ``ProcessPoolExecutor`` it can stop one task that overran its
time limit by replacing only the child that ran it, and a child that dies (the OOM killer)
fails only the image it held, so neither a hanging nor a crashing decode stalls a batch.
pebble marks its whole pool broken when a child dies while no task runs; that costs no
image here: the pool is replaced and the images that never reached a child are resubmitted.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool
from pebble.pool.process import WORKERS_NAME

from pixelbatch.errors import ImageError
from pixelbatch.jobs.memory import TRIM_BEFORE_BYTES, trim_heap
from pixelbatch.transform import TransformOptions, TransformResult, transform

TransformRunner = Callable[[bytes, TransformOptions], TransformResult]


def inline_runner(max_pixels: int) -> TransformRunner:
    """Transform in this process, one image at a time, always on the same thread.

    A Celery worker downloads a chunk on many threads. Were they all to decode at once, a
    process would hold a dozen 24 MP images (72 MB each), for no gain: the GIL lets one
    thread of a process encode at a time anyway. And one thread, not merely one at a time:
    glibc gives each thread its own malloc arena and keeps what an image freed there, so
    transforms taking turns on 16 download threads grew a worker to 650 MB where a single
    thread stays near 200 MB. Downloads still overlap the transform in progress.
    """
    one_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelbatch-transform")

    def run(data: bytes, options: TransformOptions) -> TransformResult:
        return one_thread.submit(_transform_and_trim, data, options, max_pixels).result()

    return run


def _transform_and_trim(data: bytes, options: TransformOptions, max_pixels: int) -> TransformResult:
    """``transform``, the heap trimmed first when the source is large (``memory.trim_heap``):
    its peak then adds to what the process truly holds, not to garbage left in the heap."""
    if len(data) >= TRIM_BEFORE_BYTES:
        trim_heap()
    return transform(data, options, max_pixels=max_pixels)


TRANSFORM_NICENESS = 10
# Linux's default pipe holds 64 KB; 1 MB (the unprivileged maximum, fs.pipe-max-size) takes
# a whole encoded result in one write.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _widen_pipes() -> None:
    """Enlarge the pipes this child shares with the parent (pebble's task and result
    channels) so a result is written in one go.

    Results travel back through one pipe shared by every child, under a lock. With 64 KB
    a 300 KB JPEG takes five rounds of "child fills the pipe, parent's reader thread wakes
    and drains it", and that thread competes for the API's GIL with the download threads:
    the profile of 640 px images showed the children spending a fifth of their samples in
    ``Connection._send`` and waiting on that lock instead of encoding. The size belongs to
    the pipe, so widening it here widens both ends.
    """
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            fd = int(name)
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


def _init_child(parent_pid: int) -> None:
    """Yield the CPU to the API, widen the result pipes, and watch the parent.

    The children keep every core busy while a batch runs; at a lower priority the API
    process (status polls, uploads, downloads that feed the pool) is scheduled the moment
    it wakes instead of waiting out a time slice. Pool children must also not outlive a
    parent killed with SIGKILL: poll for re-parenting.
    """
    with contextlib.suppress(OSError):  # not permitted: run at the parent's priority
        os.nice(TRANSFORM_NICENESS)
    _widen_pipes()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class TransformPool:
    """Transforms in child processes; ``timeout`` seconds at most per image."""

    def __init__(self, workers: int, max_pixels: int, timeout: float) -> None:
        self.workers = workers
        self.max_pixels = max_pixels
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # spawn: forking a process that already runs threads can deadlock the child, and
        # spawned children are our own, so they can watch for our death (see above).
        return ProcessPool(
            max_workers=self.workers,
            initializer=_init_child,
            initargs=(os.getpid(),),
            context=multiprocessing.get_context("spawn"),
        )

    def __call__(self, data: bytes, options: TransformOptions) -> TransformResult:
        for _ in range(3):
            pool = self._pool
            try:
                future = pool.schedule(
                    _transform_and_trim, (data, options, self.max_pixels), timeout=self.timeout
                )
            except RuntimeError:  # pebble's word for a broken or closed pool
                self._replace(pool)
                continue
            try:
                result: TransformResult = future.result()
            except FutureTimeout:
                raise ImageError(
                    f"decoding and encoding this image took longer than {self.timeout:g} s",
                    code="transform_timeout",
                ) from None
            except ProcessExpired:
                raise ImageError(
                    "the image worker process died while decoding this image",
                    code="worker_crashed",
                ) from None
            except BrokenProcessPool:
                # The pool broke before this image reached a child: not this image's doing.
                self._replace(pool)
                continue
            return result
        raise ImageError("the image worker processes keep dying", code="worker_crashed")

    def _replace(self, broken: ProcessPool) -> None:
        """Swap in a new pool once, however many threads saw the old one break."""
        with self._lock:
            if self._pool is broken:
                self._pool = self._new_pool()
        broken.stop()  # type: ignore[no-untyped-call]

    def child_pids(self) -> list[int]:
        """The live children (for tests and diagnostics)."""
        return [
            p.pid
            for p in multiprocessing.active_children()
            if p.name == WORKERS_NAME and p.pid is not None
        ]

    def shutdown(self) -> None:
        self._pool.close()  # type: ignore[no-untyped-call]
        self._pool.join()
