"""Diversion benchmark: resolving 10,000 listed hosts, and replacing a 100,000-address nft set.

1. Resolve: a 10,000-entry feed (one host each; one in ten a CNAME) is synced with a hostname
   key into a file store; ``testlab/dnsserver.py`` serves the zone from its own process on
   127.0.0.1; ``blocklist-divert resolve`` runs in-process (decrypt, 20,000 questions at the
   configured concurrency, gates, publish). Target: < 30 s. Reference in the same run: the
   same 20,000 questions sent with dnspython's bare ``asyncquery.udp`` at the same
   concurrency (the DNS server and sockets alone).
2. Replace (root: a network namespace the benchmark creates and deletes): the shipped
   ``deploy/nftables-divert.nft`` loaded, then ``divert.nft.apply`` alternates between two
   100,000-address sets (768 IPv4 documentation addresses and IPv6 ones from 2001:db8::/32,
   differing by 1%), median of ``--rounds``. Target: < 1 s. Reference in the same run: one
   ``nft -f`` transaction that only flushes the two empty sets (nft's fixed cost).

    .venv/bin/python bench/diversion.py [--hosts 10000] [--addresses 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dns.asyncquery
import dns.message

from blocklist_addon.lists import hostkey
from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.planes import nft
from divert.resolve import resolve_once
from sync import cli as sync_cli

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 100


def zone(hosts: int) -> tuple[list[str], dict[str, dict[str, object]]]:
    names, records = [], {}
    for i in range(hosts):
        name = f"host{i}.example.com"
        names.append(name)
        v4 = f"{('192.0.2', '198.51.100', '203.0.113')[i % 3]}.{i % 250 + 1}"
        v6 = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8::")) + i + 1))
        if i % 10 == 0:
            records[name] = {"cname": f"edge{i}.example.net"}
            records[f"edge{i}.example.net"] = {"a": [v4], "aaaa": [v6]}
        else:
            records[name] = {"a": [v4], "aaaa": [v6]}
    return names, records


async def start_dns(zone_file: Path) -> tuple[subprocess.Popen[str], str]:
    """testlab/dnsserver.py in its own process (as a real resolver would be), on a free port."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "testlab" / "dnsserver.py"), "--listen", "127.0.0.1:0",
         "--zone", str(zone_file)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
    if not line.startswith("serving on "):
        process.kill()
        raise SystemExit("the DNS server did not start")
    return process, line.removeprefix("serving on ").strip()


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reference_queries(names: list[str], port: int) -> tuple[float, float]:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def ask(name: str, rdtype: str) -> None:
        async with slots:
            query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
            await dns.asyncquery.udp(query, "127.0.0.1", timeout=5, port=port)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(ask(n, t) for n in names for t in ("A", "AAAA")))
    return time.perf_counter() - started, time.process_time() - cpu


async def bench_resolve(hosts: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-divert-") as tmp:
        work = Path(tmp)
        names, records = zone(hosts)
        (work / "zone.json").write_text(json.dumps(records))
        (work / "feed.txt").write_text("".join(f"http://{n}/page.html\n" for n in names))
        key = work / "divert.key"
        hostkey.generate(key)
        store = (work / "store").as_uri()
        args = sync_cli.build_parser().parse_args(
            ["--store", store, "--divert-key-file", str(key), "--quiet",
             "--feed-url", (work / "feed.txt").as_uri(), "--format", "text"]
        )  # fmt: skip
        assert await sync_cli.run(args) == 0
        process, address = await start_dns(work / "zone.json")
        try:
            port = int(address.rsplit(":", 1)[1])
            reference, reference_cpu = await reference_queries(names, port)
            config = DivertConfig(
                store=store,
                key_file=key,
                resolvers=(address,),
                concurrency=CONCURRENCY,
                max_per_host=4,
                max_total=100_000,
            )
            started, cpu = time.perf_counter(), time.process_time()
            result = await resolve_once(config)
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - cpu
            again_started = time.perf_counter()
            again = await resolve_once(config)
            again_elapsed = time.perf_counter() - again_started
            server_cpu = _cpu_of(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=10)
        assert result.status == "published", result.line()
        counts = result.outcome.counts() if result.outcome else {}
        print(f"resolve {hosts:,} hosts ({2 * hosts:,} questions, concurrency {CONCURRENCY}):")
        print(
            f"  blocklist-divert resolve: {elapsed:.2f} s (target < 30 s), its CPU "
            f"{elapsed_cpu:.2f} s; {result.line()}"
        )
        print(f"  hosts by state: {counts}")
        print(f"  again (unchanged answers): {again_elapsed:.2f} s; {again.line()}")
        print(
            f"  reference, bare dnspython UDP queries: {reference:.2f} s, CPU "
            f"{reference_cpu:.2f} s (resolve costs {elapsed_cpu / reference_cpu:.2f}x its CPU)"
        )
        print(f"  the test DNS server's CPU over the three runs: {server_cpu:.2f} s")
        print(f"  load average: {os.getloadavg()[0]:.1f} (2 cores: others' work slows wall times)")


def bench_nft(addresses: int, rounds: int) -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None:
        print("nft replace: skipped (needs root, nft and ip: a network namespace)")
        return
    name = f"bpt-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        command = ["ip", "netns", "exec", name, "nft"]
        subprocess.run(
            [*command, "-D", "SUBSCRIBERS=lo", "-f", str(ROOT / "deploy" / "nftables-divert.nft")],
            check=True, timeout=30,
        )  # fmt: skip
        ipv4 = [
            f"{prefix}.{i}" for prefix in ("192.0.2", "198.51.100", "203.0.113") for i in range(256)
        ]
        base = int(ipaddress.IPv6Address("2001:db8::"))
        count6 = addresses - len(ipv4)
        first = DiversionSet(
            ipv4=ipv4, ipv6=[str(ipaddress.IPv6Address(base + 2 * i)) for i in range(count6)]
        )
        shift = count6 // 100  # 1% of the addresses change
        second = DiversionSet(
            ipv4=ipv4,
            ipv6=[str(ipaddress.IPv6Address(base + 2 * i)) for i in range(shift, count6 + shift)],
        )
        started = time.perf_counter()
        nft.apply(first, nft=command)
        initial = time.perf_counter() - started
        times, cpus, floors = [], [], []
        for r in range(rounds):
            started, cpu = time.perf_counter(), _children_cpu()
            nft.apply(second if r % 2 == 0 else first, nft=command)
            times.append(time.perf_counter() - started)
            cpus.append(_children_cpu() - cpu)
        empty = DiversionSet.EMPTY
        for _ in range(rounds):
            started = time.perf_counter()
            nft.apply(empty, nft=command)  # both sets now empty: flush only
            floors.append(time.perf_counter() - started)
        listed = subprocess.run(
            [*command, "-j", "list", "set", "inet", "blocklist", "divert6"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert "elem" not in json.loads(listed.stdout)["nftables"][1]["set"]
        median, floor = statistics.median(times), statistics.median(floors)
        print(f"replace a {len(first):,}-address set (768 IPv4, {count6:,} IPv6; 1% changed):")
        print(f"  first fill: {initial:.2f} s")
        print(
            f"  replace, median of {rounds}: {median:.2f} s (target < 1 s; "
            f"min {min(times):.2f}, max {max(times):.2f}); nft's CPU (user + system), median "
            f"{statistics.median(cpus):.2f} s"
        )
        print(
            f"  reference, a flush-only nft transaction: {floor * 1000:.0f} ms "
            f"(replacing costs {median / floor:.0f}x it)"
        )
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(bench_resolve(args.hosts))
    bench_nft(args.addresses, args.rounds)


if __name__ == "__main__":
    main()
