"""The data-plane renderers (divert/planes/export.py): JSON, BIRD 2 static routes (parsed by the
real ``bird -p`` when it is installed) and ExaBGP's text API."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from divert import DivertError
from divert.dataset import DiversionSet
from divert.planes.export import next_hops, render

DSET = DiversionSet(ipv4=("192.0.2.10", "203.0.113.7"), ipv6=("2001:db8::10",))
HOPS = {4: "198.51.100.1", 6: "2001:db8:ffff::1"}


def test_json() -> None:
    assert json.loads(render("json", DSET, version=7)) == {
        "version": 7,
        "ipv4": ["192.0.2.10", "203.0.113.7"],
        "ipv6": ["2001:db8::10"],
    }
    assert json.loads(render("json", DSET, version=7, family=6))["ipv4"] == []


def test_nft_is_the_transaction_script() -> None:
    text = render("nft", DSET, table="edge")
    assert text.startswith("flush set inet edge divert4\nflush set inet edge divert6\n")
    assert "add element inet edge divert4 { 192.0.2.10, 203.0.113.7 }\n" in text


def test_exabgp_announces_each_address_with_no_export() -> None:
    assert render("exabgp", DSET, version=3, next_hop=HOPS).splitlines() == [
        "# blocklist-divert: diversion set version 3, 3 routes",
        "announce route 192.0.2.10/32 next-hop 198.51.100.1 community [no-export]",
        "announce route 203.0.113.7/32 next-hop 198.51.100.1 community [no-export]",
        "announce route 2001:db8::10/128 next-hop 2001:db8:ffff::1 community [no-export]",
    ]


def test_bird_routes_one_family_per_file() -> None:
    assert render("bird", DSET, version=3, next_hop=HOPS, family=4).splitlines() == [
        "# blocklist-divert: diversion set version 3, 2 routes",
        "route 192.0.2.10/32 via 198.51.100.1 { bgp_community.add((65535, 65281)); };",
        "route 203.0.113.7/32 via 198.51.100.1 { bgp_community.add((65535, 65281)); };",
    ]
    six = render("bird", DSET, version=3, next_hop=HOPS, family=6)
    assert "route 2001:db8::10/128 via 2001:db8:ffff::1 {" in six
    with pytest.raises(DivertError, match="--family 4 or --family 6"):
        render("bird", DSET, next_hop=HOPS)


@pytest.mark.parametrize("fmt", ["bird", "exabgp"])
def test_a_missing_next_hop_is_an_error(fmt: str) -> None:
    with pytest.raises(DivertError, match="no IPv6 next hop"):
        render(fmt, DSET, next_hop={4: "198.51.100.1"}, family=6 if fmt == "bird" else None)
    # A family without addresses needs no next hop.
    only4 = DiversionSet(ipv4=("192.0.2.1",))
    assert "192.0.2.1/32" in render(fmt, only4, next_hop={4: "198.51.100.1"}, family=4)


def test_next_hops() -> None:
    assert next_hops(["198.51.100.1", "2001:DB8::1"]) == {4: "198.51.100.1", 6: "2001:db8::1"}
    with pytest.raises(DivertError, match="two IPv4"):
        next_hops(["198.51.100.1", "198.51.100.2"])
    with pytest.raises(DivertError, match="not an IP address"):
        next_hops(["proxy.example.net"])
    # --next-hop on the command line: a scope id would go verbatim into the BIRD file.
    with pytest.raises(DivertError, match="scope"):
        next_hops(["fe80::1%eth0\nroute 0.0.0.0/0 via 192.0.2.9"])


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird (Debian bird2) is not installed")
def test_bird_parses_the_include_files(tmp_path: pathlib.Path) -> None:
    for family in (4, 6):
        text = render("bird", DSET, version=1, next_hop=HOPS, family=family)
        (tmp_path / f"divert{family}.conf").write_text(text)
    (tmp_path / "empty.conf").write_text(render("bird", DiversionSet.EMPTY, family=4))
    conf = tmp_path / "bird.conf"
    conf.write_text(
        "router id 198.51.100.1;\n"
        "protocol device {}\n"
        # BIRD reads "include" only at the start of a line.
        f'protocol static divert4 {{ ipv4;\ninclude "{tmp_path}/divert4.conf";\n}}\n'
        f'protocol static divert6 {{ ipv6;\ninclude "{tmp_path}/divert6.conf";\n}}\n'
        f'protocol static none4 {{ ipv4;\ninclude "{tmp_path}/empty.conf";\n}}\n'
    )
    done = subprocess.run(
        ["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "divert4.conf").write_text(render("bird", DSET, next_hop=HOPS, family=6))
    wrong = subprocess.run(
        ["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert wrong.returncode != 0  # the check can fail: IPv6 routes in an IPv4 protocol
