"""ASGI middleware: cap request bodies while they stream, and set security headers.

Also the small base the API's other middlewares share (``HttpMiddleware``, ``WatchedSend``):
each of them is pure ASGI so that it sees the response start, which Starlette's
``BaseHTTPMiddleware`` hides behind a buffered response.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-site"),
]


class HttpMiddleware:
    """Lifespan and websocket scopes pass straight through; HTTP requests go to ``handle``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class WatchedSend:
    """A ``send`` that remembers whether the response has started and with which status
    (once started it can no longer be replaced by an error answer), and lets its owner
    amend the start message on the way out."""

    def __init__(self, send: Send, amend: Callable[[Message], Message] | None = None) -> None:
        self._send = send
        self._amend = amend
        self.started = False
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            if self._amend is not None:
                message = self._amend(message)
        await self._send(message)


class BodyTooLarge(HTTPException):
    """An HTTPException so that body parsers re-raise it instead of calling it malformed."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BodySizeLimit(HttpMiddleware):
    """Refuse a body over ``max_bytes`` with 413 as soon as it is known: from Content-Length
    up front, or by counting while it streams, so an oversized upload is never buffered.

    Any response sent before the request body was read to its end (a 413 mid-stream, or an
    endpoint that ignores its body) closes the connection: otherwise the server would keep
    reading and discarding a chunked body of any length to reuse the connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        has_body = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
                has_body = has_body or declared > 0
            elif name == b"transfer-encoding":
                has_body = True
        received = 0
        body_done = not has_body

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if received > self.max_bytes:  # refused already: never hand out more
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if not message.get("more_body", False):
                    body_done = True
            return message

        def close_unless_read(message: Message) -> Message:
            if body_done:
                return message
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            return {**message, "headers": [*headers, (b"connection", b"close")]}

        sent = WatchedSend(send, close_unless_read)
        try:
            await self.app(scope, limited_receive, sent)
        except BodyTooLarge:
            if not sent.started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "code": "payload_too_large",
                "message": f"request body exceeds the limit of {self.max_bytes} bytes",
                "details": {"limit": self.max_bytes},
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders(HttpMiddleware):
    """Add the security headers to every HTTP response, errors included.

    Only responses sent from inside this middleware pass through it. Starlette's last-resort
    500 (``ServerErrorMiddleware``) is sent from outside every user middleware, so that one
    sets the headers itself (``pixelbatch.api.errors.internal_error_response``).
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        def with_headers(message: Message) -> Message:
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            # Never twice (the 413 of BodySizeLimit carries them already); a response
            # that sets one of these itself keeps its own value.
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message["headers"] = headers
            return message

        await self.app(scope, receive, WatchedSend(send, with_headers))
