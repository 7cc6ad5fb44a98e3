"""The page end to end, keys off: upload a CSV with good and broken images through the
page, watch it finish, find the failed images and their reasons, open before/after,
download the output CSV; hostile text stays text; nothing is requested from another host."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pixelbatch.demo.server import ImageServer
from tests import support
from tests.browser.conftest import XSS_NAME, Watched, catalog, server_env, watch

pytestmark = pytest.mark.e2e


def upload_through_page(w: Watched, csv_path: Path) -> str:
    """Pick the file, submit, and return the batch id the page moved to."""
    w.page.get_by_label("Catalog CSV").set_input_files(str(csv_path))
    w.page.get_by_role("button", name="Start batch").click()
    w.page.wait_for_url(re.compile(r"#/batches/[0-9a-f-]{36}$"))
    return w.page.url.rsplit("/", 1)[1]


def test_upload_watch_look_and_download(
    browser: Browser, server: support.ServerProcess, images: ImageServer, tmp_path: Path
) -> None:
    w = watch(browser, viewport={"width": 1280, "height": 900})
    page = w.page
    page.goto(server.base_url + "/")
    expect(page.get_by_role("heading", name="New batch")).to_be_visible()
    # The defaults are shown next to each option.
    expect(page.get_by_label("Relative quality (fraction of the source's quality)")).to_have_value(
        "0.5"
    )
    expect(page.get_by_label("Output format")).to_have_value("keep")
    expect(page.get_by_label("Priority")).to_have_value("normal")
    expect(page.get_by_label(re.compile("^Keep metadata"))).not_to_be_checked()
    w.screenshot("upload")
    # Every control of every view (hidden ones included) has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, progress')]
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map((e) => e.id || e.outerHTML)"""
    )
    assert unnamed == []

    csv_path = tmp_path / "catalog.csv"
    csv_path.write_bytes(catalog(images))
    batch_id = upload_through_page(w, csv_path)

    # Progress reaches the end without a reload.
    expect(page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)
    expect(page.locator("#stat-done")).to_have_text("3 of 5")
    expect(page.locator("#stat-failed")).to_have_text("2")
    expect(page.locator("#stat-pending")).to_have_text("0")
    expect(page.locator("#stat-eta")).to_have_text("finished")
    expect(page.locator("#stat-rate")).to_have_text(re.compile(r"images/s$"))
    expect(page.locator("#bytes-caption")).to_contain_text("saved")
    expect(page.locator("#bytes-chart rect.bar-saved")).to_have_count(1)
    rows = page.locator("#image-table tbody tr")
    expect(rows).to_have_count(5)
    # Thumbnails of the outputs, lazy, loaded from this server.
    thumbs = page.locator("#image-table img.thumb")
    expect(thumbs).to_have_count(3)
    assert thumbs.first.get_attribute("loading") == "lazy"
    expect(page.locator("#image-table tbody tr").first).to_contain_text("→")
    # The PNG no re-encode can shrink is stored as it came, and the table says so.
    expect(rows.filter(has_text="alpha.png")).to_contain_text("original kept")
    w.screenshot("batch")

    # The hostile product name is text in the table; no dialog, no injected element.
    expect(page.get_by_text(XSS_NAME, exact=True)).to_be_visible()
    assert page.locator("#image-table img[src='x']").count() == 0

    # Failed images only, each with its reason.
    page.get_by_label("Show").select_option("FAILED")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Red lamp")
    expect(rows.nth(0).locator(".reason")).to_contain_text(re.compile(r"\w+"))
    expect(rows.nth(1).locator(".reason")).to_contain_text(
        "unsupported_formatnot an image: looks like HTML"
    )
    w.screenshot("failed")

    # Before / after at full size: the original comes through the server, not the supplier.
    page.get_by_label("Show").select_option("")
    expect(rows).to_have_count(5)
    # By keyboard: the button takes focus and Enter opens the view; Escape closes it.
    page.get_by_role("button", name="Compare before and after: row 3, image 1").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#compare")
    expect(dialog).to_be_visible()
    page.wait_for_function(
        "() => document.getElementById('before-image').naturalWidth === 640"
        " && document.getElementById('after-image').naturalWidth === 640"
    )
    assert (page.locator("#before-image").get_attribute("src") or "").startswith("blob:")
    w.screenshot("compare")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # The output CSV downloaded through the page is the API's, byte for byte.
    with page.expect_download() as info:
        page.get_by_role("button", name="Download output CSV").click()
    downloaded = Path(info.value.path()).read_bytes()
    with server.client() as client:
        api_csv = client.get(f"/api/batches/{batch_id}/output.csv")
    assert api_csv.status_code == 200
    assert downloaded == api_csv.content
    assert XSS_NAME.encode() in downloaded

    # The batch list shows it; opening it from there comes back to the same view.
    page.get_by_role("link", name="Batches").click()
    expect(page.locator("#batch-table tbody tr")).to_have_count(1)
    w.screenshot("batches")
    page.get_by_role("link", name="catalog.csv").click()
    expect(page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS")

    assert w.dialogs == []
    assert w.errors == []
    assert w.foreign_requests(server.base_url) == []
    assert not any(images.base_url in url for url in w.requests)


def test_csv_problems_are_listed_by_row_and_column_before_anything_runs(
    browser: Browser, server: support.ServerProcess, images: ImageServer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        support.csv_bytes(
            [
                ["1", "", f"{images.base_url}/good-1.jpg"],
                ["2", "Lamp", "ftp://example.com/a.jpg"],
            ]
        )
    )
    w = watch(browser, viewport={"width": 390, "height": 844})  # a phone
    w.page.goto(server.base_url + "/")
    # Dropped on the drop zone, as a file dragged from the desktop is.
    w.page.evaluate(
        """(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "bad.csv", { type: "text/csv" }));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        }""",
        bad.read_text(),
    )
    assert w.page.evaluate("document.getElementById('csv-file').files[0].name") == "bad.csv"
    w.page.get_by_role("button", name="Start batch").click()
    problems = w.page.locator("#problem-table tbody tr")
    expect(problems).to_have_count(2)
    expect(problems.nth(0).locator("td").nth(0)).to_have_text("2")
    expect(problems.nth(0).locator("td").nth(1)).to_have_text("Product Name")
    expect(problems.nth(1).locator("td").nth(0)).to_have_text("3")
    expect(problems.nth(1).locator("td").nth(1)).to_have_text("Input Image Urls")
    expect(w.page.locator("#upload-error-message")).to_contain_text("CSV rejected")
    w.screenshot("csv-problems-phone")
    # Readable at a phone's width: nothing wider than the screen.
    assert w.page.evaluate("document.documentElement.scrollWidth") <= 390
    # Nothing ran: no batch was stored.
    with server.client() as client:
        assert client.get("/api/batches").json()["total"] == 0
    # An option the API refuses is shown the same way, by field.
    good = tmp_path / "good.csv"
    good.write_bytes(support.csv_bytes([["1", "Chair", f"{images.base_url}/good-1.jpg"]]))
    w.page.get_by_label("Catalog CSV").set_input_files(str(good))
    w.page.get_by_label("Absolute quality (1-100)").fill("80")
    w.page.get_by_label("Max width (px)").fill("0")
    w.page.get_by_role("button", name="Start batch").click()
    expect(w.page.locator("#problem-table tbody tr")).to_have_count(1)
    expect(w.page.locator("#problem-table")).to_contain_text("max_width")
    assert w.errors == [] and w.dialogs == []
    assert w.foreign_requests(server.base_url) == []


def test_the_watch_survives_a_server_restart_and_a_reload(
    browser: Browser, tmp_path: Path, images: ImageServer
) -> None:
    # Long enough for the slow image below (the shared setting fails reads after 2 s).
    env = {
        **server_env(images),
        "PIXELBATCH_FETCH_READ_TIMEOUT": "30",
        "PIXELBATCH_FETCH_TOTAL_TIMEOUT": "40",
    }

    server_gone = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        """Holds the batch open until the page has seen the server go, whatever the machine's
        speed: a batch that ended first would leave the page nothing to watch through the gap
        (a fixed sleep lost that race on a loaded CI machine)."""
        server_gone.wait(90)
        body = support.jpeg((200, 150))
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    images.add("/slow.jpg", slow)
    slow_row = support.csv_bytes([["4", "Slow stool", f"{images.base_url}/slow.jpg"]])
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        w = watch(browser)
        w.page.goto(proc.base_url + "/")
        csv_path = tmp_path / "catalog.csv"
        csv_path.write_bytes(catalog(images) + slow_row.split(b"\n", 1)[1])
        batch_id = upload_through_page(w, csv_path)
        # The server goes away: the page says so and keeps trying; it comes back on the
        # same address and the page follows the same batch to its end.
        proc.stop()
        expect(w.page.locator("#action-message")).to_have_text(re.compile("unreachable"))
        server_gone.set()
        proc = support.ServerProcess(tmp_path / "data", env, port=proc.port).start()
        expect(w.page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)
        # A reload opens the same batch again, from the address alone.
        w.page.reload()
        expect(w.page.locator("#batch-id")).to_contain_text(batch_id)
        expect(w.page.locator("#stat-failed")).to_have_text("2")
        assert w.dialogs == []
        assert w.foreign_requests(proc.base_url) == []
    finally:
        server_gone.set()
        proc.stop()
