"""Serve the web page at ``/`` and the API docs at ``/docs`` and ``/redoc``, every asset
from this server.

The page is only HTML, CSS and ES modules: it reads and changes batches through the same
JSON endpoints as any client, with the same key. Nothing is loaded from another host: the
Content-Security-Policy of each page allows only this server, so a CDN reference (or an
injected one) fails closed. Swagger UI and ReDoc come from the ``fastapi-offline`` wheel,
which ships their dist files, instead of FastAPI's default CDN links.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pixelbatch import __version__
from pixelbatch.db.models import BatchStatus, ImageStatus
from pixelbatch.runtime import Runtime
from pixelbatch.transform import OutputFormat

HERE = Path(__file__).parent
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_PATH = "/ui/static"
DOCS_ASSETS_PATH = "/ui/docs-assets"

_COMMON = "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# blob: images are the originals and outputs fetched with the API key (never in a URL).
# With an object store, the outputs are read where the API's own URLs point: the store's
# (or its CDN's) origin is added to img-src, and to nothing else.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:{store}; "
    f"connect-src 'self'; {_COMMON}"
)
# Swagger UI draws its icons from data: URIs; ReDoc injects <style> elements (styled
# components) and runs its search in a blob: worker. Still nothing from another host.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; {_COMMON}"
)

# ReDoc's sidebar footer loads Redocly's logo from their CDN, unconditionally. The CSP would
# block it, but the page should not even try: the bundle is served with that one URL
# replaced by a blank image.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_IMAGE = b"data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="

templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _page(request: Request, name: str, csp: str, context: dict[str, object]) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {"root": _root(request), "static": _root(request) + STATIC_PATH, **context},
        headers={"Content-Security-Policy": csp, "Cache-Control": "no-cache"},
    )
    return response


def store_origin(runtime: Runtime) -> str | None:
    """The origin output images are read from when an object store keeps them (presigned
    URLs, or a CDN in front): the page shows them from there, as a storefront would. None
    when this server serves them itself (local disk)."""
    probe = "pixelbatch-page/probe.jpg"
    if runtime.storage.redirect_url(probe) is None:
        return None
    parts = urlsplit(runtime.storage.url(probe))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in {"http", "https"} else None


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    origin = store_origin(runtime)
    return _page(
        request,
        "index.html",
        PAGE_CSP.format(store=f" {origin}" if origin else ""),
        {
            "store_origin": origin or "",
            "version": __version__,
            "auth": settings.auth_enabled,
            "relative_quality": settings.default_relative_quality,
            "formats": [f.value for f in OutputFormat],
            "batch_states": [s.value for s in BatchStatus],
            "image_states": [s.value for s in ImageStatus],
        },
    )


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return _page(request, "docs.html", DOCS_CSP, {"assets": _root(request) + DOCS_ASSETS_PATH})


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return _page(request, "redoc.html", DOCS_CSP, {"assets": _root(request) + DOCS_ASSETS_PATH})


@cache
def _redoc_bundle() -> bytes:
    return (DOCS_ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, BLANK_IMAGE)


@router.get(DOCS_ASSETS_PATH + "/redoc.standalone.js")
def redoc_bundle() -> Response:
    return Response(
        _redoc_bundle(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def install(app: FastAPI) -> None:
    """Add the pages and their static files to ``app`` (created with docs_url=None)."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="ui-static")
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS), name="ui-docs-assets")
