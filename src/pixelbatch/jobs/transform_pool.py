"""Run transforms where the GIL does not bind, each with a time limit.

Decoding and encoding hold the GIL for much of their time, so two threads of one process
reach ~28 images/s on two cores where two processes reach 43-49. The embedded mode therefore
hands transforms to child processes (:class:`TransformPool`); a Celery worker, already one
process per core, calls ``transform`` directly (its chunk's time limit bounds a hanging
decode there).
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

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
    """Enlarge the pipes this child shares with the parent so a task and a result are
    written in one go.

    With 64 KB a 300 KB JPEG takes five rounds of "child fills the pipe, the parent's
    reading thread wakes and drains it", and that thread competes for the API's GIL with the
    download threads: the profile of 640 px images showed the children spending a fifth of
    their samples in ``Connection._send`` instead of encoding. The size belongs to the pipe,
    so widening it here widens both ends.
    """
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            fd = int(name)
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


def _init_child(parent_pid: int) -> None:
    """Ignore Ctrl-C, yield the CPU to the API, widen the result pipes, watch the parent.

    A terminal's Ctrl-C reaches the whole process group: the parent stops gracefully and
    ends its children itself, so a child must not die under an image on it.

    The children keep every core busy while a batch runs; at a lower priority the API
    process (status polls, uploads, downloads that feed the pool) is scheduled the moment
    it wakes instead of waiting out a time slice. Pool children must also not outlive a
    parent killed with SIGKILL: poll for re-parenting.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # not permitted: run at the parent's priority
        os.nice(TRANSFORM_NICENESS)
    _widen_pipes()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve(tasks: Connection, results: Connection, parent_pid: int) -> None:
    """A child's life: transform each task from ``tasks``, answer on ``results``, in order,
    until the parent closes ``tasks``. An exception is the answer, not the child's end."""
    _init_child(parent_pid)
    results.send(_READY)
    while True:
        try:
            data, options, max_pixels = tasks.recv()
        except EOFError:
            return
        answer: tuple[bool, object]
        try:
            answer = (True, _transform_and_trim(data, options, max_pixels))
        except Exception as exc:  # the parent raises it for this image
            answer = (False, exc)
        try:
            results.send(answer)
        except Exception as exc:  # an exception that does not pickle, say
            results.send((False, ImageError(f"transform failed: {exc}", code="transform_failed")))


# A child's first message: it has started (imports done), so an image's time limit can
# start. Bounded on its own, for a child that never gets that far.
_READY = "ready"
STARTUP_TIMEOUT = 60.0


class _Resubmit(Exception):
    """The task never ran: its child died or was stopped for the task ahead of it."""


@dataclass(eq=False)
class _Turn:
    """One task sent to a child, waiting for its result to be the next one on the pipe."""

    ready: threading.Event = field(default_factory=threading.Event)
    resubmit: bool = False


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    tasks: Connection  # parent's end, write
    results: Connection  # parent's end, read
    # Held while a task is written, so tasks reach the pipe in the order of ``turns``. A
    # write blocks until the child reads, and the child reads only once its result before
    # has been read: so this is never the lock a reader needs to pass its turn on.
    sending: threading.Lock = field(default_factory=threading.Lock)
    # Guards ``turns`` and ``retired``; held only for moments, never over pipe I/O.
    state: threading.Lock = field(default_factory=threading.Lock)
    turns: deque[_Turn] = field(default_factory=deque)  # in the order their tasks were sent
    retired: bool = False
    started: bool = False  # its _READY was read (by a reader, who alone reads the pipe)


class TransformPool:
    """Transforms in ``workers`` child processes; ``timeout`` seconds at most per image.

    The thread that needs a transform talks to a child's pipes itself: it sends the task,
    waits until the results ahead of its own have been read, and reads its own. No pool
    thread sits between them: pebble's two (a scheduler and a result reader) plus the
    future handing the result over took ~15% of the API process's GIL on 640 px images.
    A child takes a second task while it works on one (the caller's ``PriorityGate`` allows
    two per child), so it never idles while a result travels back.

    A task over its time limit stops its child (killed and replaced) and fails that image
    alone; a child that dies under a task (the OOM killer) fails that image alone; the task
    queued behind either, and any sent to a child that had died idle, goes to a fresh
    child: it was not that image's doing.
    """

    def __init__(self, workers: int, max_pixels: int, timeout: float) -> None:
        self.workers = workers
        self.max_pixels = max_pixels
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._children: list[_Child | None] = [None] * workers  # spawned on first use
        self._closed = False

    def __call__(self, data: bytes, options: TransformOptions) -> TransformResult:
        for _ in range(3):
            child = self._pick()
            turn = _Turn()
            try:
                self._send(child, turn, (data, options, self.max_pixels))
                turn.ready.wait()
                if turn.resubmit:
                    continue
                return self._receive(child, turn)
            except _Resubmit:
                continue
        raise ImageError("the image worker processes keep dying", code="worker_crashed")

    def _pick(self) -> _Child:
        """The child with the fewest tasks in hand, spawned if its place is empty."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the transform pool is shut down")
            index = min(
                range(self.workers),
                key=lambda i: len(c.turns) if (c := self._children[i]) is not None else 0,
            )
            child = self._children[index]
            if child is None or child.retired:
                child = self._children[index] = self._spawn()
            return child

    def _spawn(self) -> _Child:
        # spawn: forking a process that already runs threads can deadlock the child, and
        # spawned children are our own, so they can watch for our death (_init_child).
        task_read, task_write = self._context.Pipe(duplex=False)
        result_read, result_write = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_serve,
            args=(task_read, result_write, os.getpid()),
            name="pixelbatch-transform",
            daemon=True,
        )
        process.start()
        task_read.close()  # only the child's: its death then ends our reads and writes
        result_write.close()
        return _Child(process, task_write, result_read)

    def _send(self, child: _Child, turn: _Turn, task: tuple[object, ...]) -> None:
        with child.sending:
            with child.state:
                if child.retired:
                    raise _Resubmit
                child.turns.append(turn)
                if len(child.turns) == 1:
                    turn.ready.set()
            try:
                child.tasks.send(task)
                return
            except OSError:  # it died (while idle, or killed by _retire under this write)
                with child.state:
                    if turn in child.turns:  # _retire may have resubmitted it already
                        child.turns.remove(turn)
        self._retire(child)
        raise _Resubmit

    def _receive(self, child: _Child, turn: _Turn) -> TransformResult:
        """Read this turn's answer (the next on the pipe), within the time limit."""
        try:
            try:
                if not child.started:
                    self._await_start(child)
                if not child.results.poll(self.timeout):
                    self._retire(child)
                    raise ImageError(
                        f"decoding and encoding this image took longer than {self.timeout:g} s",
                        code="transform_timeout",
                    )
                ok, value = child.results.recv()
            except (EOFError, OSError):
                self._retire(child)
                raise ImageError(
                    "the image worker process died while decoding this image",
                    code="worker_crashed",
                ) from None
        finally:
            self._pass_turn(child, turn)
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        assert isinstance(value, TransformResult)
        return value

    def _await_start(self, child: _Child) -> None:
        """Read the child's _READY: its start-up is not the image's time."""
        if not child.results.poll(STARTUP_TIMEOUT) or child.results.recv() != _READY:
            self._retire(child)
            raise ImageError("the image worker process did not start", code="worker_crashed")
        child.started = True

    def _pass_turn(self, child: _Child, turn: _Turn) -> None:
        with child.state:
            if child.turns and child.turns[0] is turn:
                child.turns.popleft()
            if child.turns:
                child.turns[0].ready.set()
            elif child.retired:
                child.results.close()  # the last reader is done with it

    def _retire(self, child: _Child) -> None:
        """Stop ``child`` for good; the tasks queued behind the one it runs go elsewhere.

        It is killed first, so that a caller blocked writing to it is released. Its result
        pipe is closed by whoever reads it last (``_pass_turn``), or here when no one is
        reading it: never under a reader's feet."""
        child.process.kill()
        with child.state:
            if child.retired:
                return
            child.retired = True
            behind = [t for t in child.turns if not t.ready.is_set()]
            for waiting in behind:
                child.turns.remove(waiting)
            if not child.turns:
                child.results.close()
        for waiting in behind:
            waiting.resubmit = True
            waiting.ready.set()
        child.process.join(5)
        with child.sending:
            child.tasks.close()

    def child_pids(self) -> list[int]:
        """The live children (for tests and diagnostics)."""
        with self._lock:
            children = [c for c in self._children if c is not None and not c.retired]
        return [c.process.pid for c in children if c.process.pid is not None]

    def shutdown(self) -> None:
        """Let each child finish the tasks it was sent, then end them."""
        with self._lock:
            self._closed = True
            children = [c for c in self._children if c is not None]
        for child in children:
            with child.sending, child.state:
                if not child.retired:
                    child.tasks.close()  # the child's read after its last task ends it
        for child in children:
            child.process.join(10)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(5)
            with child.state:
                if not child.retired:
                    child.retired = True
                    if not child.turns:
                        child.results.close()
