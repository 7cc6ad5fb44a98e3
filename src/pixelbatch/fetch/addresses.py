"""Which IP addresses and ports an untrusted URL may make us connect to.

The tables below are explicit on purpose: ``ipaddress.is_private``/``is_global`` change
between Python versions and miss some ranges (CGNAT, NAT64, 6to4, cloud metadata), and an
SSRF guard must not silently change meaning on an interpreter upgrade.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pixelbatch.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The setting an operator changes to let pixelbatch reach a refused host:port.
ALLOW_SETTING = "PIXELBATCH_FETCH_ALLOW"


def allow_hint(host: str, port: int) -> tuple[str, str]:
    """The allowlist entry that would let ``host:port`` through, and the sentence saying
    which setting takes it: every refusal names its own remedy."""
    entry = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return entry, f"set {ALLOW_SETTING}={entry} to allow it"


def refused(message: str, *, code: str, host: str, port: int, **details: object) -> FetchError:
    """A refusal by the policy: ``message``, then the hint (kept in ``details`` too, so
    a caller that adds the URL can put it before the hint)."""
    entry, hint = allow_hint(host, port)
    return FetchError(
        f"{message}; {hint}",
        code=code,
        details={"host": host, "port": port, **details, "allow": entry, "hint": hint},
    )


def _v4(cidr: str, reason: str) -> tuple[ipaddress.IPv4Network, str]:
    return ipaddress.IPv4Network(cidr), reason


def _v6(cidr: str, reason: str) -> tuple[ipaddress.IPv6Network, str]:
    return ipaddress.IPv6Network(cidr), reason


#: IPv4 networks we never connect to (unless a host:port pair is explicitly allowlisted).
BLOCKED_IPV4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    _v4("0.0.0.0/8", "unspecified/this-network"),
    _v4("10.0.0.0/8", "private"),
    _v4("100.64.0.0/10", "shared address space (CGNAT)"),
    _v4("127.0.0.0/8", "loopback"),
    # Azure WireServer: a public-looking address every Azure VM reaches without routing
    # (agent config, health probes, platform DNS); Azure's other metadata endpoint is
    # 169.254.169.254 and Alibaba's is 100.100.100.200, both covered by ranges here.
    _v4("168.63.129.16/32", "cloud metadata (Azure WireServer)"),
    _v4("169.254.0.0/16", "link-local/metadata"),
    _v4("172.16.0.0/12", "private"),
    _v4("192.0.0.0/24", "IETF protocol assignments"),
    _v4("192.0.2.0/24", "documentation"),
    _v4("192.88.99.0/24", "6to4 relay anycast"),
    _v4("192.168.0.0/16", "private"),
    _v4("198.18.0.0/15", "benchmarking"),
    _v4("198.51.100.0/24", "documentation"),
    _v4("203.0.113.0/24", "documentation"),
    _v4("224.0.0.0/4", "multicast"),
    _v4("255.255.255.255/32", "broadcast"),  # inside 240/4; listed first for its reason
    _v4("240.0.0.0/4", "reserved"),
)

#: IPv6 networks we never connect to. Ranges that embed an IPv4 address (mapped, NAT64,
#: 6to4) are handled in :func:`is_blocked_address` by checking the embedded address.
BLOCKED_IPV6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    _v6("fd00:ec2::254/128", "link-local/metadata"),  # AWS IPv6 instance metadata
    _v6("::/128", "unspecified"),
    _v6("::1/128", "loopback"),
    _v6("::/96", "IPv4-compatible (deprecated)"),
    _v6("64:ff9b:1::/48", "local-use NAT64"),
    _v6("100::/64", "discard-only"),
    _v6("2001::/23", "IETF special-purpose"),
    _v6("2001:db8::/32", "documentation"),
    # Inside 2000::/3, so the global-unicast rule below does not catch it (RFC 9637).
    _v6("3fff::/20", "documentation"),
    _v6("fc00::/7", "private (unique local)"),
    _v6("fe80::/10", "link-local"),
    _v6("fec0::/10", "site-local (deprecated)"),
    _v6("ff00::/8", "multicast"),
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _blocked_v4(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in BLOCKED_IPV4:
        if ip in network:
            return reason
    return None


def is_blocked_address(ip: IPAddress) -> str | None:
    """Why connecting to ``ip`` is refused (e.g. ``"loopback"``), or None if it is public."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _blocked_v4(ip)
    if ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    embedded: ipaddress.IPv4Address | None = None
    kind = ""
    if ip in _MAPPED:
        embedded, kind = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-mapped"
    elif ip in _NAT64:
        embedded, kind = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    elif ip in _SIX_TO_FOUR:
        embedded, kind = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF), "6to4"
    if embedded is not None:
        reason = _blocked_v4(embedded)
        return f"{kind} {reason}" if reason else None
    for network6, reason in BLOCKED_IPV6:
        if ip in network6:
            return reason
    if ip not in _GLOBAL_UNICAST:
        # Only 2000::/3 is allocated for global unicast; anything else is not the internet.
        return "not global unicast"
    return None


def _split_host_port(entry: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port``; a port is mandatory so entries stay narrow."""
    text = entry.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"allowlist entry {entry!r} must look like [::1]:8080")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"allowlist entry {entry!r} must look like host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"allowlist entry {entry!r} has an invalid port")
    return host.lower().rstrip("."), int(port_text)


class AddressPolicy:
    """Decides whether one resolved (host, port, ip) may be connected to.

    The allowlist names exact ``host:port`` pairs. An entry naming an IP matches a
    connection to that IP (whatever name resolved to it); an entry naming a host matches
    connections made for that host name (to whatever it resolves to). Everything else
    must be a public address on an allowed port.
    """

    def __init__(self, allow: Iterable[str] = (), allowed_ports: Iterable[int] = (80, 443)):
        self._allowed_ips: set[tuple[IPAddress, int]] = set()
        self._allowed_hosts: set[tuple[str, int]] = set()
        for entry in allow:
            host, port = _split_host_port(entry)
            try:
                self._allowed_ips.add((ipaddress.ip_address(host), port))
            except ValueError:
                self._allowed_hosts.add((host, port))
        self.allowed_ports = frozenset(allowed_ports)

    def is_allowlisted(self, host: str, port: int, ip: IPAddress | None = None) -> bool:
        """True if this exact pair was put on the allowlist by the operator."""
        if (host.lower().rstrip("."), port) in self._allowed_hosts:
            return True
        if ip is None:
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                return False
        return (ip, port) in self._allowed_ips

    def check(self, host: str, port: int, ip: IPAddress) -> None:
        """Raise ``FetchError`` (blocked_address / blocked_port) unless the pair is allowed."""
        if self.is_allowlisted(host, port, ip):
            return
        reason = is_blocked_address(ip)
        if reason is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise refused(
                f"Refused to connect to {shown} ({reason} address)",
                code="blocked_address",
                host=host,
                port=port,
                ip=str(ip),
                reason=reason,
            )
        self._check_port(host, port, str(ip))

    def check_target(self, host: str, port: int) -> None:
        """What can be refused before any name is resolved: a literal IP address (checked as
        a connection to it would be) and the port. A host name passes; where it resolves
        to is checked at connect time by :meth:`check`, as ever."""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not self.is_allowlisted(host, port):
                self._check_port(host, port, None)
            return
        self.check(host, port, ip)

    def _check_port(self, host: str, port: int, ip: str | None) -> None:
        if port not in self.allowed_ports:
            allowed = ", ".join(str(p) for p in sorted(self.allowed_ports))
            raise refused(
                f"Refused to connect to {host} on port {port}: only ports {allowed} are allowed",
                code="blocked_port",
                host=host,
                port=port,
                ip=ip,
            )
