"""Load test: blocklist-proxy with a 1,000,000-entry list under many keep-alive clients.

One proxy, one local upstream (``bench/upstream_addon.py``), and 32 keep-alive clients
sending a mix of requests for ``--seconds`` in phases: nine in ten unlisted (they must get
the upstream's 200) and one in ten listed, written in evasion spellings (they must get 451).
Every response is checked, and counted apart: errors (no answer, or a status other than 200
or 451), missed blocks (a listed URL that got 200) and false blocks (an unlisted URL that got
451). After each phase the proxy's resident memory is sampled, so that growth with the
number of requests shows. Bounded: it stops after its phases, and talks only to 127.0.0.1.

    .venv/bin/python bench/load.py [--entries 1000000] [--phases 6] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from matcher import entries, shouted_host
from proxy import (
    BIN,
    TEXT_BODY,
    UPSTREAM_ADDON,
    ProxyProcess,
    Run,
    get_bytes,
    http_handler,
    keepalive_session,
    load,
    sync_list,
    unlisted_gets,
)
from support import free_port


def mixed_workload(n: int, k: int) -> list[tuple[bytes, int]]:
    """k requests: one in ten a listed URL (plain, shouted, with a query or a fragment)."""
    unlisted = [(get_bytes(url), 200) for url in unlisted_gets(n, k)]
    listed = entries(n)
    spellings = [
        lambda u: u,
        shouted_host,
        lambda u: u + "?utm_source=mail",
        lambda u: u.replace("/gallery/", "/gallery/./"),
    ]
    out: list[tuple[bytes, int]] = []
    for j in range(k):
        if j % 10 == 5:
            url = spellings[j % 4](listed[(j * 7919) % n])
            out.append((get_bytes(url), 451))
        else:
            out.append(unlisted[j])
    return out


async def main(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(http_handler(TEXT_BODY, b"text/plain"), "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store, _ = await sync_list(tmp, args.entries)
        port = free_port()
        proxy = ProxyProcess(
            "with addon",
            [
                *(str(BIN / "blocklist-proxy"), "--store", store, "--listen-port", str(port)),
                *("-s", str(UPSTREAM_ADDON), "--set", f"bench_upstream={upstream}"),
                *("--set", f"confdir={tmp / 'mitmproxy'}"),
                *("--set", f"blocklist_status_listen=127.0.0.1:{free_port()}"),
            ],
            port,
            tmp / "proxy.log",
            ["listening at", "enforcing version"],
        )
        try:
            await proxy.ready()
            requests = mixed_workload(args.entries, args.urls)
            print(
                f"python {sys.version.split()[0]}, {args.entries:,} entries, "
                f"{args.connections} keep-alive clients, {args.phases} phases of "
                f"{args.seconds:.0f} s, one request in ten listed"
            )
            print(
                f"{'phase':>5} {'requests':>9} {'req/s':>6} {'p50 ms':>7} {'p95 ms':>7} "
                f"{'p99 ms':>7} {'errors':>6} {'missed':>6} {'false':>6} {'RSS MB':>7}"
            )
            print(f"{'start':>5}{'':>64}{proxy.rss_mb():>7.1f}")
            total, rss = 0, []
            errors = missed = false = 0
            for phase in range(1, args.phases + 1):
                run: Run = await load(
                    port, requests, keepalive_session, args.connections, args.seconds
                )
                total += run.requests + run.errors
                run_missed, run_false = run.wrong[451, 200], run.wrong[200, 451]
                run_errors = run.errors - run_missed - run_false
                errors, missed, false = errors + run_errors, missed + run_missed, false + run_false
                rss.append(proxy.rss_mb())
                print(
                    f"{phase:>5} {total:>9,} {run.rate:>6.0f} {run.percentile(50):>7.2f} "
                    f"{run.percentile(95):>7.2f} {run.percentile(99):>7.2f} {run_errors:>6} "
                    f"{run_missed:>6} {run_false:>6} {rss[-1]:>7.1f}"
                )
            growth = rss[-1] - rss[0]
            print(
                f"{total:,} requests: {errors} errors, {missed} missed blocks, {false} false "
                f"blocks; RSS from phase 1 to {args.phases}: {growth:+.1f} MB"
            )
        finally:
            proxy.stop()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--phases", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--urls", type=int, default=20_000)
    started = time.monotonic()
    asyncio.run(main(parser.parse_args()))
    print(f"took {time.monotonic() - started:.0f} s")
