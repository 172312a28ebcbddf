"""``blocklist-divert resolve`` end to end: the real sync stores the hostnames, a real DNS
server (testlab/dnsserver.py on 127.0.0.1) answers, the gates decide, the set is published
to the file store and a real Redis; export, status and rollback read it back.

Every run's output is checked for hostnames: decisions name hosts by digest only.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from blocklist_addon import Blocklist
from blocklist_addon.lists import hostkey
from blocklist_addon.lists.store import open_store
from blocklist_addon.ops.progress import Progress
from divert import DivertError, cli
from divert.config import load_config
from divert.resolve import LOCK, scheduled
from sync import cli as sync_cli
from testlab.dnsserver import DNSServer

FEED = [
    "http://listed-a.example.com/page.html",
    "http://www.cdn-user.example.net/gallery/",
    "http://cut.example.org/x.html",
    "http://192.0.2.44/img/photo.jpg",
    "http://[2001:db8::44]/y.html",
]


@dataclass
class Run:
    code: int
    out: str
    err: str


class Lab:
    def __init__(self, tmp: pathlib.Path, store: str, dns: DNSServer, capsys) -> None:
        self.tmp, self.store, self.dns, self.capsys = tmp, store, dns, capsys
        self.key = tmp / "divert.key"
        hostkey.generate(self.key)
        self.feed = tmp / "feed.txt"
        self.outputs: list[str] = []
        dns.set("listed-a.example.com", a=["192.0.2.10"], aaaa=["2001:db8::10"])
        dns.set("www.cdn-user.example.net", cname="edge.example.net")
        dns.set("edge.example.net", a=["203.0.113.20", "203.0.113.21"])
        dns.set("cut.example.org", cname="target.example.org", chase=False)
        dns.set("target.example.org", aaaa=["2001:db8::30"])

    def config(self, **values: object) -> pathlib.Path:
        settings = {
            "store": self.store,
            "key_file": str(self.key),
            "resolvers": [self.dns.address],
            "timeout": 0.5,
            "deadline": 20.0,
            **values,
        }
        path = self.tmp / "divert.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        return path

    async def sync(self, urls: list[str] = FEED, *argv: str) -> None:
        self.feed.write_text("".join(f"{u}\n" for u in urls))
        config = self.tmp / "sync.toml"
        config.write_text(f'[feeds.feed]\nurl = "{self.feed.as_uri()}"\nformat = "text"\n')
        args = ["--config", str(config), "--store", self.store, "--divert-key-file", str(self.key)]
        args += argv
        assert await sync_cli.run(sync_cli.build_parser().parse_args(args)) == 0
        self.capsys.readouterr()

    async def divert(self, *argv: str, **config: object) -> Run:
        code = await asyncio.to_thread(cli.main, ["--config", str(self.config(**config)), *argv])
        captured = self.capsys.readouterr()
        run = Run(code, captured.out, captured.err)
        self.outputs.append(run.out + run.err)
        return run

    async def exported(self) -> dict[str, object]:
        run = await self.divert("export", "--format", "json")
        assert run.code == 0, run.err
        return json.loads(run.out)

    def digest(self, host: str) -> str:
        return hostkey.load(self.key).digest(host)

    def check_no_hostnames(self) -> None:
        for text in self.outputs:
            assert "example" not in text, text


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer() as server:
        yield server


@pytest.fixture(params=["file", "redis"])
def lab(request, tmp_path: pathlib.Path, dns: DNSServer, capsys) -> Iterator[Lab]:
    if request.param == "file":
        store = (tmp_path / "store").as_uri()
    else:
        store = request.getfixturevalue("redis_factory")().url
    lab = Lab(tmp_path, store, dns, capsys)
    yield lab
    lab.check_no_hostnames()


@pytest.fixture
def file_lab(tmp_path: pathlib.Path, dns: DNSServer, capsys) -> Iterator[Lab]:
    lab = Lab(tmp_path, (tmp_path / "store").as_uri(), dns, capsys)
    yield lab
    lab.check_no_hostnames()


async def test_resolve_publishes_versions_and_rolls_back(lab: Lab) -> None:
    await lab.sync()
    run = await lab.divert("resolve")
    assert run.code == 0, run.err
    assert run.out == (
        "published diversion set version 1: 7 addresses (4 IPv4, 3 IPv6) from 5 hosts\n"
    )
    assert await lab.exported() == {
        "version": 1,
        "ipv4": ["192.0.2.10", "192.0.2.44", "203.0.113.20", "203.0.113.21"],
        "ipv6": ["2001:db8::10", "2001:db8::30", "2001:db8::44"],
    }
    assert lab.dns.asked("target.example.org", "AAAA") == 1  # the cut CNAME was followed

    routes = lab.tmp / "routes.txt"
    wrote = await lab.divert(
        "export",
        "--format",
        "exabgp",
        "--output",
        str(routes),
        next_hop=["198.51.100.1", "2001:db8::1"],
    )
    assert wrote.code == 0 and "version 1 (7 addresses)" in wrote.out
    assert "announce route 2001:db8::44/128 next-hop 2001:db8::1 community [no-export]\n" in (
        routes.read_text()
    )

    again = await lab.divert("resolve")
    assert again.out.startswith("unchanged: diversion set version 1: 7 addresses")

    lab.dns.set("listed-a.example.com", a=["192.0.2.11"])
    moved = await lab.divert("resolve", grace=0)
    assert moved.out.startswith("published diversion set version 2: 6 addresses"), moved.err
    exported = await lab.exported()
    assert "192.0.2.11" in exported["ipv4"] and "192.0.2.10" not in exported["ipv4"]

    back = await lab.divert("rollback")
    assert back.code == 0 and "rollback to 1" in back.out
    assert "192.0.2.10" in (await lab.exported())["ipv4"]
    # DNS still says what was rolled back: not published again until it changes.
    held = await lab.divert("resolve", grace=0)
    assert held.code == 0 and "rolled back" in held.err
    assert (await lab.exported())["version"] == 3

    status = await lab.divert("status")
    assert status.code == 0
    assert "active set: version 3, 7 addresses (4 IPv4, 3 IPv6) from 5 hosts" in status.out
    assert "hostnames: 5 (encrypted) of list version 1" in status.out
    assert "kept versions: 3, 2, 1" in status.out


async def test_cleanfeed_attack_is_stopped_and_reported(file_lab: Lab) -> None:
    """A listed host points its name at someone else's address (a protected prefix: here
    the operator's own 198.51.100.0/24, and RFC 1918), another at a huge fan-out: neither
    third party is diverted, the hosts keep their last real addresses, and status and
    the log say so by digest."""
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    protect = lab.tmp / "protect.txt"
    protect.write_text("# our resolvers\n198.51.100.0/24\n")
    lab.dns.set("listed-a.example.com", a=["198.51.100.53", "10.1.2.3"])
    lab.dns.set("edge.example.net", a=[f"203.0.113.{i}" for i in range(30, 130)])

    run = await lab.divert("resolve", "--protect-file", str(protect), max_per_host=16)
    assert run.code == 0, run.err
    exported = await lab.exported()
    addresses = set(exported["ipv4"]) | set(exported["ipv6"])  # type: ignore[arg-type]
    assert not addresses & {"198.51.100.53", "10.1.2.3"}
    assert not any(
        a.startswith("203.0.113.") and a not in ("203.0.113.20", "203.0.113.21") for a in addresses
    )
    assert {"192.0.2.10", "2001:db8::10", "203.0.113.20", "203.0.113.21"} <= addresses

    listed, fanned = lab.digest("listed-a.example.com"), lab.digest("www.cdn-user.example.net")
    assert f"host {listed}: protected: 2 of 2 addresses in protected prefixes" in run.err
    assert "198.51.100.53 in 198.51.100.0/24" in run.err and "10.1.2.3 in 10.0.0.0/8" in run.err
    assert f"host {fanned}: per-host: 100 addresses, over max_per_host 16" in run.err
    assert f"host {listed}: kept: A refused by a gate" in run.err

    status = await lab.divert("status")
    assert "hosts by state: refused 2, ok 3" in status.out, status.out
    assert f"gate: host {listed}: protected:" in status.out
    assert f"gate: host {fanned}: per-host:" in status.out

    quiet = await lab.divert("resolve", "--quiet", "--protect-file", str(protect))
    assert quiet.code == 0 and quiet.out == ""
    assert "protected" in quiet.err and "kept:" not in quiet.err  # refusals only


async def test_growth_gate_keeps_the_old_set_until_forced(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    lab.dns.set("edge.example.net", a=[f"203.0.113.{i}" for i in range(30, 42)])
    refused = await lab.divert("resolve", growth_allowance=0)
    assert refused.code == 1
    assert refused.err.endswith(
        "REFUSED: 17 addresses, 2.4x the previous 7 (max_growth 2, growth_allowance 0): not "
        "published (--force to accept); the previous set stays active\n"
    )
    assert (await lab.exported())["version"] == 1
    assert "last run" in (status := await lab.divert("status")).out and "REFUSED" in status.out
    forced = await lab.divert("resolve", "--force", growth_allowance=0)
    assert forced.code == 0 and forced.out.startswith("published diversion set version 2: 17")


async def test_unanswered_hosts_keep_their_addresses_for_the_grace_period(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    lab.dns.set("listed-a.example.com", rcode="SERVFAIL")
    lab.dns.set("edge.example.net", silent=True)
    lab.dns.set("target.example.org", rcode="NXDOMAIN")
    kept = await lab.divert("resolve", max_failed=1.0)
    assert kept.code == 0 and kept.out.startswith("unchanged: diversion set version 1: 7")
    assert "(3 kept)" in kept.out
    assert "A servfail: keeps its 1 previous address(es)" in kept.err
    assert "AAAA nxdomain: keeps its 1 previous address(es)" in kept.err

    gone = await lab.divert("resolve", max_failed=1.0, grace=0)
    assert gone.code == 0
    assert gone.out.startswith("published diversion set version 2: 2 addresses"), gone.out
    assert (await lab.exported())["ipv4"] == ["192.0.2.44"]
    assert "removed" in gone.err


async def test_a_resolver_that_filters_the_listed_names_cannot_empty_the_set(
    file_lab: Lab,
) -> None:
    """Every listed name NXDOMAIN at once (a filtering resolver, RPZ): kept for the grace
    period, then refused as a whole instead of emptying the set; --force accepts it."""
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    for name in ("listed-a.example.com", "edge.example.net", "target.example.org"):
        lab.dns.set(name, rcode="NXDOMAIN")
    kept = await lab.divert("resolve", vanished_allowance=0)
    assert kept.code == 0 and kept.out.startswith("unchanged: diversion set version 1: 7")
    refused = await lab.divert("resolve", vanished_allowance=0, grace=0)
    assert refused.code == 1
    assert "set: vanished: 3 of the 5 listed hosts that had addresses lost all of them" in (
        refused.err
    )
    assert refused.err.endswith("the previous set stays active\n"), refused.err
    assert (await lab.exported())["version"] == 1
    assert "vanished" in (await lab.divert("status")).out
    forced = await lab.divert("resolve", "--force", vanished_allowance=0, grace=0)
    assert forced.code == 0 and forced.out.startswith("published diversion set version 2: 2")


async def test_broken_resolvers_and_the_deadline(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    for name in ("listed-a.example.com", "edge.example.net", "target.example.org"):
        lab.dns.set(name, silent=True)
    started = time.monotonic()
    run = await lab.divert("resolve", timeout=5.0, deadline=1.0)
    assert time.monotonic() - started < 4.5  # the deadline, not 5 s per question
    assert run.code == 1
    assert "3 of 3 hosts got no answer from the resolvers" in run.err
    assert "the previous set stays active" in run.err
    assert (await lab.exported())["version"] == 1


async def test_a_suppressed_host_is_no_longer_diverted(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    assert (await lab.divert("resolve")).code == 0
    store = open_store(lab.store)
    loaded = await store.load_active()
    await store.close()
    assert loaded is not None
    entry = Blocklist.from_bytes(loaded[1]).match(FEED[0])
    assert entry is not None
    await lab.sync(FEED, "suppress", entry.entry_id)
    run = await lab.divert("resolve", grace=0)
    assert run.code == 0 and run.out.startswith("published diversion set version 2: 5")
    assert "192.0.2.10" not in (await lab.exported())["ipv4"]  # type: ignore[operator]


async def test_a_second_run_skips_while_one_holds_the_lock(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    divert = open_store(lab.store, namespace="divert")
    async with divert.lock(LOCK) as acquired:
        assert acquired
        run = await lab.divert("resolve")
    await divert.close()
    assert run.code == 0 and run.out == "skipped: another blocklist-divert resolve holds the lock\n"
    assert (await lab.divert("resolve")).code == 0


async def test_errors_exit_1_or_2_with_one_line(file_lab: Lab) -> None:
    lab = file_lab
    nothing = await lab.divert("resolve")
    assert nothing.code == 1 and "no hostnames stored" in nothing.err
    assert nothing.err.count("\n") == 1
    no_set = await lab.divert("export", "--format", "json")
    assert no_set.code == 1 and "no diversion set yet" in no_set.err
    assert (await lab.divert("status")).code == 1
    bad = await lab.divert("resolve", max_growth=0.5)
    assert bad.code == 2 and "max_growth" in bad.err
    missing_key = await lab.divert("resolve", key_file=str(lab.tmp / "nope.key"))
    assert missing_key.code == 2 and "cannot read key file" in missing_key.err
    other = lab.tmp / "other.key"
    hostkey.generate(other)
    await lab.sync()
    wrong = await lab.divert("resolve", key_file=str(other))
    assert wrong.code == 1 and "another key" in wrong.err


class Recording(Progress):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, title: str) -> None:
        self.events.append(("start", title))

    def phase(self, name: str, *, total: int | None = None, unit: str = "") -> None:
        self.events.append(("phase", (name, total, unit)))

    def advance(self, n: int) -> None:
        self.events.append(("advance", n))


async def test_progress_reports_the_phases(file_lab: Lab) -> None:
    lab = file_lab
    await lab.sync()
    progress = Recording()
    args = cli.build_parser().parse_args(["--config", str(lab.config()), "resolve"])
    assert await cli.run(args, progress=progress) == 0
    lab.outputs.append(lab.capsys.readouterr().out)
    phases = [e[1] for e in progress.events if e[0] == "phase"]
    assert ("resolving", 3, "hosts") in phases
    assert [p[0] for p in phases] == ["reading hostnames", "resolving", "gates", "publishing"]
    assert sum(n for kind, n in progress.events if kind == "advance") == 3  # type: ignore[misc]


async def test_scheduled_resolution_for_run(file_lab: Lab) -> None:
    """What ``blocklist-divert run`` calls every interval: the outcome line, or DivertError
    (the active set stays)."""
    lab = file_lab
    await lab.sync()
    config = load_config(lab.config(growth_allowance=0))
    once = scheduled(config)
    assert (await once()).startswith("published diversion set version 1: 7 addresses")
    lab.dns.set("edge.example.net", a=[f"203.0.113.{i}" for i in range(30, 42)])
    with pytest.raises(DivertError, match="REFUSED: 17 addresses"):
        await once()
    with pytest.raises(DivertError, match="cannot read key file"):
        await scheduled(load_config(lab.config(key_file=str(lab.tmp / "nope.key"))))()
