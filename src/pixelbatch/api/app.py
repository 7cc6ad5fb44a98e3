"""Application factory: wires settings, runtime, embedded worker and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from pixelbatch import __version__
from pixelbatch.api.errors import UnexpectedErrors, install_error_handlers
from pixelbatch.api.metrics import Metrics, RequestTimer
from pixelbatch.api.middleware import BodySizeLimit, SecurityHeaders
from pixelbatch.api.originals import router as originals_router
from pixelbatch.api.routes import router
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.web import pages

log = logging.getLogger(__name__)

DESCRIPTION = """Upload a CSV of product image URLs; pixelbatch downloads, compresses and stores
every image, writes an output CSV mapping inputs to outputs, and calls your webhook."""


def create_app(settings: Settings | None = None, *, start_worker: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        runtime.prepare_database()
        app.state.runtime = runtime
        app.state.metrics = Metrics(runtime)
        worker = None
        if settings.is_embedded:
            from pixelbatch.jobs.embedded import EmbeddedWorker

            worker = EmbeddedWorker(runtime)
            if start_worker:
                worker.start()
            app.state.dispatcher = worker
        else:
            from pixelbatch.jobs.celery_app import CeleryDispatcher

            app.state.dispatcher = CeleryDispatcher(settings)
        try:
            yield
        finally:
            if worker is not None and start_worker:
                worker.stop()
            runtime.close()

    app = FastAPI(
        title="pixelbatch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by pixelbatch.web with assets of our own instead of FastAPI's CDN links.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(originals_router)
    pages.install(app)
    # The last one added runs outermost: RequestTimer > SecurityHeaders > (CORS) >
    # BodySizeLimit > UnexpectedErrors > routes. So the 500 for an unexpected exception is
    # timed, carries the security headers and closes a connection whose body was not read,
    # like any answer.
    app.add_middleware(UnexpectedErrors)
    # Multipart framing adds a little to the file itself.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    if settings.cors_origins:
        # Inside SecurityHeaders, so preflight answers carry them too; outside the rest, so
        # a browser can read the 413 and error answers as well as the successes.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Idempotency-Key"],
            expose_headers=["Location", "Idempotent-Replayed", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestTimer)
    return app
