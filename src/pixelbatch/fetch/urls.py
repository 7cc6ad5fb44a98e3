"""One parser for every untrusted URL (CSV cells, webhook targets, redirect targets).

Keeping a single strict parser means the CSV validator, the webhook form and the
downloader can never disagree about what a URL means.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from pixelbatch.errors import InvalidInput

DEFAULT_MAX_LENGTH = 2048

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_HEX_LABEL = re.compile(r"^0[xX][0-9A-Fa-f]*$")
# Whitespace (str.isspace's set: \s on str patterns is the same) and C0/DEL/C1 controls, in
# one regex search: testing character by character was 24 of parse_http_url's 56 µs.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# After httpx's IDNA encoding a host is plain ASCII letters, digits, dots, dashes (and the
# underscores some real hosts use); anything else (%-escapes, zone ids) cannot resolve.
_HOST_CHARS = re.compile(r"^[a-z0-9_.\-]+$")

# The shape nearly every URL in a catalog has: lower-case http(s), a plain ASCII host name
# or dotted IPv4, an optional port, and a path and query made only of characters httpx keeps
# as they are (RFC 3986 pchar, '%' included: httpx never re-escapes it in a path or query).
# For these the normalised form is computable without building an httpx.URL.
_PCHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@%"
_COMMON_URL = re.compile(
    rf"(https?)://([A-Za-z0-9_.\-]+)(?::([1-9][0-9]{{0,4}}))?"
    rf"(/[{_PCHARS}/]*)?(\?[{_PCHARS}/?]*)?"
)
_DOTTED_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Last characters a host can have when its last label is numeric (see _ends_in_number): a
# name ending in anything else (".com") skips that check.
_NUMBER_END = frozenset("0123456789abcdefABCDEFxX.")


def _invalid(url: str, reason: str) -> InvalidInput:
    shown = url if len(url) <= 200 else url[:200] + "..."
    # The reason alone is in the details too, for a caller that quotes the URL its own way.
    return InvalidInput(
        f"{reason}: {shown!r}", code="invalid_url", details={"url": shown, "reason": reason}
    )


def _ends_in_number(host: str) -> bool:
    """WHATWG rule: a host whose last label is numeric must be parsed as IPv4."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    last = labels[-1]
    return bool(last) and (last.isdigit() or bool(_HEX_LABEL.match(last)))


def _parse_ipv4_label(label: str) -> int | None:
    if not label:
        return None
    if _HEX_LABEL.match(label):
        return int(label[2:] or "0", 16)
    if not label.isdigit():
        return None
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8) if all(c in "01234567" for c in label) else None
    return int(label)


def normalize_ipv4_host(host: str) -> str | None:
    """Turn decimal/octal/hex IPv4 spellings (``2130706433``, ``0x7f.1``) into dotted form.

    Resolvers accept these spellings (inet_aton), so we rewrite them to the address they
    denote; that way logs, the allowlist and the address policy all see the real address.
    Returns None if ``host`` is not an IPv4 spelling; raises ValueError if it looks like
    one but is not a valid address.
    """
    if not _ends_in_number(host):
        return None
    labels = host.split(".")
    if labels[-1] == "":
        labels = labels[:-1]
    if len(labels) > 4:
        raise ValueError("too many parts")
    numbers = [_parse_ipv4_label(label) for label in labels]
    if any(n is None for n in numbers):
        raise ValueError("not a number")
    parts = [n for n in numbers if n is not None]
    *head, last = parts
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        raise ValueError("out of range")
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _rewrite_host(parts: SplitResult, new_host: str) -> str:
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=new_host + port))


def parse_http_url(url: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> httpx.URL:
    """Validate an untrusted absolute http(s) URL and return it normalised.

    Surrounding whitespace is stripped (CSV cells often carry it); the fragment is dropped;
    numeric IPv4 spellings are rewritten to dotted form. Raises ``InvalidInput`` with
    ``code="invalid_url"`` and a human reason otherwise.
    """
    if not isinstance(url, str):
        raise InvalidInput("URL must be text", code="invalid_url")
    text = url.strip()
    if not text:
        raise _invalid(url, "URL is empty")
    if len(text) > max_length:
        raise _invalid(url, f"URL is longer than {max_length} characters")
    if _SPACE_OR_CONTROL.search(text):
        raise _invalid(url, "URL must not contain spaces or control characters")
    if "\\" in text:
        raise _invalid(url, "URL must not contain backslashes")
    match = _SCHEME.match(text)
    if match is None or match.group(1).lower() not in ("http", "https"):
        raise _invalid(url, "URL must start with http:// or https://")
    if not text[match.end() :].startswith("//"):
        raise _invalid(url, "URL must start with http:// or https://")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _invalid(url, f"URL is malformed ({exc})") from None
    if "@" in parts.netloc:
        raise _invalid(url, "URL must not contain a user name or password")
    hostname = parts.hostname or ""
    if not hostname:
        raise _invalid(url, "URL has no host name")
    if parts.port == 0:
        raise _invalid(url, "URL has an invalid port")
    if ":" not in hostname:  # IPv6 literals are left to httpx
        try:
            dotted = normalize_ipv4_host(hostname)
        except ValueError:
            raise _invalid(url, "URL has an invalid IPv4 address") from None
        if dotted is not None and dotted != hostname:
            text = _rewrite_host(parts, dotted)
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise _invalid(url, f"URL is malformed ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _invalid(url, "URL must start with http:// or https://")
    if parsed.userinfo:
        raise _invalid(url, "URL must not contain a user name or password")
    host = parsed.raw_host.decode("ascii", errors="replace")
    if ":" in host:
        try:
            if "%" in host:
                raise ValueError("zone ids are not allowed")
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid(url, "URL has an invalid IPv6 address") from None
    elif not _HOST_CHARS.match(host):
        raise _invalid(url, "URL has an invalid host name")
    if parsed.fragment:
        parsed = parsed.copy_with(fragment=None)
    return parsed


def normalize_http_url(url: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """``str(parse_http_url(url))``, without building an ``httpx.URL`` for common URLs.

    A catalog holds hundreds of thousands of URLs and ``parse_http_url`` costs tens of µs
    each, most of an upload's time. URLs of the common shape are normalised by
    ``_normalize_common``; everything else, valid or not, goes through ``parse_http_url``,
    so acceptance, normalisation and error messages stay exactly its own
    (tests/unit/test_urls.py checks that the two agree).
    """
    common = _normalize_common(url, max_length) if isinstance(url, str) else None
    return common if common is not None else str(parse_http_url(url, max_length=max_length))


def _normalize_common(url: str, max_length: int) -> str | None:
    """The normalised form of a URL of the ``_COMMON_URL`` shape, else None.

    Such a URL passes every check of ``parse_http_url`` (ASCII only, no space, control
    character, backslash, user info or IDNA), and of httpx's normalisation only two rules
    can change it: the host is lower-cased and a default port is dropped. Shapes that need
    more (dot segments, other IPv4 spellings, an out-of-range port) return None.
    """
    text = url.strip()
    if len(text) > max_length:
        return None
    match = _COMMON_URL.fullmatch(text)
    if match is None:
        return None
    scheme, host, port, path, query = match.groups()
    if path is not None and "/." in path:
        return None  # "." and ".." segments: httpx removes them
    if host[-1] in _NUMBER_END and _DOTTED_IPV4.fullmatch(host) is None and _ends_in_number(host):
        return None  # decimal/octal/hex IPv4 spellings are rewritten, or are invalid
    netloc = host.lower()
    if port is not None:
        number = int(port)
        if number > 65535:
            return None
        if number != _DEFAULT_PORTS[scheme]:
            netloc += ":" + port
    return f"{scheme}://{netloc}{path or ''}{query or ''}"


def effective_port(url: httpx.URL) -> int:
    """The TCP port a URL connects to (explicit or the scheme's default)."""
    if url.port is not None:
        return url.port
    return 443 if url.scheme == "https" else 80


def loggable_url(url: str) -> str:
    """``url`` without what may hold a secret (query, fragment, user:password@), for logs:
    catalogs carry presigned URLs whose query is a credential. A URL with none of them is
    logged as it is: most are, and splitting one was a fifth of recording an image."""
    if "?" not in url and "#" not in url and "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query
