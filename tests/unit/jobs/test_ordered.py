"""The embedded worker's priority-ordered thread pool and transform slots."""

from __future__ import annotations

import functools
import threading
import time

from pixelbatch.jobs.ordered import PriorityExecutor, PriorityGate


def test_queued_calls_run_highest_level_first_then_in_order() -> None:
    executor = PriorityExecutor(1, "test")
    release = threading.Event()
    ran: list[str] = []
    executor.submit(1, release.wait)  # occupies the one thread while the rest queue up
    for name, level in (("n1", 1), ("low", 0), ("h1", 2), ("n2", 1), ("h2", 2)):
        executor.submit(level, functools.partial(ran.append, name))
    release.set()
    deadline = time.monotonic() + 10
    while len(ran) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    executor.shutdown()
    assert ran == ["h1", "h2", "n1", "n2", "low"]


def test_a_failing_call_does_not_stop_its_thread_and_shutdown_drops_the_queue() -> None:
    executor = PriorityExecutor(1, "test")
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    executor.submit(1, fail)
    executor.submit(1, done.set)
    assert done.wait(10)
    blocker = threading.Event()
    executor.submit(1, lambda: blocker.wait(0.3))
    time.sleep(0.05)
    ran: list[int] = []
    executor.submit(1, lambda: ran.append(1))
    executor.shutdown()
    assert ran == [], "a call not started when shutdown began is dropped"


def test_a_freed_slot_goes_to_the_highest_waiting_level() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    first = threading.Thread(target=gate.run, args=(1, hold))
    first.start()
    assert holding.wait(10)
    waiters = []
    for name, level in (("normal", 1), ("low", 0), ("high", 2)):
        thread = threading.Thread(target=gate.run, args=(level, lambda n=name: order.append(n)))
        thread.start()
        waiters.append(thread)
        time.sleep(0.05)  # queued in this order
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)
    assert order == ["high", "normal", "low"]


def test_the_gate_never_runs_more_than_its_slots_at_once() -> None:
    gate = PriorityGate(2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    threads = [threading.Thread(target=gate.run, args=(i % 3, work)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2
