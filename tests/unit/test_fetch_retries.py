"""The retry policy of one fetch (pixelbatch.fetch.retries), on a fake clock, through
``call_with_retries`` as the fetcher uses it."""

from __future__ import annotations

from typing import Any

import pytest

from pixelbatch.errors import FetchError
from pixelbatch.fetch import FetchConfig, retries
from pixelbatch.fetch.retries import call_with_retries
from pixelbatch.settings import Settings


class Clock:
    """A monotonic clock that only moves when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _config(**settings: Any) -> FetchConfig:
    base = {"fetch_retries": 3, "fetch_backoff_base": 0.5, "fetch_backoff_max": 30.0}
    return FetchConfig.from_settings(Settings(**{**base, **settings}))


def _run(
    config: FetchConfig,
    clock: Clock,
    failures: list[FetchError],
    deadline: float,
    calls: list[int] | None = None,
) -> Any:
    """Runs a call that raises ``failures`` in turn, then returns "ok", under the policy;
    each real call is appended to ``calls``."""
    pending = iter(failures)
    made = calls if calls is not None else []

    def call() -> str:
        made.append(len(made) + 1)
        failure = next(pending, None)
        if failure is not None:
            raise failure
        return "ok"

    return call_with_retries(config, deadline, call, sleep=clock.sleep, clock=clock)


def _retryable(retry_after: float | None = None) -> FetchError:
    return FetchError("boom", code="http_503", retryable=True, retry_after=retry_after)


def test_retryable_errors_are_retried_until_success() -> None:
    clock = Clock()
    calls: list[int] = []
    assert _run(_config(), clock, [_retryable(), _retryable()], clock.now + 60, calls) == "ok"
    assert len(clock.sleeps) == 2
    assert calls == [1, 2, 3]  # the first failure is not tried twice


def test_a_first_success_builds_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_policy(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the policy was built for a call that succeeded at once")

    monkeypatch.setattr(retries, "retry_policy", no_policy)
    clock = Clock()
    assert _run(_config(), clock, [], clock.now + 60) == "ok"
    with pytest.raises(AssertionError, match="policy was built"):
        _run(_config(), clock, [_retryable()], clock.now + 60)


def test_final_error_is_not_retried() -> None:
    clock = Clock()
    final = FetchError("gone", code="http_404")
    with pytest.raises(FetchError) as info:
        _run(_config(), clock, [final], clock.now + 60)
    assert info.value is final
    assert clock.sleeps == []


def test_last_error_is_raised_after_all_retries() -> None:
    clock = Clock()
    failures = [_retryable() for _ in range(5)]
    calls: list[int] = []
    with pytest.raises(FetchError) as info:
        _run(_config(fetch_retries=2), clock, failures, clock.now + 60, calls)
    assert info.value is failures[2]  # the third attempt's error, not tenacity's
    assert len(clock.sleeps) == 2
    assert calls == [1, 2, 3]


def test_backoff_is_exponential_with_full_jitter() -> None:
    """Each wait is drawn from [0, base * 2**n], capped by backoff_max."""
    ceilings = [0.5, 1.0, 2.0, 3.0]
    waits: list[list[float]] = [[] for _ in ceilings]
    for _ in range(200):
        clock = Clock()
        config = _config(fetch_retries=4, fetch_backoff_max=3.0)
        _run(config, clock, [_retryable() for _ in ceilings], clock.now + 1000)
        for index, wait in enumerate(clock.sleeps):
            waits[index].append(wait)
    for ceiling, drawn in zip(ceilings, waits, strict=True):
        assert all(0 <= wait <= ceiling for wait in drawn)
        assert max(drawn) > ceiling * 0.8  # jitter spans the window...
        assert min(drawn) < ceiling * 0.2  # ...from near zero


def test_retry_after_is_honoured_and_capped_by_backoff_max() -> None:
    clock = Clock()
    config = _config(fetch_backoff_max=5.0)
    assert _run(config, clock, [_retryable(2.0), _retryable(60.0)], clock.now + 60) == "ok"
    assert clock.sleeps == [2.0, 5.0]


def test_no_wait_that_would_end_past_the_deadline() -> None:
    """A Retry-After of 8 s with 5 s left: give up now rather than sleep into the deadline."""
    clock = Clock()
    last = _retryable(8.0)
    with pytest.raises(FetchError) as info:
        _run(_config(), clock, [_retryable(4.0), last], clock.now + 9.0)
    assert info.value is last
    assert clock.sleeps == [4.0]


def test_nothing_is_retried_once_the_deadline_has_passed() -> None:
    clock = Clock()
    with pytest.raises(FetchError):
        _run(_config(fetch_backoff_base=0.0), clock, [_retryable()], clock.now - 1)
    assert clock.sleeps == []
