"""A real browser (Debian's chromium, driven by Playwright) against a real ``pixelbatch
serve``, with images served from 127.0.0.1.

Every page a test opens is watched: each request it makes is recorded, so a test can assert
that the page talks to nobody but the server; every JavaScript dialog (``alert``) and page
error is recorded too, so an injected script or a broken module fails the test.
Screenshots go to ``browser-artifacts/`` at the repository root (gitignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from pixelbatch.demo.server import ImageServer, Route
from tests import support

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "browser-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>"

# Generous on a loaded machine: a real server answers each step, not a mock.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: make system-packages installs it")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Watched:
    """A page and everything it did."""

    page: Page
    accept_dialogs: bool = False  # confirm() answers yes; else every dialog is dismissed
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign_requests(self, origin: str) -> list[str]:
        """Requests to anything but ``origin`` (blob: and data: URLs stay in the page)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("blob", "data")
            and f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != origin
        ]

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def watch(browser: Browser, **context: object) -> Watched:
    ctx = browser.new_context(accept_downloads=True, **context)  # type: ignore[arg-type]
    page = ctx.new_page()
    watched = Watched(page)
    page.on("request", lambda request: watched.requests.append(request.url))

    def on_dialog(dialog: object) -> None:
        watched.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        if watched.accept_dialogs:
            dialog.accept()  # type: ignore[attr-defined]
        else:
            dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    page.set_default_timeout(20_000)
    return watched


@pytest.fixture
def images() -> Iterator[ImageServer]:
    """Stands in for the suppliers' hosts: two good images and two broken ones."""
    server = ImageServer()
    q90 = support.jpeg((800, 600), quality=90)
    server.add("/good-1.jpg", Route(q90, "image/jpeg"))
    server.add("/good-2.jpg", Route(support.jpeg((640, 480), quality=92, seed=4), "image/jpeg"))
    server.add("/alpha.png", Route(support.png_with_alpha(), "image/png"))
    server.add("/truncated.jpg", Route(q90[: len(q90) // 3], "image/jpeg"))
    server.add("/page.jpg", Route(b"<!doctype html><p>Sorry</p>", "image/jpeg"))
    with server:
        yield server


def server_env(images: ImageServer) -> dict[str, str]:
    return {
        "PIXELBATCH_FETCH_ALLOW": images.allow_entry,
        "PIXELBATCH_FETCH_READ_TIMEOUT": "2",
        "PIXELBATCH_FETCH_TOTAL_TIMEOUT": "5",
        "PIXELBATCH_FETCH_RETRIES": "0",
    }


@pytest.fixture
def server(tmp_path: Path, images: ImageServer) -> Iterator[support.ServerProcess]:
    proc = support.ServerProcess(tmp_path / "data", server_env(images)).start()
    try:
        yield proc
    finally:
        proc.stop()


def catalog(images: ImageServer) -> bytes:
    """Three products: all good; one good and one truncated; a hostile name and a page
    served as an image."""
    base = images.base_url
    return support.csv_bytes(
        [
            ["1", "Blue chair", f"{base}/good-1.jpg,{base}/alpha.png"],
            ["2", "Red lamp", f"{base}/good-2.jpg,{base}/truncated.jpg"],
            ["3", XSS_NAME, f"{base}/page.jpg"],
        ]
    )
