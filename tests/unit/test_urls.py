"""parse_http_url: the one validator for untrusted URLs."""

from __future__ import annotations

import pytest

from pixelbatch.errors import InvalidInput
from pixelbatch.fetch import effective_port, normalize_ipv4_host, parse_http_url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://example.com/a.jpg", "http://example.com/a.jpg"),
        ("https://example.com/a.jpg?x=1&y=2", "https://example.com/a.jpg?x=1&y=2"),
        ("HTTPS://Example.COM/A.jpg", "https://example.com/A.jpg"),
        ("  https://example.com/a.jpg \n", "https://example.com/a.jpg"),
        ("https://example.com/a.jpg#fragment", "https://example.com/a.jpg"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://[2606:4700::1111]/a", "http://[2606:4700::1111]/a"),
        ("https://bücher.example/a.jpg", "https://xn--bcher-kva.example/a.jpg"),
        ("https://cdn.example.com/a%20b.jpg", "https://cdn.example.com/a%20b.jpg"),
        # Numeric IPv4 spellings are normalised to the address they denote.
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://0x7f000001/", "http://127.0.0.1/"),
        ("http://017700000001/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://127.0.1:8080/x", "http://127.0.0.1:8080/x"),
        ("http://010.0.0.1/", "http://8.0.0.1/"),
        ("http://169.254.43518/", "http://169.254.169.254/"),
        ("http://0/", "http://0.0.0.0/"),
    ],
)
def test_accepts_and_normalises(raw: str, expected: str) -> None:
    assert str(parse_http_url(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("ftp://example.com/a.jpg", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("data:image/png;base64,AAAA", "http:// or https://"),
        ("gopher://example.com/", "http:// or https://"),
        ("/images/a.jpg", "http:// or https://"),
        ("example.com/a.jpg", "http:// or https://"),
        ("//example.com/a.jpg", "http:// or https://"),
        ("http:/example.com/a.jpg", "http:// or https://"),
        ("http:example.com", "http:// or https://"),
        ("http://", "no host"),
        ("http:///a.jpg", "no host"),
        ("http://user:pass@example.com/", "user name or password"),
        ("http://user@example.com/", "user name or password"),
        ("http://example.com@169.254.169.254/", "user name or password"),
        ("http://example.com\\@evil.com/", "backslash"),
        ("http:\\\\example.com\\a", "backslash"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com/a b.jpg", "spaces"),
        ("http://example.com/\ta.jpg", "spaces"),
        ("http://example.com/a\x00.jpg", "control"),
        ("http://example.com/a\x7f.jpg", "control"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:0/", "invalid port"),
        ("http://example.com:abc/", "malformed"),
        ("http://1.2.3.4.5/", "invalid IPv4"),
        ("http://256.0.0.1/", "invalid IPv4"),
        ("http://0x100000000/", "invalid IPv4"),
        ("http://09.0.0.1/", "invalid IPv4"),
        ("http://example.123/", "invalid IPv4"),
        ("http://exa%2fmple.com/", "invalid host"),
        ("http://[fe80::1%25eth0]/", "invalid IPv6"),
        ("http://[::1/", "malformed"),
    ],
)
def test_rejects(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_http_url(raw)
    assert info.value.code == "invalid_url"
    assert reason.lower() in info.value.message.lower()


def test_length_limit() -> None:
    url = "https://example.com/" + "a" * 100
    assert parse_http_url(url, max_length=200)
    with pytest.raises(InvalidInput, match="longer than 50"):
        parse_http_url(url, max_length=50)


def test_effective_port() -> None:
    assert effective_port(parse_http_url("http://example.com/")) == 80
    assert effective_port(parse_http_url("https://example.com/")) == 443
    assert effective_port(parse_http_url("https://example.com:8443/")) == 8443


@pytest.mark.parametrize(
    ("host", "dotted"),
    [
        ("example.com", None),
        ("1.2.3.4", "1.2.3.4"),
        ("1.0x2.3", "1.2.0.3"),
        ("4294967295", "255.255.255.255"),
    ],
)
def test_normalize_ipv4_host(host: str, dotted: str | None) -> None:
    assert normalize_ipv4_host(host) == dotted
