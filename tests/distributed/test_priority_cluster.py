"""Priorities in the distributed mode: real Celery workers lease from PostgreSQL through the
same ``claim_images`` as the embedded runner, so a high batch overtakes there too."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pixelbatch.demo.server import ImageServer
from pixelbatch.secrets import new_secret
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


def _key(cluster: Cluster, name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pixelbatch", "keys", "create", "--name", name],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"api key:\s+(pb_\S+)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_two_tenants_share_two_workers_evenly_whatever_their_batch_counts(
    cluster: Cluster, photos: ImageServer
) -> None:
    cluster.env["PIXELBATCH_FETCH_ALLOW"] = photos.allow_entry
    cluster.env["PIXELBATCH_LEASE_SECONDS"] = "10"
    cluster.env["PIXELBATCH_AUTH"] = "on"
    # With keys on, every process of a deployment shares the URL-signing secret.
    cluster.env["PIXELBATCH_SECRET_KEY"] = new_secret()
    cluster.migrate()
    one, many = _key(cluster, "one"), _key(cluster, "many")
    api = cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    # Chunks of 8 on two workers: each claim splits its chunk between the tenants.
    checks.tenants_share_evenly(api.base_url, photos, one, many)
