"""The one routine both dispatchers run: produce (fetch, transform, store), record once,
handle_image and process_chunk, against a real database, image server and storage."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import pytest
from PIL import Image as PILImage
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from pixelbatch.db.models import BatchStatus, Image, ImageStatus
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs import recording, routine
from pixelbatch.jobs.transform_pool import TransformRunner, inline_runner
from pixelbatch.runtime import Runtime
from pixelbatch.transform import TransformOptions, TransformResult
from tests.unit.jobs.helpers import (
    SOURCE_JPEG,
    batch_of,
    claim_all,
    commits_of,
    image_statuses,
    read_output_csv,
    refuse_recordings,
    upload,
    urls,
)


@pytest.fixture
def runner(runtime: Runtime) -> TransformRunner:
    return inline_runner(runtime.settings.max_pixels)


def _stored_files(runtime: Runtime) -> list[str]:
    root = runtime.settings.outputs_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- produce


def test_produce_stores_a_smaller_reencode_under_a_deterministic_key(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    [item] = claim_all(runtime, "w")

    outcome = routine.produce(item, runtime.fetcher, runtime.storage, runner)

    assert outcome.error_code is None and outcome.success is not None
    success = outcome.success
    assert (
        success.output_key
        == routine.output_key(batch_id, 2, 0, "jpg")
        == f"{batch_id}/0000002-01.jpg"
    )
    assert success.bytes_in == len(SOURCE_JPEG)
    assert 0 < success.bytes_out < success.bytes_in
    assert (success.width, success.height) == (320, 240)
    assert success.source_format == "jpeg"
    assert success.source_quality is not None and success.output_quality is not None
    assert success.output_quality == pytest.approx(success.source_quality / 2, abs=1)
    path = runtime.storage.local_path(success.output_key)
    assert path is not None and path.stat().st_size == success.bytes_out
    with PILImage.open(path) as stored:
        assert stored.format == "JPEG" and stored.size == (320, 240)
    # produce touches no database: the image is still leased and nothing is counted.
    assert image_statuses(runtime.sessions, batch_id) == {"PROCESSING": 1}
    assert batch_of(runtime.sessions, batch_id).images_done == 0


@pytest.mark.parametrize(
    ("path", "code"),
    [("/missing.jpg", "http_404"), ("/truncated.jpg", "corrupt_image")],
)
def test_produce_turns_a_failure_into_an_outcome_and_stores_nothing(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner, path: str, code: str
) -> None:
    upload(runtime, [["1", "Chair", urls(image_server, path)]])
    [item] = claim_all(runtime, "w")

    outcome = routine.produce(item, runtime.fetcher, runtime.storage, runner)

    assert outcome.success is None
    assert outcome.error_code == code and outcome.error_message
    assert not [key for key in _stored_files(runtime) if not key.endswith("input.csv")]


def test_produce_reports_an_unexpected_exception_as_an_internal_error(
    runtime: Runtime, image_server: ImageServer
) -> None:
    upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    [item] = claim_all(runtime, "w")

    # A runner with a bug in it: the only stand-in here, for a failure no real input causes.
    def broken(data: bytes, options: TransformOptions) -> TransformResult:
        raise RuntimeError("bug")

    outcome = routine.produce(item, runtime.fetcher, runtime.storage, broken)

    assert outcome.success is None and outcome.error_code == "internal_error"


# --------------------------------------------------------------------------- record


def test_record_counts_each_image_once_and_says_when_the_batch_is_complete(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg", "/missing.jpg")]])
    first, second = claim_all(runtime, "w")
    ok = routine.produce(first, runtime.fetcher, runtime.storage, runner)
    failed = routine.produce(second, runtime.fetcher, runtime.storage, runner)

    assert recording.record(runtime.sessions, ok, "w") is False  # one image still to go
    assert recording.record(runtime.sessions, failed, "w") is True
    # A duplicate delivery of the same outcome changes nothing.
    assert recording.record(runtime.sessions, ok, "w") is False
    assert recording.record(runtime.sessions, failed, "w") is False

    batch = batch_of(runtime.sessions, batch_id)
    assert (batch.images_done, batch.images_failed) == (1, 1)
    assert batch.bytes_in == len(SOURCE_JPEG)
    assert ok.success is not None and batch.bytes_out == ok.success.bytes_out
    with runtime.sessions() as session:
        done = session.get(Image, first.id)
        lost = session.get(Image, second.id)
        assert done is not None and lost is not None
        assert done.status == ImageStatus.DONE and done.output_key == ok.success.output_key
        assert lost.status == ImageStatus.FAILED and lost.error_code == "http_404"
        assert done.lease_until is None and lost.lease_until is None


def test_record_refuses_a_worker_whose_lease_was_taken_over(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    [stale] = claim_all(runtime, "dead", lease_seconds=-1)
    [item] = claim_all(runtime, "alive")
    assert item.id == stale.id
    outcome = routine.produce(stale, runtime.fetcher, runtime.storage, runner)

    assert recording.record(runtime.sessions, outcome, "dead") is False

    assert image_statuses(runtime.sessions, batch_id) == {"PROCESSING": 1}
    assert batch_of(runtime.sessions, batch_id).images_done == 0
    assert recording.record(runtime.sessions, outcome, "alive") is True


def test_only_an_image_with_repeats_pays_the_copies_update(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    """The claim says which images other rows repeat; recording one that no row repeats
    skips the UPDATE of its copies, and one that some row repeats still records them."""
    batch_id = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")],
            ["2", "Chair again", urls(image_server, "/a.jpg")],
        ],
    )
    repeated, alone = claim_all(runtime, "w")
    assert (repeated.has_copies, alone.has_copies) == (True, False)
    copies_updates: list[str] = []

    def watch(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("UPDATE images") and "duplicate_of" in statement:
            copies_updates.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", watch)
    try:
        for item in (alone, repeated):
            outcome = routine.produce(item, runtime.fetcher, runtime.storage, runner)
            assert recording.record(runtime.sessions, outcome, "w") is (item is repeated)
            assert len(copies_updates) == (1 if item is repeated else 0)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", watch)
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 3}


def test_record_many_records_a_group_in_one_transaction_with_each_batchs_counters_once(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    # Two batches; the first has a repeated URL (recorded for both rows), the second keeps
    # an image outside the group, so only the first completes. One image's lease was taken
    # over by another worker, one is abandoned: neither is recorded.
    whole = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/missing.jpg")],
            ["2", "Chair again", urls(image_server, "/a.jpg")],
        ],
    )
    partial = upload(runtime, [["1", "Lamp", urls(image_server, "/b.jpg", "/c.png", "/a.jpg")]])
    items = claim_all(runtime, "w")
    by_batch = {b: [i for i in items if i.batch_id == b] for b in (whole, partial)}
    assert [len(v) for v in by_batch.values()] == [2, 3]  # the repeat is not claimed
    lamp, lamp_png, lamp_later = by_batch[partial]
    outcomes = [
        routine.produce(item, runtime.fetcher, runtime.storage, runner)
        for item in [*by_batch[whole], lamp, lamp_png]
    ]
    abandoned = replace(outcomes[2], abandoned=True)
    with runtime.sessions() as session, session.begin():
        taken = session.get(Image, lamp_png.id)
        assert taken is not None
        taken.lease_owner = "another worker"
    with commits_of(runtime.engine) as commits:
        completed = recording.record_many(
            runtime.sessions, [*outcomes[:2], abandoned, outcomes[3]], "w"
        )
    assert completed == [whole]
    assert len(commits) == 1
    first = batch_of(runtime.sessions, whole)
    assert (first.images_done, first.images_failed) == (2, 1)
    assert outcomes[0].success is not None
    assert first.bytes_in == 2 * outcomes[0].success.bytes_in
    assert first.bytes_out == 2 * outcomes[0].success.bytes_out
    second = batch_of(runtime.sessions, partial)
    assert (second.images_done, second.images_failed) == (0, 0)
    assert image_statuses(runtime.sessions, partial) == {"PROCESSING": 3}
    # What is left records on its own, and then completes its batch.
    rest = [replace(abandoned, abandoned=False)]
    rest.append(routine.produce(lamp_later, runtime.fetcher, runtime.storage, runner))
    assert recording.record_many(runtime.sessions, rest, "w") == []  # lamp_png still leased away
    assert batch_of(runtime.sessions, partial).images_done == 2


def test_record_group_records_the_others_when_one_image_cannot_be_recorded(
    runtime: Runtime,
    image_server: ImageServer,
    runner: TransformRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg", "/c.png")]])
    items = claim_all(runtime, "w")
    outcomes = [routine.produce(i, runtime.fetcher, runtime.storage, runner) for i in items]
    refused = items[1].id
    refuse_recordings(monkeypatch, lambda image, _refused: image == refused)

    recorded = recording.record_group(runtime.sessions, outcomes, "w")

    assert [o.image_id for o in recorded.unrecorded] == [refused]
    assert isinstance(recorded.error, OperationalError)
    assert recorded.completed == []
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 2, "PROCESSING": 1}
    assert batch_of(runtime.sessions, batch_id).images_done == 2


# --------------------------------------------------------------------------- handle_image


def test_handle_image_finalises_the_batch_on_its_last_image_only(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(image_server, "/a.jpg")], ["2", "Lamp", urls(image_server, "/c.png")]],
    )
    first, last = claim_all(runtime, "w")

    assert routine.handle_image(runtime, first, "w", runner) is False
    assert batch_of(runtime.sessions, batch_id).status == BatchStatus.PROCESSING
    assert not (runtime.settings.outputs_dir / str(batch_id) / "output.csv").exists()

    assert routine.handle_image(runtime, last, "w", runner) is True
    batch = batch_of(runtime.sessions, batch_id)
    assert batch.status == BatchStatus.COMPLETED
    assert batch.output_key == f"{batch_id}/output.csv"
    rows = read_output_csv(runtime, batch_id)
    assert [(r["S. No."], r["Status"]) for r in rows] == [("1", "OK"), ("2", "OK")]
    assert rows[1]["Output Image Urls"].endswith(f"/files/{batch_id}/0000003-01.png")


def test_one_info_line_per_finished_image_and_debug_lines_per_download_without_secrets(
    runtime: Runtime,
    image_server: ImageServer,
    runner: TransformRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "X-Amz-Signature=s3cr3t"
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(image_server, f"/a.jpg?{secret}", f"/missing.jpg?{secret}")]],
    )
    good, missing = claim_all(runtime, "w")
    caplog.set_level(logging.DEBUG, logger="pixelbatch")

    routine.handle_image(runtime, good, "w", runner)
    routine.handle_image(runtime, missing, "w", runner)
    # A redelivered image that another worker recorded is not "finished" a second time.
    recording.record(
        runtime.sessions, routine.produce(good, runtime.fetcher, runtime.storage, runner), "w"
    )

    assert secret not in caplog.text
    finished = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
        and r.name == "pixelbatch.jobs.routine"
        and "image finished" in r.getMessage()
    ]
    u = image_server.base_url
    assert len(finished) == 2, finished
    source = len(SOURCE_JPEG)
    assert finished[0].startswith(
        f"image finished: batch {batch_id} row 2 image 1: done, {source} -> "
    )
    assert finished[0].endswith(f" ms ({u}/a.jpg?…)")
    assert finished[1].startswith(
        f"image finished: batch {batch_id} row 2 image 2: failed, http_404: "
    )
    assert finished[1].endswith(f" ms ({u}/missing.jpg?…)")
    downloads = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG and r.name == "pixelbatch.fetch.client"
    ]
    assert any(m.startswith(f"GET {u}/a.jpg?…: {source} bytes (image/jpeg)") for m in downloads)
    assert any(m.startswith(f"GET {u}/missing.jpg?… failed after") for m in downloads), downloads


# --------------------------------------------------------------------------- process_chunk


def test_process_chunk_records_every_item_and_finalises_each_batch_once(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    clean = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")],
            ["2", "Lamp", urls(image_server, "/c.png")],
        ],
    )
    mixed = upload(
        runtime,
        [
            ["1", "Desk", urls(image_server, "/b.jpg", "/missing.jpg")],
            ["2", "Rug", urls(image_server, "/truncated.jpg")],
        ],
    )
    items = claim_all(runtime, "w")
    assert len(items) == 6
    done: list[int] = []
    lock = threading.Lock()

    def on_done(image_id: int) -> None:
        with lock:
            done.append(image_id)

    finalised = routine.process_chunk(runtime, items, "w", runner, threads=3, on_done=on_done)

    assert finalised == 2
    assert sorted(done) == sorted(item.id for item in items)
    assert batch_of(runtime.sessions, clean).status == BatchStatus.COMPLETED
    assert image_statuses(runtime.sessions, clean) == {"DONE": 3}
    batch = batch_of(runtime.sessions, mixed)
    assert batch.status == BatchStatus.COMPLETED_WITH_ERRORS
    assert (batch.images_done, batch.images_failed) == (1, 2)
    desk, rug = read_output_csv(runtime, mixed)
    assert desk["Status"] == "PARTIAL" and rug["Status"] == "FAILED"
    kept, empty = (cell.strip() for cell in desk["Output Image Urls"].split(","))
    assert kept.endswith(f"/files/{mixed}/0000002-01.jpg") and empty == ""
    assert "missing.jpg" in desk["Errors"] and "truncated.jpg" in rug["Errors"]
    assert rug["Output Image Urls"] == ""


def test_a_redelivered_chunk_records_nothing_twice_and_overwrites_its_outputs(
    runtime: Runtime, image_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")]])
    items = claim_all(runtime, "w")
    assert routine.process_chunk(runtime, items, "w", runner, threads=2) == 1
    files = _stored_files(runtime)
    csv_before = read_output_csv(runtime, batch_id)

    assert routine.process_chunk(runtime, items, "w", runner, threads=2) == 0

    assert _stored_files(runtime) == files
    assert read_output_csv(runtime, batch_id) == csv_before
    batch = batch_of(runtime.sessions, batch_id)
    assert (batch.images_done, batch.images_failed, batch.images_total) == (2, 0, 2)


def test_an_image_whose_store_fails_for_good_fails_with_storage_error(
    runtime: Runtime,
    image_server: ImageServer,
    runner: TransformRunner,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    """A real S3 API (moto) that answers NoSuchBucket on every try: after the bounded
    retries the image fails with ``storage_error``, it is not silently lost."""
    from pixelbatch.storage.s3 import S3Location, S3Storage

    upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    [item] = claim_all(runtime, "w")
    gone = S3Storage(S3Location(s3_bucket + "-gone", ""), endpoint_url=s3_endpoint, max_attempts=2)

    outcome = routine.produce(item, runtime.fetcher, gone, runner)

    assert outcome.success is None
    assert outcome.error_code == "storage_error"
    assert outcome.error_message is not None and "no such bucket" in outcome.error_message
