"""The web page and the API docs as a real server answers them: a self-only CSP on each
page, assets from this server with the types browsers require, no CDN reference left."""

from __future__ import annotations

import re

import pytest

from tests import support

pytestmark = pytest.mark.e2e


def _directives(csp: str) -> dict[str, list[str]]:
    parts = (d.strip().split() for d in csp.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_allow_only_this_server(server: support.ServerProcess, path: str) -> None:
    with server.client() as client:
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = _directives(page.headers["content-security-policy"])
        assert csp["default-src"] == ["'self'"]
        assert csp["script-src"] == ["'self'"]  # no inline script, no eval, no other host
        assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
        for sources in csp.values():
            assert all(s.startswith("'") or s in ("data:", "blob:") for s in sources), sources
        # Every asset the page names is on this server, and served with its type.
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert assets
        assert "http" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200, asset
            if asset.endswith(".js"):
                assert answer.headers["content-type"].startswith("text/javascript"), asset
                assert "cdn.redoc.ly" not in answer.text
                assert "cdn.jsdelivr.net" not in answer.text


def test_page_modules_are_served_as_javascript(server: support.ServerProcess) -> None:
    with server.client() as client:
        main = client.get("/ui/static/js/main.js")
        assert main.headers["content-type"].startswith("text/javascript")
        for module in re.findall(r'from "\./([a-z]+\.js)"', main.text):
            answer = client.get(f"/ui/static/js/{module}")
            assert answer.status_code == 200, module
            assert "innerHTML" not in answer.text, module
