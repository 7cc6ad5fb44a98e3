"""parse_http_url: the one validator for untrusted URLs; normalize_http_url, its fast twin."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelbatch.errors import InvalidInput
from pixelbatch.fetch import effective_port, normalize_ipv4_host, parse_http_url, urls
from pixelbatch.fetch.urls import DEFAULT_MAX_LENGTH, normalize_http_url

_ACCEPTED = [
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
]


@pytest.mark.parametrize(("raw", "expected"), _ACCEPTED)
def test_accepts_and_normalises(raw: str, expected: str) -> None:
    assert str(parse_http_url(raw)) == expected


_REJECTED = [
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
]


@pytest.mark.parametrize(("raw", "reason"), _REJECTED)
def test_rejects(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_http_url(raw)
    assert info.value.code == "invalid_url"
    assert reason.lower() in info.value.message.lower()


_SPACES_AND_CONTROLS = [
    chr(code)
    for code in range(0x3100)  # the C0/C1 controls and every Unicode space are below U+3100
    if chr(code).isspace() or code < 0x20 or 0x7F <= code <= 0x9F
]


@pytest.mark.parametrize("char", _SPACES_AND_CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_space_and_control_character_inside_a_url_is_refused(char: str) -> None:
    with pytest.raises(InvalidInput, match="spaces or control characters"):
        parse_http_url(f"http://example.com/a{char}b.jpg")


def test_other_characters_pass_the_space_and_control_check() -> None:
    for char in ("\u00e9", "\u00ad", "\u200b", "\u30a2"):  # é, soft hyphen, ZWSP, katakana
        assert parse_http_url(f"http://example.com/a{char}b.jpg").host == "example.com"


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


# -- normalize_http_url: the fast path must be indistinguishable from parse_http_url --------


def _reference(raw: str, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[str, str]:
    try:
        return "ok", str(parse_http_url(raw, max_length=max_length))
    except InvalidInput as exc:
        return "error", exc.message


def _fast(raw: str, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[str, str]:
    try:
        return "ok", normalize_http_url(raw, max_length=max_length)
    except InvalidInput as exc:
        return "error", exc.message


_CASES = [
    *(raw for raw, _ in _ACCEPTED),
    *(raw for raw, _ in _REJECTED),
    "http://example.com",
    "http://example.com?x",
    "http://example.com/x?",
    "http://example.com/x?#",
    "http://example.com/x#",
    "http://example.com/x#frag",
    "http://Example.COM/A.jpg?Q=1",
    "http://example.com:80/a",
    "https://example.com:443/a",
    "http://example.com:443/a",
    "https://example.com:80/a",
    "http://example.com:080/a",
    "http://example.com:65535/a",
    "http://example.com:65536/a",
    "http://example.com:/a",
    "http://1.2.3.4/",
    "http://1.2.3.4./",
    "http://01.2.3.4/",
    "http://255.255.255.255:8080/a",
    "http://256.255.255.255/a",
    "http://a.1.2.3.4/",
    "http://a.0x/",
    "http://a..b/",
    "http://./",
    "http://-/",
    "http://ex_ample.com/",
    "http://example.com./a",
    "http://a/%zz",
    "http://a/x%2fy%2F",
    "http://a/%",
    "http://a/x/./y",
    "http://a/x/../y",
    "http://a/x/..",
    "http://a/.well-known/x",
    "http://a//b//c",
    "http://a/x?y=/./z&w=..",
    "http://a/x?y?z",
    "http://a/x;p=1,2/y:z@w",
    "http://a/~user/(1)!$&'*+",
    "http://a/[x]",
    "http://a/x|y^z",
    "http://a/x{y}",
    "http://a/x`y",
    'http://a/x"y',
    "http://a/x<y>",
    "http://a/é.jpg",
    "http://a/x?é",
    "HTTP://a/x",
    "Http://a/x",
    "http://a:8080",
    "http://a:8080?q",
]


@pytest.mark.parametrize("raw", _CASES)
def test_normalize_http_url_matches_parse_http_url(raw: str) -> None:
    assert _fast(raw) == _reference(raw)
    assert _fast(f"  {raw}\t") == _reference(f"  {raw}\t")


def test_normalize_http_url_length_limit() -> None:
    url = "https://example.com/" + "a" * 100
    assert normalize_http_url(url, max_length=200) == url
    with pytest.raises(InvalidInput, match="longer than 50"):
        normalize_http_url(url, max_length=50)
    assert _fast(f" {url} ", max_length=len(url)) == ("ok", url)


_PIECES = st.sampled_from(
    [
        *"abcXYZ019-._~!$&'()*+,;=:@%/?#[]\\ \t\x00\x7f\"<>`{}|^",
        "é",
        "ü",
        "\u00a0",
        "\u2028",
        "%2f",
        "%zz",
        "0x",
        "0x7f",
        "255",
        "256",
        "80",
        "443",
        "..",
        "/./",
        "/../",
        "example.com",
        "1.2.3.4",
        "[::1]",
        "user@",
    ]
)
_SCHEMES = st.sampled_from(["http://", "https://", "HTTP://", "http:", "ftp://", "", " http://"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=_SCHEMES, host=st.lists(_PIECES, max_size=5), rest=st.lists(_PIECES, max_size=8))
def test_normalize_http_url_agrees_on_random_urls(
    scheme: str, host: list[str], rest: list[str]
) -> None:
    raw = scheme + "".join(host) + "".join(rest)
    assert _fast(raw) == _reference(raw)
    assert _fast(raw, max_length=12) == _reference(raw, max_length=12)


def test_normalize_http_url_agrees_on_common_shapes() -> None:
    """Seeded variations of the shape the fast path handles, edge values included."""
    rnd = random.Random(20261125)
    pchars = "aZ09-._~!$&'()*+,;=:@%/"
    octets = ["0", "1", "9", "10", "99", "100", "199", "200", "255", "256", "01", "00"]
    for _ in range(5000):
        if rnd.random() < 0.2:
            host = ".".join(rnd.choice(octets) for _ in range(rnd.choice([3, 4, 4, 5])))
        else:
            host = "".join(rnd.choice("abcXYZ0129_.-") for _ in range(rnd.randint(1, 12)))
        port = rnd.choice([None, None, "0", "1", "80", "443", "8080", "65535", "65536", "080"])
        path = "/" + "".join(rnd.choice(pchars) for _ in range(rnd.randint(0, 12)))
        query = "?" + "".join(rnd.choice(pchars + "?") for _ in range(rnd.randint(0, 8)))
        raw = (
            f"{rnd.choice(['http', 'https'])}://{host}{'' if port is None else ':' + port}"
            f"{rnd.choice(['', path])}{rnd.choice(['', query])}"
        )
        assert _fast(raw) == _reference(raw), raw


def test_common_urls_do_not_reach_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the fast path: a catalog's usual URLs never build an httpx.URL."""

    def refuse(url: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        raise AssertionError(f"slow path taken for {url!r}")

    monkeypatch.setattr(urls, "parse_http_url", refuse)
    assert normalize_http_url(" https://cdn.example.com/p/1.jpg?w=800&h=6 ") == (
        "https://cdn.example.com/p/1.jpg?w=800&h=6"
    )
    assert normalize_http_url("http://127.0.0.1:8123/missing/1.jpg") == (
        "http://127.0.0.1:8123/missing/1.jpg"
    )
    assert normalize_http_url("http://Img.Example:80/a%20b.jpg") == "http://img.example/a%20b.jpg"


def test_loggable_url_drops_what_may_be_a_secret() -> None:
    from pixelbatch.fetch.urls import loggable_url

    assert (
        loggable_url("https://user:pw@cdn.test:8443/a/b.jpg?X-Amz-Signature=abc#frag")
        == "https://cdn.test:8443/a/b.jpg?…"
    )
    assert loggable_url("http://[::1]:8080/x.jpg") == "http://[::1]:8080/x.jpg"
    assert loggable_url("https://cdn.test/plain.jpg") == "https://cdn.test/plain.jpg"
    assert loggable_url("https://cdn.test/a.jpg#secret") == "https://cdn.test/a.jpg"
    assert loggable_url("https://me@cdn.test/a.jpg") == "https://cdn.test/a.jpg"
    assert loggable_url("https://cdn.test/a@2x.jpg") == "https://cdn.test/a@2x.jpg"
