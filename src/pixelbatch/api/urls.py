"""The public base URL of a request: the scheme and host a client used to reach this server.

Built from the ``Host`` header (and the ASGI scheme, which uvicorn sets from
``X-Forwarded-Proto`` only for peers in its ``forwarded_allow_ips``); ``X-Forwarded-Proto``
and ``X-Forwarded-Host`` are read only when ``PIXELBATCH_TRUST_PROXY_HEADERS`` says a proxy
sets them. A value that is not a plain host[:port] gives None, never a URL made of it.
"""

from __future__ import annotations

import re

from starlette.requests import Request

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")


def _first(value: str | None) -> str | None:
    """The client-most value of a header a chain of proxies may have appended to."""
    if value is None:
        return None
    return value.split(",", 1)[0].strip() or None


def request_base_url(request: Request, trust_proxy_headers: bool) -> str | None:
    scheme = request.url.scheme
    host = request.headers.get("host")
    if trust_proxy_headers:
        scheme = (_first(request.headers.get("x-forwarded-proto")) or scheme).lower()
        host = _first(request.headers.get("x-forwarded-host")) or host
    if scheme not in ("http", "https") or not host or len(host) > 261:
        return None
    if not _HOST_RE.match(host):
        return None
    return f"{scheme}://{host.lower()}"
