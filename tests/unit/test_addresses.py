"""The SSRF address table and the allowlist policy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelbatch.errors import FetchError
from pixelbatch.fetch import BLOCKED_IPV4, BLOCKED_IPV6, AddressPolicy, is_blocked_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# An independent copy of the spec's IPv4 table: the oracle for the property test.
SPEC_BLOCKED_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "168.63.129.16/32",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]

# The same for IPv6. Beyond these, the spec blocks everything outside 2000::/3, and judges
# ::ffff:0:0/96 (mapped), 64:ff9b::/96 (NAT64) and 2002::/16 (6to4) by the IPv4 address they
# embed; spec_v6_blocked() below spells that out with plain integer arithmetic.
SPEC_BLOCKED_V6 = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]

BLOCKED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("168.63.129.16", "Azure metadata"),
    ("169.254.169.254", "metadata"),
    ("169.254.0.1", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local/metadata"),
    ("::ffff:168.63.129.16", "IPv4-mapped metadata"),
    ("64:ff9b::a83f:8110", "NAT64 metadata"),
    ("2002:a83f:8110::1", "6to4 metadata"),
    ("::ffff:10.1.2.3", "IPv4-mapped private"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::a00:1", "NAT64 private"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2002:7f00:1::", "6to4 loopback"),
    ("2002:a9fe:a9fe::1", "6to4 link-local"),
    ("100::1", "discard"),
    ("2001::1", "IETF"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("::ffff:0:7f00:1", "not global"),
    ("4000::1", "not global"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "168.63.129.15",  # the Azure WireServer's neighbours are ordinary public addresses
    "168.63.129.17",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "why"), BLOCKED)
def test_blocked(address: str, why: str) -> None:
    reason = is_blocked_address(ipaddress.ip_address(address))
    assert reason is not None, address
    assert any(word.lower() in reason.lower() for word in why.split()), (address, reason)


@pytest.mark.parametrize("address", PUBLIC)
def test_public(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address)) is None


def test_ipv6_scope_id_is_ignored() -> None:
    assert is_blocked_address(ipaddress.IPv6Address("fe80::1%eth0")) == "link-local"


def _near(networks: Sequence[Network], bits: int) -> st.SearchStrategy[int]:
    """Integers inside, and just either side of, the given networks.

    Uniform draws almost never land in a small range (a /20 is 2**-20 of IPv6, a /32 is
    2**-32 of IPv4), so a missing or mistyped table entry would go unnoticed; edges are
    where off-by-one prefix lengths show.
    """
    top = (1 << bits) - 1

    def pick(network: Network, where: str, delta: int) -> int:
        first, last = int(network.network_address), int(network.broadcast_address)
        if where == "inside":
            value = first + delta % network.num_addresses
        elif where == "below":
            value = first - 1 - delta % 256
        else:
            value = last + 1 + delta % 256
        return min(max(value, 0), top)

    return st.builds(
        pick,
        st.sampled_from(networks),
        st.sampled_from(["inside", "below", "above"]),
        st.integers(min_value=0, max_value=top),
    )


# The table under test also steers generation (never the verdict), so an entry the code
# has but the spec lacks is probed as well.
_V4_STEERING = [*SPEC_BLOCKED_V4, *(network for network, _ in BLOCKED_IPV4)]
_ANY_V4 = st.integers(min_value=0, max_value=2**32 - 1)
ipv4s = st.one_of(_ANY_V4, _near(_V4_STEERING, 32)).map(ipaddress.IPv4Address)


@given(ipv4s)
@settings(max_examples=500)
def test_ipv4_blocked_iff_in_table(address: ipaddress.IPv4Address) -> None:
    in_table = any(address in network for network in SPEC_BLOCKED_V4)
    assert (is_blocked_address(address) is not None) == in_table


def spec_v4_blocked(value: int) -> bool:
    return any(ipaddress.IPv4Address(value) in network for network in SPEC_BLOCKED_V4)


def spec_v6_blocked(value: int) -> bool:
    """The spec's IPv6 rule, independent of the module's own networks and order."""
    if value >> 32 == 0xFFFF or value >> 32 == 0x64FF9B << 64:  # ::ffff:0:0/96, 64:ff9b::/96
        return spec_v4_blocked(value & 0xFFFFFFFF)
    if value >> 112 == 0x2002:  # 6to4: the IPv4 address is bits 16-47
        return spec_v4_blocked((value >> 80) & 0xFFFFFFFF)
    address = ipaddress.IPv6Address(value)
    if any(address in network for network in SPEC_BLOCKED_V6):
        return True
    return value >> 125 != 0b001  # only 2000::/3 is global unicast


_V6_STEERING = [
    *SPEC_BLOCKED_V6,
    *(network for network, _ in BLOCKED_IPV6),
    ipaddress.IPv6Network("2000::/3"),
    ipaddress.IPv6Network("::ffff:0:0/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("2002::/16"),
]
_ANY_V6 = st.integers(min_value=0, max_value=2**128 - 1)
ipv6s = st.one_of(_ANY_V6, _near(_V6_STEERING, 128)).map(ipaddress.IPv6Address)


@given(ipv6s)
@settings(max_examples=1000)
def test_ipv6_blocked_iff_spec_says_so(address: ipaddress.IPv6Address) -> None:
    assert (is_blocked_address(address) is not None) == spec_v6_blocked(int(address)), address


@given(st.sampled_from(SPEC_BLOCKED_V6), st.integers(min_value=0))
def test_every_blocked_v6_network_blocks_its_members(
    network: ipaddress.IPv6Network, offset: int
) -> None:
    address = network[offset % network.num_addresses]
    assert is_blocked_address(address) is not None


def test_spec_tables_name_every_network_the_code_blocks() -> None:
    """Keeps the oracle honest: a range added to the code must be added here too."""
    assert {network for network, _ in BLOCKED_IPV4} == set(SPEC_BLOCKED_V4)
    assert {network for network, _ in BLOCKED_IPV6} - set(SPEC_BLOCKED_V6) == {
        ipaddress.IPv6Network("fd00:ec2::254/128")  # inside fc00::/7, listed for its reason
    }


@given(ipv4s)
def test_embedded_ipv4_forms_follow_the_ipv4_verdict(address: ipaddress.IPv4Address) -> None:
    blocked = is_blocked_address(address) is not None
    value = int(address)
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | value)
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | value)
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)
    for form in (mapped, nat64, six_to_four):
        assert (is_blocked_address(form) is not None) == blocked, form


@given(st.sampled_from(SPEC_BLOCKED_V4), st.integers(min_value=0))
def test_every_blocked_network_blocks_its_members(
    network: ipaddress.IPv4Network, offset: int
) -> None:
    address = network[offset % network.num_addresses]
    assert is_blocked_address(address) is not None


# ---- policy


def test_policy_allows_public_on_default_ports() -> None:
    policy = AddressPolicy([], [80, 443])
    policy.check("example.com", 443, ipaddress.ip_address("93.184.216.34"))
    policy.check("example.com", 80, ipaddress.ip_address("2606:4700::1111"))


def test_policy_blocks_public_on_other_ports() -> None:
    policy = AddressPolicy([], [80, 443])
    with pytest.raises(FetchError) as info:
        policy.check("example.com", 22, ipaddress.ip_address("93.184.216.34"))
    assert info.value.code == "blocked_port"


def test_policy_blocks_private_regardless_of_port() -> None:
    policy = AddressPolicy([], [80, 443])
    with pytest.raises(FetchError) as info:
        policy.check("169.254.169.254", 80, ipaddress.ip_address("169.254.169.254"))
    assert info.value.code == "blocked_address"
    assert "metadata" in info.value.message


@pytest.mark.parametrize(
    ("allow", "host", "port", "ip", "ok"),
    [
        (["127.0.0.1:8123"], "127.0.0.1", 8123, "127.0.0.1", True),
        (["127.0.0.1:8123"], "127.0.0.1", 8124, "127.0.0.1", False),
        (["127.0.0.1:8123"], "127.0.0.2", 8123, "127.0.0.2", False),
        # An IP entry matches whatever name resolved to that IP.
        (["127.0.0.1:8123"], "localhost", 8123, "127.0.0.1", True),
        (["127.0.0.1:8123"], "localhost", 8123, "::1", False),
        (["[::1]:8123"], "::1", 8123, "::1", True),
        (["[::1]:8123"], "localhost", 8123, "::1", True),
        (["[::1]:8123"], "::1", 80, "::1", False),
        # A host entry matches that name, to whatever it resolves.
        (["localhost:8123"], "localhost", 8123, "127.0.0.1", True),
        (["localhost:8123"], "LOCALHOST.", 8123, "::1", True),
        (["localhost:8123"], "127.0.0.1", 8123, "127.0.0.1", False),
        (["localhost:8123"], "localhost", 9000, "127.0.0.1", False),
        (["localhost:8123"], "evil.example", 8123, "127.0.0.1", False),
        # An allowlisted public pair may use a non-default port.
        (["93.184.216.34:8080"], "example.com", 8080, "93.184.216.34", True),
    ],
)
def test_allowlist_names_exact_pairs(
    allow: list[str], host: str, port: int, ip: str, ok: bool
) -> None:
    policy = AddressPolicy(allow, [80, 443])
    if ok:
        policy.check(host, port, ipaddress.ip_address(ip))
    else:
        with pytest.raises(FetchError) as info:
            policy.check(host, port, ipaddress.ip_address(ip))
        assert info.value.code in ("blocked_address", "blocked_port")


@pytest.mark.parametrize("entry", ["127.0.0.1", "localhost", "::1:80", "[::1]", "host:0", "h:x"])
def test_allowlist_entries_need_a_port(entry: str) -> None:
    with pytest.raises(ValueError):
        AddressPolicy([entry])
