"""``divert.nft.apply`` against the real nft, inside a network namespace this test creates
(never the root namespace's firewall): the shipped deploy/nftables-divert.nft, and a minimal
``inet blocklist`` table of the same names where a test must delete a set."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator

import pytest

from blocklist_addon.lists.store import open_store
from divert import DivertError
from divert.dataset import DiversionSet
from divert.planes.nft import apply
from testlab.divert_lab import load_table, set_contents
from testlab.harness import VENV_BIN
from testlab.netns import Lab, Namespace, unavailable

TABLE = """\
table inet blocklist {
    set divert4 { type ipv4_addr; }
    set divert6 { type ipv6_addr; }
}
"""


pytestmark = pytest.mark.skipif(bool(unavailable("nft")), reason=unavailable("nft") or "")


class Netns:
    """A namespace of this test's own (``netns.Lab``), with the set listing of divert_lab."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.name = ns.name
        self.nft = [*ns.exec_prefix(), "nft"]

    def run_nft(self, *args: str, input: str | None = None) -> str:
        return self.ns.run("nft", *args, input=input)

    def elements(self, name: str) -> list[str]:
        return set_contents(self.ns, name)


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Lab() as lab:
        yield Netns(lab.namespace("nft"))


def test_the_shipped_table_takes_the_sets(netns: Netns) -> None:
    load_table(netns.ns, "lo")
    dset = DiversionSet(ipv4=("192.0.2.10", "198.51.100.7"), ipv6=("2001:db8::10",))
    apply(dset, nft=netns.nft)
    assert netns.elements("divert4") == ["192.0.2.10", "198.51.100.7"]
    assert netns.elements("divert6") == ["2001:db8::10"]


def test_apply_replaces_both_sets(netns: Netns) -> None:
    netns.run_nft("-f", "-", input=TABLE)
    first = DiversionSet(ipv4=("192.0.2.10", "192.0.2.11", "198.51.100.7"), ipv6=("2001:db8::10",))
    apply(first, nft=netns.nft)
    assert netns.elements("divert4") == ["192.0.2.10", "192.0.2.11", "198.51.100.7"]
    assert netns.elements("divert6") == ["2001:db8::10"]

    second = DiversionSet(ipv4=("192.0.2.11", "203.0.113.5"), ipv6=("2001:db8::20",))
    apply(second, nft=netns.nft)
    assert netns.elements("divert4") == ["192.0.2.11", "203.0.113.5"]
    assert netns.elements("divert6") == ["2001:db8::20"]

    apply(DiversionSet.EMPTY, nft=netns.nft)
    assert netns.elements("divert4") == []
    assert netns.elements("divert6") == []


def test_a_large_set_goes_in_whole(netns: Netns) -> None:
    netns.run_nft("-f", "-", input=TABLE)
    base = int(ipaddress.IPv6Address("2001:db8:1::"))
    ipv6 = tuple(str(ipaddress.IPv6Address(base + 2 * i)) for i in range(20_000))
    apply(DiversionSet(ipv4=("192.0.2.1",), ipv6=ipv6), nft=netns.nft)
    assert netns.elements("divert6") == list(ipv6)
    assert netns.elements("divert4") == ["192.0.2.1"]


def test_missing_table_says_what_to_load(netns: Netns) -> None:
    with pytest.raises(DivertError, match=r"load deploy/nftables-divert\.nft first"):
        apply(DiversionSet(ipv4=("192.0.2.10",)), nft=netns.nft)


def test_a_failing_script_changes_nothing(netns: Netns) -> None:
    """One transaction: when the second set cannot be filled, the first keeps its old
    addresses (never flushed alone, which would let diverted traffic leak past)."""
    netns.run_nft("-f", "-", input=TABLE)
    apply(DiversionSet(ipv4=("192.0.2.10",), ipv6=("2001:db8::10",)), nft=netns.nft)
    netns.run_nft("delete", "set", "inet", "blocklist", "divert6")
    with pytest.raises(DivertError):
        apply(DiversionSet(ipv4=("192.0.2.99",), ipv6=("2001:db8::99",)), nft=netns.nft)
    assert netns.elements("divert4") == ["192.0.2.10"]


def test_nft_missing_is_one_clear_line() -> None:
    with pytest.raises(DivertError, match="not found: install nftables"):
        apply(DiversionSet.EMPTY, nft="/nonexistent/nft")


async def test_apply_command_loads_the_active_set(netns: Netns, tmp_path) -> None:
    """``blocklist-divert apply`` run inside the namespace: the store's active set, whole."""
    store_url = (tmp_path / "store").as_uri()
    dset = DiversionSet(ipv4=("192.0.2.10", "203.0.113.7"), ipv6=("2001:db8::10",))
    async with open_store(store_url, namespace="divert") as store:
        await store.publish(dset.to_bytes(), checksum=dset.checksum, entries=3, source="test")
    command = [
        "ip", "netns", "exec", netns.name,
        str(VENV_BIN / "blocklist-divert"), "--store", store_url, "apply",
    ]  # fmt: skip
    missing = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert "load deploy/nftables-divert.nft first" in missing.stderr
    netns.run_nft("-f", "-", input=TABLE)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"applied diversion set version 1 of {store_url}/divert (from --store): 3 addresses "
        "(2 IPv4, 1 IPv6) into nft table inet blocklist\n"
    )
    assert netns.elements("divert4") == ["192.0.2.10", "203.0.113.7"]
    assert netns.elements("divert6") == ["2001:db8::10"]
