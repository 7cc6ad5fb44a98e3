"""The page with API keys on: it asks for a key, keeps it in the tab's session storage,
sends it only as a header, and shows each tenant its own batches only. And the API docs,
which render from this server's own assets with nothing fetched from another host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Route, expect

from pixelbatch.demo.server import ImageServer
from tests import support
from tests.browser.conftest import Watched, catalog, server_env, watch
from tests.integration.test_auth import create_key

pytestmark = pytest.mark.e2e

KeyedServer = tuple[support.ServerProcess, dict[str, str]]


@pytest.fixture
def keyed_server(tmp_path: Path, images: ImageServer) -> Iterator[KeyedServer]:
    data_dir = tmp_path / "data"
    env = {**server_env(images), "PIXELBATCH_DATA_DIR": str(data_dir), "PIXELBATCH_AUTH": "on"}
    keys = {name: create_key(env, name)[0] for name in ("acme", "globex")}
    proc = support.ServerProcess(data_dir, env).start()
    try:
        yield proc, keys
    finally:
        proc.stop()


def enter_key(w: Watched, key: str) -> None:
    expect(w.page.get_by_role("heading", name="API key")).to_be_visible()
    w.page.get_by_role("textbox", name="API key").fill(key)
    w.page.get_by_role("button", name="Use this key").click()


def test_key_prompt_and_tenant_isolation(
    browser: Browser, keyed_server: KeyedServer, images: ImageServer, tmp_path: Path
) -> None:
    server, keys = keyed_server
    acme = watch(browser)
    acme.page.goto(server.base_url + "/")
    expect(acme.page.get_by_role("heading", name="API key")).to_be_visible()
    acme.screenshot("key-prompt")
    enter_key(acme, "pb_not-a-real-key")
    expect(acme.page.locator("#key-error")).to_contain_text("That key was refused")
    enter_key(acme, keys["acme"])
    expect(acme.page.get_by_role("heading", name="New batch")).to_be_visible()
    assert acme.page.evaluate("sessionStorage.getItem('pixelbatch.apiKey')") == keys["acme"]
    assert acme.page.evaluate("localStorage.length") == 0

    csv_path = tmp_path / "catalog.csv"
    csv_path.write_bytes(catalog(images))
    acme.page.get_by_label("Catalog CSV").set_input_files(str(csv_path))
    acme.page.get_by_role("button", name="Start batch").click()
    acme.page.wait_for_url(re.compile(r"#/batches/[0-9a-f-]{36}$"))
    batch_url = acme.page.url
    expect(acme.page.locator("#stat-status")).to_have_text("COMPLETED_WITH_ERRORS", timeout=60_000)
    # Thumbnails load through the signed URLs the API hands out; the original with the key.
    acme.page.wait_for_function(
        "() => [...document.querySelectorAll('#image-table img.thumb')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    acme.page.get_by_role("button", name="Compare before and after: row 2, image 1").click()
    acme.page.wait_for_function("() => document.getElementById('before-image').naturalWidth > 0")
    acme.page.keyboard.press("Escape")

    # Another tenant, in its own browser session: none of acme's batches.
    globex = watch(browser)
    globex.page.goto(server.base_url + "/#/batches")
    enter_key(globex, keys["globex"])
    expect(globex.page.locator("#batch-empty")).to_be_visible()
    expect(globex.page.locator("#batch-table tbody tr")).to_have_count(0)
    globex.page.goto(batch_url)
    expect(globex.page.locator("#notice")).to_contain_text("Not found")
    expect(globex.page.locator("#image-table tbody tr")).to_have_count(0)
    # Forgetting the key brings the prompt back.
    globex.page.get_by_role("button", name="Forget key").click()
    expect(globex.page.get_by_role("heading", name="API key")).to_be_visible()
    assert globex.page.evaluate("sessionStorage.length") == 0

    acme.page.get_by_role("link", name="Batches").click()
    expect(acme.page.locator("#batch-table tbody tr")).to_have_count(1)

    for w in (acme, globex):
        assert w.dialogs == [] and w.errors == []
        assert w.foreign_requests(server.base_url) == []
        for key in keys.values():
            assert not any(key in url for url in w.requests)


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".swagger-ui .info"), ("/redoc", "h1")])
def test_api_docs_render_offline(
    browser: Browser, server: support.ServerProcess, path: str, rendered: str
) -> None:
    w = watch(browser)
    blocked: list[str] = []

    def offline(route: Route) -> None:
        """Everything off this server fails, as it would on a machine without internet."""
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    w.page.route("**/*", offline)
    violations: list[str] = []
    w.page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    w.page.goto(server.base_url + path)
    expect(w.page.locator(rendered).first).to_contain_text("pixelbatch", timeout=30_000)
    if path == "/docs":
        expect(w.page.locator(".opblock").first).to_be_visible()
        expect(w.page.get_by_text("/api/upload", exact=True)).to_be_visible()
    w.screenshot(path.strip("/"), full_page=False)
    assert blocked == []
    assert w.foreign_requests(server.base_url) == []
    assert violations == []
    assert w.errors == []
