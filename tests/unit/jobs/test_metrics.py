"""The work counters count what the database records: once per image, by whoever's
recording won, never per attempt (a re-leased image is not counted twice)."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from pixelbatch import hosts
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, Image
from pixelbatch.jobs import recording
from pixelbatch.runtime import Runtime
from tests.unit.db.factories import new_batch, success
from tests.unit.jobs.helpers import claim_all


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _done() -> float:
    return _sample("pixelbatch_images_processed_total", outcome="done", error_code="")


def test_an_image_re_leased_to_another_worker_is_counted_once(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 1)
    [first] = claim_all(runtime, "dead", lease_seconds=0.2)
    time.sleep(0.3)
    [second] = claim_all(runtime, "alive")
    assert first.id == second.id
    stages = {"queue": 0.5, "download": 0.1, "transform": 0.2, "store": 0.01}
    outcome = recording.Outcome(second.id, second.batch_id, success(), stages=stages)
    before_done = _done()
    before_bytes = _sample("pixelbatch_image_bytes_in_total")
    before_store = _sample("pixelbatch_stage_duration_seconds_count", stage="store")

    # The worker whose lease ran out comes back: its recording loses, nothing is counted.
    recording.record(runtime.sessions, outcome, "dead")
    assert _done() == before_done
    # The new owner records it: counted once, with its bytes and stage times.
    recording.record(runtime.sessions, outcome, "alive")
    # A redelivered message recording it again changes nothing.
    recording.record(runtime.sessions, outcome, "alive")

    assert _done() == before_done + 1
    assert _sample("pixelbatch_image_bytes_in_total") == before_bytes + success().bytes_in
    assert _sample("pixelbatch_stage_duration_seconds_count", stage="store") == before_store + 1


def test_a_download_failure_is_counted_by_code_and_host_class(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 2)
    first, second = claim_all(runtime, "w")
    classes = {"cdn.example.com": "example-cdn"}

    def fail(item_id: int, url: str) -> None:
        outcome = recording.Outcome(
            item_id,
            first.batch_id,
            error_code="http_404",
            error_message="gone",
            url=url,
            stages={"download": 0.1},
            failed_stage="download",
        )
        recording.record(runtime.sessions, outcome, "w", host_classes=classes)

    def failures(host_class: str) -> float:
        return _sample(
            "pixelbatch_download_failures_total", host_class=host_class, error_code="http_404"
        )

    before = {c: failures(c) for c in ("example-cdn", "ip", "other")}
    before_failed = _sample(
        "pixelbatch_images_processed_total", outcome="failed", error_code="http_404"
    )
    fail(first.id, "https://img.cdn.example.com/a.jpg")
    fail(second.id, "https://10.1.2.3/b.jpg")

    assert failures("example-cdn") == before["example-cdn"] + 1
    assert failures("ip") == before["ip"] + 1
    assert failures("other") == before["other"]
    assert (
        _sample("pixelbatch_images_processed_total", outcome="failed", error_code="http_404")
        == before_failed + 2
    )


def test_failing_hosts_are_reported_per_tenant(runtime: Runtime) -> None:
    mine, theirs = new_batch(runtime.sessions, 3), new_batch(runtime.sessions, 1)
    with transaction(runtime.sessions) as session:
        for batch_id, tenant in ((mine, "me"), (theirs, "them")):
            batch = session.get(Batch, batch_id)
            assert batch is not None
            batch.tenant = tenant
    items = claim_all(runtime, "w")
    with transaction(runtime.sessions) as session:
        for item in items:
            image = session.get(Image, item.id)
            assert image is not None
            worse = item.row_number == 3
            image.url = "https://worse.example/y" if worse else "https://bad.example/x"
    for item in items:
        code = "timeout" if item.row_number == 2 else "http_404"
        outcome = recording.Outcome(item.id, item.batch_id, error_code=code, error_message="x")
        recording.record(runtime.sessions, outcome, "w")

    report = hosts.failing_hosts(runtime, hosts.HostQuery(), tenant="me")
    # Rows 2 and 4 of mine on bad.example, row 3 on worse.example; theirs is not counted.
    assert [(h.host, h.failures) for h in report] == [("bad.example", 2), ("worse.example", 1)]
    assert report[0].error_codes == {"timeout": 1, "http_404": 1}
    assert (
        hosts.failing_hosts(runtime, hosts.HostQuery(limit=1), tenant="me")[0].host == "bad.example"
    )
    assert [h.host for h in hosts.failing_hosts(runtime, hosts.HostQuery(), tenant="them")] == [
        "bad.example"
    ]
    assert hosts.failing_hosts(runtime, hosts.HostQuery(), tenant="nobody") == []
