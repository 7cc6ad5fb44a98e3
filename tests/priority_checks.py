"""The priority and fairness scenarios, shared by the embedded and the distributed suites:
each drives a running API over HTTP and reads what happened from the API's per-image
detail (finish timestamps), so both modes are held to the same assertions."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from pixelbatch.demo.server import ImageServer, Route
from tests import support

PHOTOS = 40


def photo_server(latency: float) -> ImageServer:
    """A slow image server: every request waits ``latency`` seconds, so a large batch keeps
    the workers busy long enough to be overtaken."""
    server = ImageServer(latency=latency)
    for i in range(PHOTOS):
        server.add(f"/p{i}.jpg", Route(support.jpeg((160, 120), seed=i), "image/jpeg"))
    return server


def catalog(server: ImageServer, images: int, tag: str) -> bytes:
    """``images`` distinct URLs (a query string per image, so none is a repeat)."""
    rows = [
        [str(i), f"{tag} {i}", f"{server.base_url}/p{i % PHOTOS}.jpg?{tag}={i}"]
        for i in range(images)
    ]
    return support.csv_bytes(rows)


def upload(
    client: httpx.Client, body: bytes, priority: str | None = None, key: str | None = None
) -> str:
    data = {"priority": priority} if priority else {}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = client.post(
        "/api/upload", files={"file": ("c.csv", body)}, data=data, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def finish_times(client: httpx.Client, request_id: str, key: str | None = None) -> list[datetime]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    times: list[datetime] = []
    offset = 0
    while True:
        page = client.get(
            f"/api/batches/{request_id}/images",
            params={"offset": offset, "limit": 1000},
            headers=headers,
        ).json()
        for item in page["items"]:
            assert item["status"] == "DONE", item
            times.append(datetime.fromisoformat(item["finished_at"]))
        offset += len(page["items"])
        if offset >= page["total"]:
            return sorted(times)


def wait_started(client: httpx.Client, request_id: str, done: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/api/status/{request_id}").json()["counts"]["images_done"] >= done:
            return
        time.sleep(0.05)
    raise AssertionError(f"batch {request_id} did not start")


def high_overtakes_normal(
    client: httpx.Client, server: ImageServer, big_images: int, slots: int
) -> dict[str, Any]:
    """Upload a large normal batch, then, once it runs, a 10-image high one; both are
    awaited. Checks the high batch finished first, started at once and left most of the
    large batch's images for after it, finishing no more of the large batch meanwhile than
    its workers' ``slots`` (images in flight at once) allow; returns the two statuses."""
    big = upload(client, catalog(server, big_images, "big"))
    wait_started(client, big, done=4)
    high = upload(client, catalog(server, 10, "urgent"), priority="high")
    high_status = support.wait_final(client, high, timeout=120)
    big_at_high_finish = client.get(f"/api/status/{big}").json()
    big_status = support.wait_final(client, big, timeout=300)
    assert high_status["status"] == big_status["status"] == "COMPLETED"
    assert high_status["priority"] == "high" and big_status["priority"] == "normal"
    assert big_at_high_finish["status"] == "PROCESSING", "the high batch waited for the big one"
    high_done = finish_times(client, high)
    big_done = finish_times(client, big)
    high_created = datetime.fromisoformat(high_status["created_at"])
    high_started = datetime.fromisoformat(high_status["started_at"])
    assert high_done[-1] < big_done[-1]
    later = sum(1 for t in big_done if t > high_done[-1])
    assert later >= big_images // 2, (
        f"only {later} of the big batch's {big_images} images finished after the high batch"
    )
    # Leased at once: the high batch's first lease came before the big batch finished
    # even a tenth of its images after that upload.
    big_after_upload = [t for t in big_done if t > high_created]
    assert high_started < big_after_upload[big_images // 10], (high_started, high_created)
    # While the high batch ran, the big one finished only what it already held when the
    # high one arrived, and what filled the slots beside the high batch's last images.
    during = sum(1 for t in big_done if high_started <= t <= high_done[-1])
    assert during <= 2 * slots, (
        f"the big batch finished {during} images while the high one ran (its workers hold"
        f" {slots} at a time)"
    )
    return {"high": high_status, "big": big_status}


def tenants_share_evenly(base_url: str, server: ImageServer, one: str, many: str) -> None:
    """Tenant ``one`` (key) uploads one 160-image batch, tenant ``many`` eight of 20; over
    the window from the last upload until the first tenant runs out of work, each tenant's
    finished images are within 20% of the other's."""
    clients = {
        key: httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for key in (one, many)
    }
    try:
        single = upload(clients[one], catalog(server, 160, "one"))
        split = [upload(clients[many], catalog(server, 20, f"many{k}")) for k in range(8)]
        window_start = datetime.now().astimezone()
        finals = [support.wait_final(clients[one], single, timeout=300)]
        finals += [support.wait_final(clients[many], b, timeout=300) for b in split]
        assert {f["status"] for f in finals} == {"COMPLETED"}
        done_one = finish_times(clients[one], single)
        done_many = sorted(t for b in split for t in finish_times(clients[many], b))
    finally:
        for client in clients.values():
            client.close()
    # The window ends before the first tenant ran out of work (its last image recorded).
    window_end = min(done_one[-1], done_many[-1]) - timedelta(seconds=0.5)
    in_one = sum(1 for t in done_one if window_start <= t <= window_end)
    in_many = sum(1 for t in done_many if window_start <= t <= window_end)
    assert in_one + in_many >= 60, (in_one, in_many, window_start, window_end)
    assert in_many > 0, "the tenant with many batches got nothing"
    ratio = in_one / in_many
    print(f"tenant shares over the window: {in_one} vs {in_many} images (x{ratio:.2f})")
    assert 0.8 <= ratio <= 1.2, f"tenant shares {in_one} vs {in_many} (8 batches)"
