"""When a failed download is tried again, and how long to wait first (with tenacity).

One policy per ``fetch()`` call: up to ``retries`` more attempts of a retryable
``FetchError``, waiting the server's ``Retry-After`` (capped by ``backoff_max``) or else
full-jitter exponential backoff from ``backoff_base``, and never starting a wait that would
end past the call's total deadline (the deadline would only fail the next attempt anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from pixelbatch.errors import FetchError
from pixelbatch.fetch.config import FetchConfig

T = TypeVar("T")


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.retryable


class _RetryAfterOrJitter(wait_base):
    """The server's Retry-After when it sent one, else full-jitter exponential backoff."""

    def __init__(self, base: float, cap: float) -> None:
        self._cap = cap
        self._jitter = wait_random_exponential(multiplier=base, max=cap)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, FetchError) and exc.retry_after is not None:
            return min(exc.retry_after, self._cap)
        return self._jitter(retry_state)


class _WaitWouldPassDeadline(stop_base):
    """Stop when the upcoming wait ends at or after the deadline (monotonic seconds)."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


def retry_policy(
    config: FetchConfig,
    deadline: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Retrying:
    """The retry policy of one fetch ending by ``deadline`` (on ``clock``).

    It re-raises the last ``FetchError`` itself, never tenacity's ``RetryError``.
    """
    return Retrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(config.retries + 1) | _WaitWouldPassDeadline(deadline, clock),
        wait=_RetryAfterOrJitter(config.backoff_base, config.backoff_max),
        sleep=sleep,
        reraise=True,
    )


def call_with_retries(
    config: FetchConfig,
    deadline: float,
    call: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()`` under :func:`retry_policy`, which is only built once the first attempt
    has failed in a way worth retrying.

    Nearly every download succeeds at once, and building tenacity's objects for each one
    cost the API process more CPU than parsing the URL. The first failure is handed to the
    policy as its first attempt's outcome, so the waits, the attempt count and the deadline
    are exactly the policy's."""
    try:
        return call()
    except FetchError as exc:
        if not exc.retryable:
            raise
        first = exc
    replayed = False

    def again() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first
        return call()

    return retry_policy(config, deadline, sleep=sleep, clock=clock)(again)
