"""Deleting a batch in process, on SQLite and PostgreSQL: rows and objects go, a worker in
flight leaves no orphan object, a finaliser racing the delete leaves no CSV, retention takes
only old finished batches, ``delete_prefix`` stays inside its prefix."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from pixelbatch import batches
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, Image, Product, WebhookDelivery, utcnow
from pixelbatch.demo.server import ImageServer
from pixelbatch.errors import InvalidInput, NotFound, PixelbatchError
from pixelbatch.jobs import finalize, recording, routine
from pixelbatch.jobs.removal import remove_batch, remove_expired
from pixelbatch.jobs.transform_pool import inline_runner
from pixelbatch.runtime import Runtime
from tests.unit.jobs.helpers import RuntimeFactory, claim_all, record_all, upload, urls


def _objects(runtime: Runtime, batch_id: uuid.UUID) -> list[str]:
    folder = runtime.settings.outputs_dir / str(batch_id)
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _row_counts(runtime: Runtime, batch_id: uuid.UUID) -> list[int]:
    with transaction(runtime.sessions) as session:
        return [
            session.scalar(select(func.count()).select_from(model).where(column == batch_id)) or 0
            for model, column in (
                (Batch, Batch.id),
                (Product, Product.batch_id),
                (Image, Image.batch_id),
                (WebhookDelivery, WebhookDelivery.batch_id),
            )
        ]


def _finished_batch(runtime: Runtime, image_server: ImageServer) -> uuid.UUID:
    rows = [
        ["1", "A", urls(image_server, "/a.jpg", "/b.jpg")],
        ["2", "B", urls(image_server, "/a.jpg")],
    ]
    batch_id = upload(runtime, rows, webhook_url=f"{image_server.base_url}/hook")
    record_all(runtime)
    assert finalize.finalize_batch(runtime, batch_id)
    return batch_id


def test_delete_removes_rows_and_objects_of_that_batch_only(
    runtime: Runtime, image_server: ImageServer
) -> None:
    doomed, kept = _finished_batch(runtime, image_server), _finished_batch(runtime, image_server)
    assert _row_counts(runtime, doomed) == [1, 2, 3, 1]
    assert set(_objects(runtime, doomed)) >= {"input.csv", "output.csv"}
    kept_objects = _objects(runtime, kept)

    removed = batches.delete_batch(runtime, doomed, tenant="")

    assert removed == 4  # input CSV, output CSV, two distinct outputs (a repeat shares one)
    assert _objects(runtime, doomed) == [] and _row_counts(runtime, doomed) == [0, 0, 0, 0]
    assert _row_counts(runtime, kept) == [1, 2, 3, 1] and _objects(runtime, kept) == kept_objects
    with pytest.raises(NotFound):
        batches.get_batch(runtime, doomed, tenant="")
    with pytest.raises(NotFound):
        batches.delete_batch(runtime, doomed, tenant=None)


def test_another_tenants_delete_is_not_found_and_changes_nothing(
    runtime: Runtime, image_server: ImageServer
) -> None:
    batch_id = _finished_batch(runtime, image_server)
    with pytest.raises(NotFound, match=f"no batch with request id {batch_id}"):
        batches.delete_batch(runtime, batch_id, tenant="globex")
    assert _row_counts(runtime, batch_id) == [1, 2, 3, 1]


def test_an_image_stored_after_its_batch_was_deleted_is_removed_by_its_worker(
    runtime: Runtime, image_server: ImageServer
) -> None:
    """The delete lands between the worker's last stage boundary and its store: the
    recording finds the image gone and removes what it stored."""
    batch_id = upload(runtime, [["1", "A", urls(image_server, "/a.jpg")]])
    (item,) = claim_all(runtime, "w")
    remove_batch(runtime, batch_id)
    outcome = routine.produce(item, runtime.fetcher, runtime.storage, inline_runner(10**8))
    assert outcome.success is not None and _objects(runtime, batch_id) != []

    assert recording.record(runtime.sessions, outcome, "w", runtime.storage) is False
    assert [name for name in _objects(runtime, batch_id) if "." in name] == []


def test_a_finaliser_that_finds_its_batch_deleted_removes_its_csv(
    runtime: Runtime, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = upload(runtime, [["1", "A", urls(image_server, "/a.jpg")]])
    record_all(runtime)
    real_put = runtime.storage.put_file

    def put_then_delete(*args: object, **kwargs: object) -> object:
        stored = real_put(*args, **kwargs)  # type: ignore[arg-type]
        remove_batch(runtime, batch_id)  # the delete lands right after the CSV is stored
        return stored

    # Only the timing is arranged: the storage, database and finaliser are the real ones.
    monkeypatch.setattr(runtime.storage, "put_file", put_then_delete)
    assert finalize.finalize_batch(runtime, batch_id) is False
    assert not (runtime.settings.outputs_dir / str(batch_id) / "output.csv").exists()


def test_a_csv_stored_between_the_deletes_sweep_and_its_rows_is_removed(
    runtime: Runtime, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the delete sweeps the batch's objects, the finaliser then stores its
    CSV and completes the batch (its rows still there), and only then do the rows go. The
    delete sweeps again after the rows, so the CSV does not outlive its batch."""
    batch_id = upload(runtime, [["1", "A", urls(image_server, "/a.jpg")]])
    record_all(runtime)
    real_sweep = runtime.storage.delete_prefix
    finalised: list[bool] = []

    def sweep_then_finalise(prefix: str) -> int:
        removed = real_sweep(prefix)
        if not finalised:  # the finaliser runs whole right after the delete's first sweep
            finalised.append(finalize.finalize_batch(runtime, batch_id))
        return removed

    monkeypatch.setattr(runtime.storage, "delete_prefix", sweep_then_finalise)
    remove_batch(runtime, batch_id)
    assert finalised == [True]  # it found its batch and completed it
    assert _objects(runtime, batch_id) == []
    assert _row_counts(runtime, batch_id) == [0, 0, 0, 0]


def test_retention_deletes_only_finished_batches_older_than_its_days(
    make_runtime: RuntimeFactory, image_server: ImageServer
) -> None:
    runtime = make_runtime(retention_days=7)
    old, recent = _finished_batch(runtime, image_server), _finished_batch(runtime, image_server)
    running = upload(runtime, [["1", "A", urls(image_server, "/a.jpg")]])
    with transaction(runtime.sessions) as session:
        long_ago = utcnow() - timedelta(days=8)
        session.execute(
            update(Batch)
            .where(Batch.id.in_([old, running]))
            .values(finished_at=long_ago, created_at=long_ago)
        )

    assert remove_expired(runtime) == [old]
    assert _row_counts(runtime, old) == [0, 0, 0, 0] and _objects(runtime, old) == []
    assert _row_counts(runtime, recent)[0] == 1 and _row_counts(runtime, running)[0] == 1
    assert remove_expired(runtime) == []
    assert remove_expired(make_runtime()) == []  # off by default


def test_retention_goes_past_a_batch_whose_objects_cannot_be_removed(
    make_runtime: RuntimeFactory, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(retention_days=7)
    stuck, other = _finished_batch(runtime, image_server), _finished_batch(runtime, image_server)
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Batch)
            .where(Batch.id.in_([stuck, other]))
            .values(finished_at=utcnow() - timedelta(days=8))
        )
    real_delete_prefix = runtime.storage.delete_prefix

    def failing_for_stuck(prefix: str) -> int:
        if prefix.startswith(str(stuck)):
            raise PixelbatchError("the store refused", code="storage_error")
        return real_delete_prefix(prefix)

    monkeypatch.setattr(runtime.storage, "delete_prefix", failing_for_stuck)
    assert remove_expired(runtime) == [other]
    assert _row_counts(runtime, other)[0] == 0 and _row_counts(runtime, stuck)[0] == 1
    monkeypatch.setattr(runtime.storage, "delete_prefix", real_delete_prefix)
    assert remove_expired(runtime) == [stuck]  # taken again once the store answers


def test_delete_prefix_stays_inside_its_prefix(runtime: Runtime) -> None:
    storage = runtime.storage
    storage.put("abc/x.jpg", b"1", "image/jpeg")
    storage.put("abc/sub/y.jpg", b"2", "image/jpeg")
    storage.put("abcd/z.jpg", b"3", "image/jpeg")
    assert storage.delete_prefix("abc/") == 2
    assert storage.delete_prefix("abc/") == 0
    assert storage.local_path("abcd/z.jpg") is not None
    for bad in ("abc", "../", "/etc/", ""):
        with pytest.raises(InvalidInput):
            storage.delete_prefix(bad)
