"""The diversion set's model and stored form (divert/dataset.py), and the nft script that
loads it (divert/planes/nft.py render; applying it is in test_divert_nft.py)."""

from __future__ import annotations

import ipaddress
import json
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from divert import DivertError
from divert.dataset import DiversionSet, normalize
from divert.planes.nft import CHUNK, render

NORMALIZE = [
    # (given, expected ipv4, expected ipv6)
    ([], (), ()),
    (["192.0.2.10", "192.0.2.9", "192.0.2.10"], ("192.0.2.9", "192.0.2.10"), ()),
    (["198.51.100.1", "192.0.2.200"], ("192.0.2.200", "198.51.100.1"), ()),
    (["2001:DB8:0:0::1", "2001:db8::1"], (), ("2001:db8::1",)),
    (["2001:db8::a", "2001:db8::9", "192.0.2.1"], ("192.0.2.1",), ("2001:db8::9", "2001:db8::a")),
    (["2001:0db8:0000:0000:0000:0000:0000:0100"], (), ("2001:db8::100",)),
    # RFC 5952 text, as ipaddress writes it (the C library formats most addresses here)
    (["2001:db8:0:1:1:1:1:1"], (), ("2001:db8:0:1:1:1:1:1",)),
    (["2001:db8:0:0:1:0:0:1"], (), ("2001:db8::1:0:0:1",)),
    # IPv4-mapped and -compatible: as this Python's ipaddress writes them (3.13: dotted)
    (["::ffff:192.0.2.1", "::ffff:c000:201"], (), (str(IPv6Address("::ffff:c000:201")),)),
    (["::192.0.2.1", "::1", "::"], (), ("::", "::1", str(IPv6Address("::c000:201")))),
]


@pytest.mark.parametrize(("given", "v4", "v6"), NORMALIZE)
def test_normalize(given: list[str], v4: tuple[str, ...], v6: tuple[str, ...]) -> None:
    assert normalize(given) == (v4, v6)


@pytest.mark.parametrize(
    "bad", ["192.0.2.0/24", "example.com", "", "192.0.2.256", "fe80::1%eth0", "2001:db8::/32"]
)
def test_normalize_refuses_anything_but_single_addresses(bad: str) -> None:
    with pytest.raises(DivertError):
        normalize([bad])


def test_family_lists_must_hold_their_family() -> None:
    with pytest.raises(DivertError):
        DiversionSet(ipv4=("2001:db8::1",))
    with pytest.raises(DivertError):
        DiversionSet(ipv6=("192.0.2.1",))


def test_build_unions_the_hosts_addresses() -> None:
    dset = DiversionSet.build(
        {
            "aaaa000000000001": ["192.0.2.10", "2001:db8::10"],
            "aaaa000000000002": ["192.0.2.10", "192.0.2.11"],
        },
        created_at=1.0,
    )
    assert dset.ipv4 == ("192.0.2.10", "192.0.2.11")
    assert dset.ipv6 == ("2001:db8::10",)
    assert len(dset) == 3
    assert dset.hosts["aaaa000000000001"] == ("192.0.2.10", "2001:db8::10")
    assert dset.addresses == {"192.0.2.10", "192.0.2.11", "2001:db8::10"}


def test_round_trip_and_checksum_ignores_creation_time() -> None:
    a = DiversionSet.build({"d1": ["192.0.2.1"], "d2": ["2001:db8::2"]}, created_at=1.0)
    b = DiversionSet.build({"d2": ["2001:db8::2"], "d1": ["192.0.2.1"]}, created_at=2.0)
    assert a.checksum == b.checksum
    assert a.to_bytes() != b.to_bytes()
    back = DiversionSet.from_bytes(a.to_bytes())
    assert back == a
    assert back.checksum == a.checksum
    c = DiversionSet.build({"d1": ["192.0.2.1"], "d2": ["2001:db8::3"]}, created_at=1.0)
    assert c.checksum != a.checksum


def test_empty() -> None:
    assert len(DiversionSet.EMPTY) == 0
    assert DiversionSet.from_bytes(DiversionSet.EMPTY.to_bytes()) == DiversionSet.EMPTY


def _tamper(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[: len(d) // 2], "not JSON"),
        (lambda d: b"[]", "not a diversion set"),
        (lambda d: _tamper(d, format="something-else"), "not a diversion set"),
        (lambda d: _tamper(d, version=2), "format version 2"),
        (lambda d: _tamper(d, ipv4=["192.0.2.1", "192.0.2.99"]), "checksum mismatch"),
        (lambda d: _tamper(d, ipv4=["192.0.2.2", "192.0.2.1"]), "not normalized"),
        (lambda d: _tamper(d, ipv4=["192.0.2.0/24"]), "not an IP address"),
        (lambda d: _tamper(d, hosts={"d1": "192.0.2.1"}), "malformed"),
        (lambda d: _tamper(d, created_at=None), "malformed"),
    ],
)
def test_from_bytes_refuses_damaged_sets(mutate, message: str) -> None:
    data = DiversionSet.build({"d1": ["192.0.2.1", "192.0.2.2"]}, created_at=1.0).to_bytes()
    with pytest.raises(DivertError, match=message):
        DiversionSet.from_bytes(mutate(data))


addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
)


@given(st.dictionaries(st.text("0123456789abcdef", min_size=1, max_size=16), st.lists(addresses)))
def test_any_set_survives_the_round_trip(hosts: dict[str, list[str]]) -> None:
    dset = DiversionSet.build(hosts, created_at=5.0)
    back = DiversionSet.from_bytes(dset.to_bytes())
    assert back == dset
    assert set(back.ipv4) | set(back.ipv6) == {
        str(ipaddress.ip_address(a)) for v in hosts.values() for a in v
    }
    assert list(back.ipv4) == sorted(back.ipv4, key=ipaddress.IPv4Address)
    assert list(back.ipv6) == sorted(back.ipv6, key=ipaddress.IPv6Address)


# -- nft script -------------------------------------------------------------------------


def test_render_flushes_then_fills_both_sets_in_one_script() -> None:
    dset = DiversionSet(ipv4=("192.0.2.10", "198.51.100.7"), ipv6=("2001:db8::10",))
    assert render(dset) == (
        "flush set inet blocklist divert4\n"
        "flush set inet blocklist divert6\n"
        "add element inet blocklist divert4 { 192.0.2.10, 198.51.100.7 }\n"
        "add element inet blocklist divert6 { 2001:db8::10 }\n"
    )


def test_render_empty_set_only_flushes() -> None:
    assert render(DiversionSet.EMPTY, table="other_table") == (
        "flush set inet other_table divert4\nflush set inet other_table divert6\n"
    )


def test_render_chunks_large_sets() -> None:
    count = CHUNK * 2 + 5
    base = int(ipaddress.IPv6Address("2001:db8::"))
    ipv6 = [str(ipaddress.IPv6Address(base + 7 * i)) for i in range(count)]
    script = render(DiversionSet(ipv6=tuple(reversed(ipv6))))
    adds = [line for line in script.splitlines() if line.startswith("add element")]
    assert len(adds) == 3
    assert all(line.startswith("add element inet blocklist divert6 { ") for line in adds)
    listed = [a for line in adds for a in line.split("{ ")[1].rstrip(" }").split(", ")]
    assert listed == ipv6


@pytest.mark.parametrize("table", ["", "block list", "x;flush ruleset", "1abc"])
def test_render_refuses_odd_table_names(table: str) -> None:
    with pytest.raises(DivertError):
        render(DiversionSet.EMPTY, table=table)
