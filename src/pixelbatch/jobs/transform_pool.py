"""Run transforms where the GIL does not bind.

Decoding and encoding hold the GIL for much of their time, so two threads of one process
reach ~28 images/s on two cores where two processes reach 43-49. The embedded mode therefore
hands transforms to a process pool; a Celery worker, already one process per core, calls
``transform`` directly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pixelbatch.errors import ImageError
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
        return one_thread.submit(transform, data, options, max_pixels=max_pixels).result()

    return run


TRANSFORM_NICENESS = 10


def _init_child(parent_pid: int) -> None:
    """Yield the CPU to the API and watch the parent.

    The children keep every core busy while a batch runs; at a lower priority the API
    process (status polls, uploads, downloads that feed the pool) is scheduled the moment
    it wakes instead of waiting out a time slice. Pool children must also not outlive a
    parent killed with SIGKILL: poll for re-parenting.
    """
    with contextlib.suppress(OSError):  # not permitted: run at the parent's priority
        os.nice(TRANSFORM_NICENESS)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class TransformPool:
    """A process pool that replaces itself if a child dies (say, killed by the OOM killer),
    failing only the image that was in flight."""

    def __init__(self, workers: int, max_pixels: int) -> None:
        self.workers = workers
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: forking a process that already runs threads can deadlock the child, and
        # spawned children are our own, so they can watch for our death (see below).
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_child,
            initargs=(os.getpid(),),
        )

    def __call__(self, data: bytes, options: TransformOptions) -> TransformResult:
        for _ in range(3):
            executor = self._executor
            try:
                future = executor.submit(transform, data, options, max_pixels=self.max_pixels)
            except BrokenProcessPool:
                # The pool broke before this image reached it: not this image's doing.
                self._replace(executor)
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                self._replace(executor)
                raise ImageError(
                    "the image worker process died while decoding this image",
                    code="worker_crashed",
                ) from None
        raise ImageError("the image worker processes keep dying", code="worker_crashed")

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Swap in a new pool once, however many threads saw the old one break."""
        with self._lock:
            if self._executor is broken:
                self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
