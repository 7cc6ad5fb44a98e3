"""Acting on batches from the page: retry the failed images, cancel a running batch, page
through a batch's images and through the batches, filter both by status."""

from __future__ import annotations

import re
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from pixelbatch.demo.server import ImageServer
from tests import support
from tests.browser.conftest import catalog, watch
from tests.browser.test_ui_batch import upload_through_page

pytestmark = pytest.mark.e2e


def test_retry_then_cancel_from_the_page(
    browser: Browser, server: support.ServerProcess, images: ImageServer, tmp_path: Path
) -> None:
    w = watch(browser, viewport={"width": 390, "height": 844})  # a phone
    w.page.goto(server.base_url + "/")
    csv_path = tmp_path / "catalog.csv"
    csv_path.write_bytes(catalog(images))
    upload_through_page(w, csv_path)
    expect(w.page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)
    expect(w.page.locator("#image-table tbody tr")).to_have_count(5)
    # Readable at a phone's width: the wide table scrolls in its own box, the page does not.
    assert w.page.evaluate("document.documentElement.scrollWidth") <= 390
    w.screenshot("batch-phone")
    expect(w.page.get_by_role("button", name="Cancel batch")).to_be_disabled()
    w.page.get_by_role("button", name="Retry failed images").click()
    expect(w.page.locator("#action-message")).to_have_text("2 image(s) queued again.")
    # The two broken images fail again, and the batch ends as it did.
    expect(w.page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)
    expect(w.page.locator("#stat-failed")).to_have_text("2")

    # A slow batch, cancelled from the page while it runs.
    gate = 3.0

    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(gate)
        body = support.jpeg((200, 150))
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    rows = []
    for n in range(40):
        images.add(f"/slow-{n}.jpg", slow)
        rows.append([str(n + 1), f"Slow {n}", f"{images.base_url}/slow-{n}.jpg"])
    slow_csv = tmp_path / "slow.csv"
    slow_csv.write_bytes(support.csv_bytes(rows))
    w.page.goto(server.base_url + "/")
    upload_through_page(w, slow_csv)
    cancel = w.page.get_by_role("button", name="Cancel batch")
    expect(cancel).to_be_enabled()
    w.accept_dialogs = True
    cancel.click()
    expect(w.page.locator("#stat-status")).to_have_text("CANCELLED", timeout=30_000)
    assert w.dialogs == ["Cancel this batch? Images not yet processed will not be."]
    expect(w.page.get_by_role("button", name="Download output CSV")).to_be_enabled()
    expect(w.page.get_by_role("button", name="Retry failed images")).to_be_disabled()
    assert int(w.page.locator("#stat-pending").inner_text()) > 0

    # Deleted from the page: gone from the list and from the API.
    cancelled_id = w.page.url.rsplit("/", 1)[1]
    w.page.get_by_role("button", name="Delete batch").click()
    w.page.wait_for_url(re.compile(r"#/batches$"))
    assert w.dialogs[-1].startswith("Delete this batch?")
    expect(w.page.locator("#batch-table tbody tr")).to_have_count(1)
    expect(w.page.locator(f"#batch-table a[href$='{cancelled_id}']")).to_have_count(0)
    assert httpx.get(f"{server.base_url}/api/status/{cancelled_id}").status_code == 404
    assert w.errors == []
    assert w.foreign_requests(server.base_url) == []


def test_images_and_batches_are_paged_and_filtered(
    browser: Browser, server: support.ServerProcess, images: ImageServer, tmp_path: Path
) -> None:
    w = watch(browser)
    w.page.goto(server.base_url + "/")
    first = tmp_path / "broken.csv"
    first.write_bytes(catalog(images))
    upload_through_page(w, first)
    expect(w.page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)

    many = tmp_path / "many.csv"
    base = images.base_url
    many.write_bytes(
        support.csv_bytes([[str(n), f"Chair {n}", f"{base}/good-1.jpg"] for n in range(1, 62)])
    )
    w.page.goto(server.base_url + "/")
    upload_through_page(w, many)
    expect(w.page.locator("#stat-status")).to_have_text("COMPLETED", timeout=90_000)
    rows = w.page.locator("#image-table tbody tr")
    pager = w.page.locator("#image-pager span")
    expect(rows).to_have_count(50)
    expect(pager).to_have_text("1\u201350 of 61")
    previous = w.page.locator("#image-pager").get_by_role("button", name="Previous")
    following = w.page.locator("#image-pager").get_by_role("button", name="Next")
    expect(previous).to_be_disabled()
    following.click()
    expect(rows).to_have_count(11)
    expect(pager).to_have_text("51\u201361 of 61")
    expect(rows.last).to_contain_text("Chair 61")
    expect(following).to_be_disabled()
    previous.click()
    expect(rows.first).to_contain_text("Chair 1")

    # The list: newest first; the status filter narrows it.
    w.page.get_by_role("link", name="Batches").click()
    listed = w.page.locator("#batch-table tbody tr")
    expect(listed).to_have_count(2)
    expect(listed.nth(0)).to_contain_text("many.csv")
    expect(listed.nth(1)).to_contain_text("broken.csv")
    w.page.get_by_label("Status").select_option("COMPLETED_WITH_ERRORS")
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text("broken.csv")
    w.page.get_by_label("Status").select_option("CANCELLED")
    expect(w.page.locator("#batch-empty")).to_be_visible()
    expect(w.page.locator("#batch-pager span")).to_have_text(re.compile("none"))
    assert w.errors == [] and w.dialogs == []
    assert w.foreign_requests(server.base_url) == []


def test_the_priority_chosen_on_the_page_is_the_batch_s(
    browser: Browser, server: support.ServerProcess, images: ImageServer, tmp_path: Path
) -> None:
    """The page sends the priority picked (the default, normal, is the API's too) and the
    batch view shows the priority the API recorded."""
    w = watch(browser)
    w.page.goto(server.base_url + "/")
    control = w.page.get_by_label("Priority")
    expect(control).to_have_value("normal")
    csv_path = tmp_path / "one.csv"
    csv_path.write_bytes(support.csv_bytes([["1", "Chair", f"{images.base_url}/good-1.jpg"]]))
    control.select_option("high")
    batch_id = upload_through_page(w, csv_path)
    expect(w.page.locator("#stat-priority")).to_have_text("high")
    with server.client() as client:
        assert client.get(f"/api/status/{batch_id}").json()["priority"] == "high"
    expect(w.page.locator("#stat-status")).to_have_text("COMPLETED", timeout=60_000)
    assert w.errors == [] and w.dialogs == []
