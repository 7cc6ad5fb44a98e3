"""One place that turns every error into ``{code, message, details}`` JSON.

Unexpected exceptions are logged with their traceback and answered with a bare 500: no stack
trace, SQL or path ever reaches a client.

Why the 500 is not just an ``exception_handler(Exception)``: Starlette runs that handler in
its ``ServerErrorMiddleware``, the outermost layer, *outside* every user middleware. Its
response would skip ``SecurityHeaders`` and ``BodySizeLimit``'s connection handling, and the
exception would be re-raised to the server, which logs it a second time. So
:class:`UnexpectedErrors`, a middleware inside those, answers the 500 instead; the handler
stays only as a last resort (an exception from the outer middlewares themselves) and sets
the security headers on its own.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from pixelbatch.api.middleware import SECURITY_HEADERS, BodyTooLarge, HttpMiddleware, WatchedSend
from pixelbatch.errors import PixelbatchError

log = logging.getLogger(__name__)

HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"code": code, "message": message, "details": details},
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PixelbatchError)
    async def _pixelbatch_error(_: Request, exc: PixelbatchError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query")),
                # Pydantic's "Extra inputs are not permitted" says less than it means.
                "message": "unknown field"
                if err.get("type") == "extra_forbidden"
                else err.get("msg", "invalid value"),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return error_response(422, "validation_error", f"invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        details = {"limit": exc.limit} if isinstance(exc, BodyTooLarge) else None
        return error_response(exc.status_code, code, str(exc.detail), details)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Last resort only: UnexpectedErrors answers everything raised inside the middleware
        # stack. Starlette re-raises after this, so the server logs the traceback itself.
        return internal_error_response()


def internal_error_response() -> JSONResponse:
    """The one 500 body. It carries the security headers itself because it may be sent from
    outside the ``SecurityHeaders`` middleware (see the module docstring)."""
    return error_response(
        500,
        "internal_error",
        "internal server error",
        headers={
            name.decode("latin-1"): value.decode("latin-1") for name, value in SECURITY_HEADERS
        },
    )


class UnexpectedErrors(HttpMiddleware):
    """Turn an exception nothing else handled into the JSON 500, inside the user middleware
    so the answer gets the security headers, is timed with status 500 and closes a connection
    whose request body was never read.

    The exception is logged here, once, with its traceback, and not re-raised: re-raising
    would make the server log it again. Two cases are left alone: ``BodyTooLarge``, which
    ``BodySizeLimit`` (outside this one) turns into its 413, and any exception after the
    response started, which can no longer be answered: re-raising it lets the server abort
    the connection so the client sees a truncated response, not a complete-looking one.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = WatchedSend(send)
        try:
            await self.app(scope, receive, sent)
        except BodyTooLarge:
            raise
        except Exception:
            if sent.started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await internal_error_response()(scope, receive, send)
