"""Host classes: a bounded label for where a failing download came from.

A raw hostname as a label would grow the series without bound (every supplier, every CDN
shard); the operator names the hosts that matter (``PIXELBATCH_METRICS_HOST_CLASSES=
"cdn.supplier-a.com=supplier-a,images.example.net=example"``) and everything else is
``other`` (``ip`` for an address literal). The failing hosts themselves, by name, are in
``GET /api/stats/hosts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address
from urllib.parse import urlsplit

OTHER = "other"
IP = "ip"


def parse_classes(entries: Iterable[str]) -> dict[str, str]:
    """``suffix=class`` entries to a mapping; a bad entry is refused naming it."""
    classes: dict[str, str] = {}
    for entry in entries:
        suffix, sep, name = entry.partition("=")
        suffix, name = suffix.strip().lower().strip("."), name.strip()
        if not sep or not suffix or not name:
            raise ValueError(f"host class {entry!r} is not of the form host-suffix=class-name")
        classes[suffix] = name
    return classes


def host_of(url: str) -> str:
    """The URL's host, lowercased; empty when the URL has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def host_class(url: str, classes: dict[str, str]) -> str:
    host = host_of(url)
    if not host:
        return OTHER
    try:
        ip_address(host)
    except ValueError:
        pass
    else:
        return IP
    labels = host.split(".")
    # The longest configured suffix wins: "a.cdn.example.com" before "example.com".
    for i in range(len(labels)):
        name = classes.get(".".join(labels[i:]))
        if name is not None:
            return name
    return OTHER
