"""Priorities in the distributed mode: real Celery workers lease from PostgreSQL through the
same ``claim_images`` as the embedded runner, so a high batch overtakes there too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pixelbatch.demo.server import ImageServer
from tests import priority_checks as checks
from tests.distributed.conftest import Cluster


@pytest.fixture
def photos() -> Iterator[ImageServer]:
    with checks.photo_server(latency=0.1) as server:
        yield server


def test_a_high_batch_overtakes_a_large_normal_one_on_two_workers(
    cluster: Cluster, photos: ImageServer
) -> None:
    cluster.env["PIXELBATCH_FETCH_ALLOW"] = photos.allow_entry
    cluster.env["PIXELBATCH_LEASE_SECONDS"] = "10"
    cluster.migrate()
    api = cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    with api.client() as client:
        # Two workers of one process each, chunks of 8 (the cluster's settings): 16 slots.
        result = checks.high_overtakes_normal(client, photos, big_images=480, slots=16)
    assert result["high"]["counts"]["images_done"] == 10
