"""Webhook delivery semantics against a real HTTP receiver on 127.0.0.1.

``deliver_due`` is driven directly, on a real SQLite database, with the outbox row made by
the real code path (upload, images recorded, ``finalize_batch`` puts the webhook in the
outbox). Between attempts the test fast-forwards: it moves ``next_attempt_at`` to now and
advances the clock the signer reads by the same amount, so a schedule that spans hours runs
in seconds while every header still carries the time it would really have been sent at.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from pixelbatch.auth.keys import ANONYMOUS, Principal, create_key
from pixelbatch.db import images, outbox
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import ApiKey, DeliveryStatus, WebhookAttempt, WebhookDelivery, utcnow
from pixelbatch.demo.server import ImageServer, Route
from pixelbatch.intake import upload
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import TransformOptions
from pixelbatch.webhooks import signing
from pixelbatch.webhooks.delivery import deliver_due, encode_payload
from pixelbatch.webhooks.signing import InvalidSignature, verify
from tests import support

DEFAULT_SECRET = "whsec_" + "ZGVsaXZlcnktdGVzdC1kZWZhdWx0LXNlY3JldC0wMDAwMA=="
TIMEOUT = 1.0  # per-attempt webhook timeout for this test
STALL = 4.0  # how long the stalling receiver sits on a request: well past TIMEOUT


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)


# The schedule is checked with the shipped defaults, not test-sized ones.
BACKOFF_BASE = _default("webhook_backoff_base")
BACKOFF_MAX = _default("webhook_backoff_max")
MAX_ATTEMPTS = int(_default("webhook_max_attempts"))


class SignerClock:
    """Stands in for the ``time`` module inside ``pixelbatch.webhooks.signing``: real time
    plus however far the test has fast-forwarded."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def time(self) -> float:
        return time.time() + self.skipped


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # on the SignerClock


@dataclass
class ScriptedReceiver:
    """A webhook endpoint that answers each POST as the next step of its script says:
    ``redirect`` (307 to ``redirect_to``), ``error`` (500), ``stall`` (hold the request
    past the sender's timeout, then answer 200 - so a sender without a timeout would count
    it as delivered), ``hold`` (answer 200 once ``release`` is set) or ``ok`` (200). The
    last step repeats."""

    clock: SignerClock
    script: list[str]
    redirect_to: str = ""
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        with self.lock:
            step = self.script[min(len(self.received), len(self.script) - 1)]
            self.received.append(
                Received(
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    at=self.clock.time(),
                )
            )
        headers = {"Content-Length": "0"}
        if step == "redirect":
            status, headers["Location"] = 307, self.redirect_to
        elif step == "error":
            status = 500
        elif step == "stall":
            time.sleep(STALL)
            status = 200
        elif step == "hold":
            self.release.wait(30)
            status = 200
        else:
            assert step == "ok", step
            status = 200
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            assert time.monotonic() < deadline, f"receiver got {self.count()} of {count}"
            time.sleep(0.01)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SignerClock:
    fake = SignerClock()
    monkeypatch.setattr(signing, "time", fake)
    return fake


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_runtime(tmp_path: Path, server: ImageServer) -> Iterator[RuntimeFactory]:
    """Runtimes on one SQLite database in ``tmp_path``; the receiver is the only address
    the fetcher may reach. Keyword arguments override settings."""
    made: list[Runtime] = []

    def factory(**overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "host": "127.0.0.1",
            "fetch_allow": [server.allow_entry],  # the receiver (and redirect target) only
            "webhook_secret": SecretStr(DEFAULT_SECRET),
            "webhook_timeout": TIMEOUT,
            "webhook_backoff_base": BACKOFF_BASE,
            "webhook_backoff_max": BACKOFF_MAX,
            "webhook_max_attempts": MAX_ATTEMPTS,
            **overrides,
        }
        rt = Runtime(Settings(**values))
        rt.migrate()
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()


def _finished_batch(runtime: Runtime, webhook_url: str, principal: Principal) -> uuid.UUID:
    """Upload a one-image catalog with a webhook, record the image, finalise the batch: the
    same steps a worker takes, ending with the webhook in the outbox."""
    csv = support.csv_bytes([["1", "Mug", "http://images.example/mug.jpg"]])
    batch, created = upload(
        runtime,
        None,
        io.BytesIO(csv),
        filename="c.csv",
        options=TransformOptions(),
        webhook_url=webhook_url,
        principal=principal,
    )
    assert created
    with transaction(runtime.sessions) as session:
        [image] = images.claim_images(
            session, owner="test", limit=10, lease_seconds=60, batch_id=batch.id
        )
        assert images.record_failure(session, image.id, "test", "http_404", "gone", 1.0)
    assert finalize_batch(runtime, batch.id)
    return batch.id


def _delivery(runtime: Runtime, batch_id: uuid.UUID) -> WebhookDelivery:
    with reading(runtime.sessions) as session:
        [delivery] = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)
        ).all()
        return delivery


def _attempts(runtime: Runtime, delivery_id: uuid.UUID) -> list[WebhookAttempt]:
    with reading(runtime.sessions) as session:
        return list(
            session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.number)
            )
        )


def _make_due(runtime: Runtime, delivery_id: uuid.UUID, clock: SignerClock) -> None:
    """Fast-forward to the delivery's next attempt: the row becomes due now, and the signer's
    clock jumps by the time that would have passed."""
    now = utcnow()
    with transaction(runtime.sessions) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        clock.skipped += max(0.0, (delivery.next_attempt_at - now).total_seconds())
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(next_attempt_at=now)
        )


@dataclass
class Step:
    """What one ``deliver_due`` call did, with wall-clock bounds around it."""

    before: datetime
    after: datetime
    delivery: WebhookDelivery

    def gap_bounds(self) -> tuple[float, float]:
        """Bounds on the backoff delay chosen in this call: it was computed at some moment
        between ``before`` and ``after``."""
        assert self.delivery.next_attempt_at is not None
        return (
            (self.delivery.next_attempt_at - self.after).total_seconds(),
            (self.delivery.next_attempt_at - self.before).total_seconds(),
        )


def _attempt(
    runtime: Runtime, batch_id: uuid.UUID, receiver: ScriptedReceiver, clock: SignerClock
) -> Step:
    """Make the delivery due, run one delivery pass, and check it sent exactly one request."""
    _make_due(runtime, _delivery(runtime, batch_id).id, clock)
    sent = receiver.count()
    before = utcnow()
    assert deliver_due(runtime) == 1
    after = utcnow()
    assert receiver.count() == sent + 1
    step = Step(before, after, _delivery(runtime, batch_id))
    # Not due again until the backoff has passed: an immediate pass sends nothing.
    assert deliver_due(runtime) == 0
    assert receiver.count() == sent + 1
    return step


def _nominal_delay(attempt: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (attempt - 1))


def _check_backoff(steps: list[Step]) -> list[float]:
    """Each failed attempt but the last schedules the next one base * 2^(n-1) seconds
    later (capped), within the +-20% jitter. Returns the lower bounds of the gaps."""
    lows: list[float] = []
    for number, step in enumerate(steps, start=1):
        assert step.delivery.status == DeliveryStatus.PENDING
        low, high = step.gap_bounds()
        nominal = _nominal_delay(number)
        assert 0.8 * nominal <= high, (number, low, high)
        assert low <= 1.2 * nominal, (number, low, high)
        lows.append(low)
    for number in range(1, len(lows)):
        if _nominal_delay(number + 1) < BACKOFF_MAX:
            assert lows[number] > steps[number - 1].gap_bounds()[1], "gaps must grow"
    return lows


def _check_signed(
    received: list[Received], secret: str, event_id: str, steps_lows: list[float]
) -> None:
    """Every attempt: the same webhook-id and body, a timestamp of when it was sent (not
    reused from the first try) and a signature a receiver accepts at that moment."""
    assert {r.headers["webhook-id"] for r in received} == {event_id}
    assert len({r.body for r in received}) == 1
    stamps = [int(r.headers["webhook-timestamp"]) for r in received]
    for r, stamp in zip(received, stamps, strict=True):
        assert abs(r.at - stamp) <= 2, (r.at, stamp)
        verify(secret, r.headers, r.body, now=r.at)  # default 5-minute replay tolerance
        with pytest.raises(InvalidSignature):
            other = DEFAULT_SECRET if secret != DEFAULT_SECRET else "not-the-secret"
            verify(other, r.headers, r.body, now=r.at)
    # Consecutive timestamps are as far apart as the backoff that separated the attempts.
    for i, low in enumerate(steps_lows):
        assert stamps[i + 1] - stamps[i] >= low - 2, (i, stamps)


def test_redirect_error_timeout_then_success(
    runtime: Runtime, server: ImageServer, clock: SignerClock
) -> None:
    # Following the redirect would find a 200 here and count the webhook as delivered.
    redirect_target = server.add("/elsewhere", Route(b"", "text/plain"))
    receiver = ScriptedReceiver(
        clock, ["redirect", "error", "stall", "ok"], redirect_to=redirect_target
    )
    hook = server.add("/hook", receiver)
    with transaction(runtime.sessions) as session:
        key = create_key(session, name="shop", tenant="acme")
    batch_id = _finished_batch(runtime, hook, Principal(tenant="acme", key_id=key.id))
    queued = _delivery(runtime, batch_id)
    assert (queued.status, queued.attempts, queued.url) == (DeliveryStatus.PENDING, 0, hook)

    failed_steps = [_attempt(runtime, batch_id, receiver, clock) for _ in range(3)]
    lows = _check_backoff(failed_steps)
    final = _attempt(runtime, batch_id, receiver, clock)

    # The redirect counted as a failure and its target was never requested.
    assert server.hits("/elsewhere") == 0
    delivery = final.delivery
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 4 and delivery.delivered_at is not None
    assert (delivery.last_status_code, delivery.last_error) == (200, None)

    attempts = _attempts(runtime, delivery.id)
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.status_code for a in attempts] == [307, 500, None, 200]
    redirect, error, stalled, ok = attempts
    assert redirect.error is not None and "307" in redirect.error
    assert error.error is not None and "500" in error.error
    assert stalled.error is not None and "timed out" in stalled.error.lower()
    # The timeout cut the attempt short: the receiver would have held it for STALL seconds.
    assert TIMEOUT * 1000 * 0.8 <= stalled.duration_ms < (TIMEOUT + 1.5) * 1000
    assert ok.error is None

    # Signed with the uploading key's own secret, same event id, fresh timestamps.
    _check_signed(receiver.received, key.webhook_secret, delivery.event_id, lows)
    assert receiver.received[0].body == encode_payload(delivery.payload)
    assert delivery.payload["request_id"] == str(batch_id)

    # Delivered is final: even if the row were due again, nothing more is sent.
    _make_due(runtime, delivery.id, clock)
    assert deliver_due(runtime) == 0
    assert receiver.count() == 4 and len(_attempts(runtime, delivery.id)) == 4


def test_gives_up_after_max_attempts_on_an_hour_long_schedule(
    runtime: Runtime, server: ImageServer, clock: SignerClock
) -> None:
    receiver = ScriptedReceiver(clock, ["error"])
    hook = server.add("/always-500", receiver)
    batch_id = _finished_batch(runtime, hook, Principal(tenant=""))  # no key: default secret

    steps = [_attempt(runtime, batch_id, receiver, clock) for _ in range(MAX_ATTEMPTS)]
    lows = _check_backoff(steps[:-1])
    # With the default settings the retries are spread over more than an hour.
    assert sum(lows) >= 3600, lows

    delivery = steps[-1].delivery
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == MAX_ATTEMPTS and delivery.delivered_at is None
    assert (delivery.last_status_code, delivery.last_error) == (500, "receiver answered HTTP 500")
    attempts = _attempts(runtime, delivery.id)
    assert [a.number for a in attempts] == list(range(1, MAX_ATTEMPTS + 1))
    assert {(a.status_code, a.error) for a in attempts} == {(500, "receiver answered HTTP 500")}
    _check_signed(receiver.received, DEFAULT_SECRET, delivery.event_id, lows)

    # Failed is final: even a row made due again is never retried.
    _make_due(runtime, delivery.id, clock)
    assert deliver_due(runtime) == 0
    assert receiver.count() == MAX_ATTEMPTS
    assert len(_attempts(runtime, delivery.id)) == MAX_ATTEMPTS
    assert _delivery(runtime, batch_id).status == DeliveryStatus.FAILED


def test_a_slow_receiver_holds_only_the_delivery_being_sent(
    make_runtime: RuntimeFactory, server: ImageServer, clock: SignerClock
) -> None:
    """While one delivery waits on a slow receiver, the rest of the outbox stays claimable:
    a second worker sends it meanwhile, and nothing is sent or recorded twice.

    Claiming a whole page up front leased deliveries that then waited their turn behind
    slow receivers; once a lease ran out another worker sent the same attempt again."""
    runtime = make_runtime(webhook_timeout=20.0)
    receiver = ScriptedReceiver(clock, ["hold"])
    hook = server.add("/slow", receiver)
    batch_ids = [_finished_batch(runtime, hook, Principal(tenant="")) for _ in range(2)]

    first_pass: list[int] = []
    worker = threading.Thread(target=lambda: first_pass.append(deliver_due(runtime)))
    worker.start()
    try:
        receiver.wait_for(1)
        with reading(runtime.sessions) as session:
            assert outbox.count_due_deliveries(session) == 1
        second_pass: list[int] = []
        other = threading.Thread(target=lambda: second_pass.append(deliver_due(runtime)))
        other.start()
        receiver.wait_for(2)  # both requests are in flight at once
    finally:
        receiver.release.set()
        worker.join(30)
    other.join(30)
    assert first_pass == [1] and second_pass == [1]

    ids = [r.headers["webhook-id"] for r in receiver.received]
    events = []
    for batch_id in batch_ids:
        delivery = _delivery(runtime, batch_id)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)
        assert len(_attempts(runtime, delivery.id)) == 1
        events.append(delivery.event_id)
    assert sorted(ids) == sorted(events)


def test_a_delivery_that_cannot_be_signed_fails_alone(
    runtime: Runtime, server: ImageServer, clock: SignerClock
) -> None:
    """A corrupt secret is that delivery's failed attempt: recorded, backed off, never sent
    with an empty HMAC key - and the deliveries behind it still go out in the same pass."""
    receiver = ScriptedReceiver(clock, ["ok"])
    hook = server.add("/hook", receiver)
    with transaction(runtime.sessions) as session:
        key = create_key(session, name="shop", tenant="acme")
    broken = _finished_batch(runtime, hook, Principal(tenant="acme", key_id=key.id))
    healthy = _finished_batch(runtime, hook, Principal(tenant=""))
    with transaction(runtime.sessions) as session:
        # base64.b64decode drops the non-alphabet characters: this used to be the empty key.
        session.execute(update(ApiKey).values(webhook_secret="whsec_%%%"))

    assert deliver_due(runtime) == 2

    assert [r.headers["webhook-id"] for r in receiver.received] == [
        _delivery(runtime, healthy).event_id
    ]
    assert _delivery(runtime, healthy).status == DeliveryStatus.DELIVERED
    failed = _delivery(runtime, broken)
    assert (failed.status, failed.attempts) == (DeliveryStatus.PENDING, 1)
    assert failed.next_attempt_at > utcnow()  # backed off like any failed attempt
    [attempt] = _attempts(runtime, failed.id)
    assert attempt.status_code is None
    assert attempt.error == "internal error: the webhook could not be signed or sent"


def test_a_name_that_resolves_to_a_blocked_address_fails_at_once(runtime: Runtime) -> None:
    """``localhost`` passes the upload check (a name, not a literal address) but resolves to
    loopback, where only the receiver's port is allowed: the address policy will refuse it
    on every attempt, so the delivery is FAILED at the first, with the reason, not retried.
    The port is allowed (80): only the address is refused, before connecting."""
    batch_id = _finished_batch(runtime, "http://localhost/hook", ANONYMOUS)
    assert deliver_due(runtime) == 1
    delivery = _delivery(runtime, batch_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 1
    assert delivery.last_error is not None and "loopback" in delivery.last_error
    assert [a.error for a in _attempts(runtime, delivery.id)] == [delivery.last_error]
