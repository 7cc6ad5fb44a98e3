"""The page with outputs in an object store (moto's S3 server on 127.0.0.1): thumbnails and
the "after" image come straight from the store's presigned URLs, the one other origin the
page's CSP names; nothing else leaves the server, and no CSP violation is reported."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, expect

from pixelbatch.demo.server import ImageServer
from tests import s3server, support
from tests.browser.conftest import catalog, server_env, watch

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3_server(
    tmp_path: Path, images: ImageServer, s3_endpoint: str, s3_bucket: str
) -> Iterator[support.ServerProcess]:
    env = {
        **server_env(images),
        "PIXELBATCH_STORAGE_URL": f"s3://{s3_bucket}/out",
        "PIXELBATCH_S3_ENDPOINT_URL": s3_endpoint,
        "PIXELBATCH_S3_REGION": s3server.REGION,
        **s3server.CREDENTIALS,
    }
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_thumbnails_and_after_image_load_from_the_store(
    browser: Browser, s3_server: support.ServerProcess, images: ImageServer, s3_endpoint: str
) -> None:
    with httpx.Client(base_url=s3_server.base_url, timeout=30) as client:
        answer = client.post("/api/upload", files={"file": ("c.csv", catalog(images))})
        assert answer.status_code == 202, answer.text
        batch_id = answer.json()["request_id"]
        assert support.wait_final(client, batch_id)["status"] == "COMPLETED_WITH_ERRORS"
        page_answer = client.get("/")
    store = f"{urlsplit(s3_endpoint).scheme}://{urlsplit(s3_endpoint).netloc}"
    csp = page_answer.headers["content-security-policy"]
    assert re.search(rf"img-src 'self' blob: data: {re.escape(store)};", csp), csp
    assert "connect-src 'self';" in csp  # the store is for images only

    w = watch(browser)
    violations: list[str] = []
    w.page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    w.page.goto(f"{s3_server.base_url}/#/batches/{batch_id}")
    thumbs = w.page.locator("#image-table img.thumb")
    expect(thumbs).to_have_count(3)
    for src in thumbs.evaluate_all("(imgs) => imgs.map((img) => img.src)"):
        assert src.startswith(store + "/"), src
        assert "X-Amz-Signature=" in src
    w.page.wait_for_function(
        "() => [...document.querySelectorAll('#image-table img.thumb')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    w.page.get_by_role("button", name=re.compile(r"^Compare before and after")).first.click()
    w.page.wait_for_function("() => document.getElementById('after-image').naturalWidth > 0")
    w.page.wait_for_function("() => document.getElementById('before-image').naturalWidth > 0")

    others = [url for url in w.foreign_requests(s3_server.base_url) if not url.startswith(store)]
    assert others == []
    assert any(url.startswith(store) for url in w.requests)
    assert violations == [] and w.errors == [] and w.dialogs == []
