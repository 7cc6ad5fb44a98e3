"""The embedded worker's recorder: what finished together is committed together, leases
are kept until then, and a batch it completes is finalised."""

from __future__ import annotations

import time

import pytest

from pixelbatch.db.models import BatchStatus
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs import recorder as recorder_module
from pixelbatch.jobs import routine
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.jobs.recorder import GroupRecorder
from pixelbatch.jobs.recording import Outcome
from pixelbatch.jobs.transform_pool import inline_runner
from pixelbatch.runtime import Runtime
from tests.unit.jobs.helpers import (
    batch_of,
    claim_all,
    commits_of,
    image_statuses,
    upload,
    urls,
    wait_for,
)


def test_outcomes_waiting_together_are_recorded_in_one_commit_then_the_batch_finalised(
    runtime: Runtime, image_server: ImageServer
) -> None:
    batch_id = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")],
            ["2", "Lamp", urls(image_server, "/c.png", "/missing.jpg")],
            ["3", "Rug", urls(image_server, "/b.jpg?rug")],
        ],
    )
    *together, last = claim_all(runtime, "w")
    runner = inline_runner(runtime.settings.max_pixels)
    leases = LeaseKeeper(runtime, "w")
    leases.hold(item.id for item in [*together, last])
    woken: list[int] = []
    recorder = GroupRecorder(runtime, "w", leases, lambda: woken.append(len(leases)))
    for item in together:  # all four are waiting when the recorder starts
        recorder.submit(routine.produce(item, runtime.fetcher, runtime.storage, runner))
    with commits_of(runtime.engine) as commits:
        recorder.start()
        wait_for(lambda: bool(woken))
    assert len(commits) == 1
    assert woken == [1]  # told once, the four leases released by then
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 3, "FAILED": 1, "PROCESSING": 1}
    assert batch_of(runtime.sessions, batch_id).status == BatchStatus.PROCESSING

    recorder.submit(routine.produce(last, runtime.fetcher, runtime.storage, runner))
    recorder.stop()  # records what was submitted, waits for the finalisation it started

    batch = batch_of(runtime.sessions, batch_id)
    assert batch.status == BatchStatus.COMPLETED_WITH_ERRORS
    assert batch.output_key == f"{batch_id}/output.csv"
    assert (batch.images_done, batch.images_failed) == (4, 1)
    assert woken == [1, 0]


class _TwoLeased:
    """A two-image batch, both images claimed and leased by a recorder not yet started,
    which notes the leases still held each time it has recorded a group."""

    def __init__(self, runtime: Runtime, image_server: ImageServer) -> None:
        self.runtime = runtime
        self.batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")]])
        self.items = claim_all(runtime, "w")
        self.runner = inline_runner(runtime.settings.max_pixels)
        leases = LeaseKeeper(runtime, "w")
        leases.hold(item.id for item in self.items)
        self.recorded: list[int] = []
        self.recorder = GroupRecorder(
            runtime, "w", leases, lambda: self.recorded.append(len(leases))
        )

    def produce(self, index: int) -> Outcome:
        runtime = self.runtime
        return routine.produce(self.items[index], runtime.fetcher, runtime.storage, self.runner)


def test_a_lone_outcome_is_recorded_when_its_group_window_closes(
    runtime: Runtime, image_server: ImageServer
) -> None:
    two = _TwoLeased(runtime, image_server)
    batch_id, recorder, recorded = two.batch_id, two.recorder, two.recorded
    recorder.start()
    try:
        recorder.submit(two.produce(0))
        wait_for(lambda: recorded == [1])
        assert image_statuses(runtime.sessions, batch_id) == {"DONE": 1, "PROCESSING": 1}
        assert batch_of(runtime.sessions, batch_id).status == BatchStatus.PROCESSING
    finally:
        recorder.stop()


def test_a_group_holding_every_leased_image_is_recorded_without_waiting_out_its_window(
    runtime: Runtime, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "GROUP_WINDOW", 600.0)  # never closes by time here
    two = _TwoLeased(runtime, image_server)
    batch_id, recorder, recorded = two.batch_id, two.recorder, two.recorded
    recorder.start()
    try:
        recorder.submit(two.produce(0))
        time.sleep(0.3)
        assert recorded == []  # the second leased image may still join this group
        recorder.submit(two.produce(1))
        wait_for(lambda: recorded == [0])  # one group, both leases released by then
        assert image_statuses(runtime.sessions, batch_id) == {"DONE": 2}
    finally:
        recorder.stop()
