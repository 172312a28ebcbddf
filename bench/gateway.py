"""Gateway benchmark: what two-stage diversion costs the traffic it does NOT divert.

Network namespaces (testlab/netns.py; documentation addresses only; needs root, ip, nft and
iperf3): one client and one server joined by four gateways side by side, each its own
namespace and path (the client reaches a different server address through each):

- ``bare``:      forwards, no nft table at all (the reference);
- ``conntrack``: connection tracking on (one ``ct state`` rule) and nothing else, as on any
                 gateway that already does NAT or stateful filtering (the diversion's
                 redirect needs it, so this is the diversion's floor);
- ``table``:     deploy/nftables-divert.nft with a 100,000-address diversion set (IPv6; plus
                 the IPv4 documentation addresses the topology does not use) and
                 blocklist-proxy --mode transparent behind it; the target is not diverted;
- ``notrack``:   the same table and set plus deploy/nftables-divert-notrack.nft (connection
                 tracking for diverted traffic only, for gateways that track nothing else).

Because nothing is reconfigured between them, the four are measured interleaved: one client
process alternates between the four targets every 0.2 s, so a machine whose load drifts
moves all four alike. Measured: new TCP connections per second (connect, one HTTP request
and response, close), new TLS connections per second (a full handshake with the origin, one
request, close), serial from one client process; bulk MB/s (iperf3, one stream, alternating
1 s runs). The proxy's CPU time and connection counter (blocklist_client_connections_total)
over the undiverted traffic must not move. For contrast, the same TCP and TLS traffic to a
diverted address on the table's path, all through the proxy. Also timed: replacing the
100,000-address set (``divert.nft.apply``, one transaction; measured alone).

    .venv/bin/python bench/gateway.py [--seconds 10] [--bulk-runs 5] [--family 6|4]

Targets (DESIGN "Performance targets"): table/bare >= 0.95 for every figure; zero proxy
connections and CPU for undiverted traffic; replacing 100,000 addresses in under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

TARGET = 0.95
SET_SIZE = 100_000
PATHS = ("bare", "conntrack", "table", "notrack")
BURST = 0.2
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: unlisted.example.org\r\nConnection: close\r\n\r\n"
SNI = "unlisted.example.org"
#: A stateful firewall's one rule: connection tracking on, nothing else. (An empty nat chain
#: would not do: the kernel tracks connections only once a rule needs it, e.g. a redirect.)
CONNTRACK_ONLY = """
table inet bench_conntrack {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
    }
}
"""


# -- roles run inside a namespace (python bench/gateway.py serve|client ...) -------------------


async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HTTP_RESPONSE)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int, tls_dir: str | None) -> None:
    """An HTTP(S) server on every address of the namespace."""
    context = None
    if tls_dir:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(Path(tls_dir) / "origin.pem", Path(tls_dir) / "origin.key")
    server = await asyncio.start_server(_serve_http, None, port, ssl=context, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _one(address: str, port: int, context: ssl.SSLContext | None) -> None:
    with socket.create_connection((address, port), timeout=5) as raw:
        sock = context.wrap_socket(raw, server_hostname=SNI) if context else raw
        sock.sendall(REQUEST)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise ConnectionError("bad answer")


def client(targets: list[str], port: int, seconds: float, ca: str | None) -> None:
    """Serial new connections, alternating between ``targets`` every BURST seconds until
    each had ``seconds``; prints {target: {"rate": per second, "errors": n}}."""
    context = ssl.create_default_context(cafile=ca) if ca else None
    done = dict.fromkeys(targets, 0)
    errors = dict.fromkeys(targets, 0)
    spent = dict.fromkeys(targets, 0.0)
    cycle = 0
    while min(spent.values()) < seconds:
        cycle += 1  # each cycle starts with another target: no target always follows another
        for target in targets[cycle % len(targets) :] + targets[: cycle % len(targets)]:
            started = time.monotonic()
            while (now := time.monotonic()) - started < BURST:
                try:
                    _one(target, port, context)
                    done[target] += 1
                except (OSError, ssl.SSLError):
                    errors[target] += 1
            spent[target] += now - started
    report = {t: {"rate": done[t] / spent[t], "errors": errors[t]} for t in targets}
    print(json.dumps(report))


# -- the topology -----------------------------------------------------------------------------


def addresses(index: int, family: str) -> dict[str, str]:
    """The addresses of one gateway path (client side, gateway, server side)."""
    if family == "4":
        base_c, base_s = 16 * index, 16 * index
        return {
            "client": f"198.51.100.{base_c + 2}",
            "gw_client": f"198.51.100.{base_c + 1}",
            "client_net": f"198.51.100.{base_c}/28",
            "gw_server": f"203.0.113.{base_s + 1}",
            "server": f"203.0.113.{base_s + 10}",
            "diverted": f"203.0.113.{base_s + 11}",
            "server_net": f"203.0.113.{base_s}/28",
            "prefix": "28",
        }
    return {
        "client": f"2001:db8:1:{index}::2",
        "gw_client": f"2001:db8:1:{index}::1",
        "client_net": f"2001:db8:1:{index}::/64",
        "gw_server": f"2001:db8:2:{index}::1",
        "server": f"2001:db8:2:{index}::10",
        "diverted": f"2001:db8:2:{index}::11",
        "server_net": f"2001:db8:2:{index}::/64",
        "prefix": "64",
    }


def build(lab, family: str):
    """client and server namespaces joined through one gateway namespace per path."""
    client_ns, server_ns = lab.namespace("bclient"), lab.namespace("bserver")
    gateways = {}
    for index, name in enumerate(PATHS):
        gw = lab.namespace(f"b{name}")
        a = addresses(index, family)
        sub, up = f"sub{index}", f"up{index}"
        lab.link(gw, "sub0", client_ns, sub)
        lab.link(gw, "up0", server_ns, up)
        six = ["-6"] if family == "6" else []
        extra = ["nodad"] if family == "6" else []
        client_ns.ip(*six, "addr", "add", f"{a['client']}/{a['prefix']}", "dev", sub, *extra)
        gw.ip(*six, "addr", "add", f"{a['gw_client']}/{a['prefix']}", "dev", "sub0", *extra)
        gw.ip(*six, "addr", "add", f"{a['gw_server']}/{a['prefix']}", "dev", "up0", *extra)
        for address in (a["server"], a["diverted"]):
            server_ns.ip(*six, "addr", "add", f"{address}/{a['prefix']}", "dev", up, *extra)
        client_ns.ip(*six, "route", "add", a["server_net"], "via", a["gw_client"])
        server_ns.ip(*six, "route", "add", a["client_net"], "via", a["gw_server"])
        gw.sysctl("net.ipv4.ip_forward", "1")
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")
        gateways[name] = gw
    return client_ns, server_ns, gateways


def big_set(family: str):
    """100,000 IPv6 addresses (never adjacent, so nft cannot merge them) and every IPv4
    documentation address the topology does not use."""
    from divert.dataset import DiversionSet

    base6 = int(ipaddress.IPv6Address("2001:db8:ffff::"))
    ipv6 = [str(ipaddress.IPv6Address(base6 + 2 * i)) for i in range(SET_SIZE)]
    used = [ipaddress.ip_network(f"198.51.100.{16 * i}/28") for i in range(len(PATHS))]
    used += [ipaddress.ip_network(f"203.0.113.{16 * i}/28") for i in range(len(PATHS))]
    ipv4 = [
        str(a)
        for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
        for a in ipaddress.ip_network(net).hosts()
        if not any(a in u for u in used)
    ]
    return DiversionSet(ipv4=tuple(ipv4), ipv6=tuple(ipv6))


# -- the driver -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--tls-dir")
    c = sub.add_parser("client")
    c.add_argument("targets")
    c.add_argument("port", type=int)
    c.add_argument("seconds", type=float)
    c.add_argument("--ca")
    parser.add_argument("--seconds", type=float, default=10.0, help="per path and kind (10)")
    parser.add_argument("--bulk-runs", type=int, default=5, help="iperf3 runs per path (5)")
    parser.add_argument("--family", choices=["4", "6"], default="6", help="traffic family (6)")
    args = parser.parse_args()
    if args.role == "serve":
        asyncio.run(serve(args.port, args.tls_dir))
        return 0
    if args.role == "client":
        client(args.targets.split(","), args.port, args.seconds, args.ca)
        return 0
    return drive(args.seconds, args.bulk_runs, args.family)


def drive(seconds: float, bulk_runs: int, family: str) -> int:
    """Everything the run makes (CA, store, proxy data) lives in a directory removed after."""
    from testlab.netns import unavailable

    if reason := unavailable("nft", "iperf3"):
        raise SystemExit(f"bench/gateway.py: {reason}")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        return _drive(Path(tmp), seconds, bulk_runs, family)


def _drive(work: Path, seconds: float, bulk_runs: int, family: str) -> int:
    from divert.dataset import DiversionSet
    from divert.planes.nft import apply
    from testlab.divert_lab import PROXY_PORT, load_notrack, load_table
    from testlab.harness import Proxy, synced_store
    from testlab.netns import Lab, stop
    from testlab.origins import TestCA

    ca = TestCA(work / "ca")
    big = big_set(family)
    with Lab() as lab:
        client_ns, server_ns, gateways = build(lab, family)
        targets = {name: addresses(i, family)["server"] for i, name in enumerate(PATHS)}
        diverted = addresses(PATHS.index("table"), family)["diverted"]
        for port, tls in ((80, None), (443, str(work / "ca"))):
            server = server_ns.popen(
                [
                    sys.executable,
                    __file__,
                    "serve",
                    str(port),
                    *(["--tls-dir", tls] if tls else []),
                ],
                stdout=subprocess.PIPE,
            )
            assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        for target in targets.values():
            server_ns.popen(
                ["iperf3", "-s", "-B", target],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        gateways["conntrack"].nft(CONNTRACK_ONLY)
        table = gateways["table"]
        nft = [*table.exec_prefix(), "nft"]
        load_table(table, "sub0")
        apply_times = []
        for dset in (big, DiversionSet(ipv4=big.ipv4, ipv6=big.ipv6[1:]), big) * 2:
            started = time.perf_counter()
            apply(dset, nft=nft)
            apply_times.append(time.perf_counter() - started)
        with_diverted = DiversionSet(
            ipv4=big.ipv4 + ((diverted,) if family == "4" else ()),
            ipv6=big.ipv6 + ((diverted,) if family == "6" else ()),
        )
        apply(with_diverted, nft=nft)
        untracked = gateways["notrack"]
        load_table(untracked, "sub0")
        index = PATHS.index("notrack")
        own = [addresses(index, f) for f in ("4", "6")]
        load_notrack(
            untracked,
            [own[0]["gw_client"], own[0]["gw_server"]],
            [own[1]["gw_client"], own[1]["gw_server"]],
            "sub0",
        )
        apply(big, nft=[*untracked.exec_prefix(), "nft"])
        proxy = Proxy(
            work / "proxy",
            store=synced_store(work / "list"),
            routes=None,
            confdir=work / "mitmproxy",
            ca=ca,
            mode="transparent",
            netns=table,
            options={"listen_host": "", "blocklist_intercept": "never"},
        )
        proxy.port = PROXY_PORT
        proxy.start()
        try:
            results = measure(proxy, client_ns, targets, diverted, seconds, bulk_runs, work)
            # Which paths tracked connections (the bare one must not; the others must).
            results["tracked"] = {
                name: gw.run(
                    "cat", "/proc/sys/net/netfilter/nf_conntrack_count", check=False
                ).strip()
                or "0"
                for name, gw in gateways.items()
            }
        finally:
            assert proxy.process is not None
            stop(proxy.process)
    report(results, apply_times, family, seconds, bulk_runs)
    return 0


def measure(proxy, client_ns, targets, diverted, seconds, bulk_runs, work) -> dict:
    ca = str(work / "ca" / "test-ca.pem")
    order = list(targets.values())
    results: dict = {"rates": {}, "errors": 0}

    def run_client(kind: str, port: int, which: list[str], span: float) -> dict:
        cmd = [sys.executable, __file__, "client", ",".join(which), str(port), f"{span:g}"]
        out = client_ns.run(*cmd, *(["--ca", ca] if kind == "tls" else []), timeout=span * 8)
        return json.loads(out)

    # Idle: what the proxy costs with nothing to do, over as long as the traffic will take.
    idle_cpu, idle_started = proxy_cpu(proxy), time.monotonic()
    time.sleep(10)
    idle_rate = (proxy_cpu(proxy) - idle_cpu) / (time.monotonic() - idle_started)
    connections, cpu, started = proxy_connections(proxy), proxy_cpu(proxy), time.monotonic()
    for kind, port in (("tcp", 80), ("tls", 443)):
        answer = run_client(kind, port, order, seconds)
        for name, target in targets.items():
            results["rates"][(name, kind)] = answer[target]["rate"]
            results["errors"] += answer[target]["errors"]
    bulk: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(bulk_runs):
        for name, target in targets.items():
            out = client_ns.run("iperf3", "-c", target, "-t", "2", "-O", "1", "-J")
            bulk[name].append(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8e6)
    results["bulk"] = bulk
    elapsed = time.monotonic() - started
    results["undiverted"] = {
        "connections": proxy_connections(proxy) - connections,
        "cpu": proxy_cpu(proxy) - cpu,
        "idle_cpu": idle_rate * elapsed,
        "seconds": elapsed,
    }
    # Contrast: the same connections to a diverted address, all through the proxy.
    for kind, port in (("tcp", 80), ("tls", 443)):
        connections, cpu = proxy_connections(proxy), proxy_cpu(proxy)
        answer = run_client(kind, port, [diverted], seconds / 2)
        results["rates"][("proxied", kind)] = answer[diverted]["rate"]
        results["errors"] += answer[diverted]["errors"]
        done = proxy_connections(proxy) - connections
        results[("proxied", kind, "cpu")] = (proxy_cpu(proxy) - cpu) / max(1, done)
    return results


def proxy_cpu(proxy) -> float:
    fields = Path(f"/proc/{proxy.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_connections(proxy) -> float:
    return proxy.metric("blocklist_client_connections_total")


def report(results: dict, apply_times: list[float], family, seconds, bulk_runs) -> None:
    rates, bulk, und = results["rates"], results["bulk"], results["undiverted"]
    med = statistics.median
    print(
        f"gateway benchmark: IPv{family}, {seconds:g} s of serial connections per path and kind "
        f"(interleaved every {BURST:g} s), {bulk_runs} iperf3 runs per path; diversion set "
        f"{SET_SIZE:,} IPv6 + the unused IPv4 documentation addresses\n"
    )
    print(f"{'path':<10} {'TCP conn/s':>10} {'TLS conn/s':>10} {'MB/s':>8}")
    for name in PATHS:
        print(
            f"{name:<10} {rates[(name, 'tcp')]:10.0f} {rates[(name, 'tls')]:10.0f} "
            f"{med(bulk[name]):8.0f}"
        )
    print(
        f"{'proxied':<10} {rates[('proxied', 'tcp')]:10.0f} {rates[('proxied', 'tls')]:10.0f} "
        f"{'-':>8}   (the diverted address: every connection through the proxy)"
    )
    tracked = ", ".join(f"{name} {count}" for name, count in results["tracked"].items())
    print(f"errors: {results['errors']}; connections tracked at the end: {tracked}\n")
    for path, reference in (("table", "bare"), ("table", "conntrack"), ("notrack", "bare")):
        figures = [
            ("tcp", rates[(path, "tcp")] / rates[(reference, "tcp")]),
            ("tls", rates[(path, "tls")] / rates[(reference, "tls")]),
            ("bulk", med([t / r for t, r in zip(bulk[path], bulk[reference], strict=True)])),
        ]
        line = ", ".join(
            f"{kind} {ratio:.3f}{'' if ratio >= TARGET else ' (BELOW ' + str(TARGET) + ')'}"
            for kind, ratio in figures
        )
        print(f"{path}/{reference}: {line}")
    print(
        f"proxy during the undiverted traffic ({und['seconds']:.0f} s): "
        f"{und['connections']:.0f} connections, {und['cpu']:.2f} CPU s "
        f"(idle would be {und['idle_cpu']:.2f})"
    )
    for kind in ("tcp", "tls"):
        ratio = rates[("proxied", kind)] / rates[("bare", kind)]
        cpu = results[("proxied", kind, "cpu")] * 1e3
        print(
            f"all through the proxy, {kind}: {ratio:.2f}x the bare rate, "
            f"{cpu:.2f} ms proxy CPU per connection"
        )
    print(
        f"replacing the {SET_SIZE:,}-address set ({len(apply_times)} times): median "
        f"{med(apply_times):.2f} s, max {max(apply_times):.2f} s (target < 1 s)"
    )


if __name__ == "__main__":
    sys.exit(main())
