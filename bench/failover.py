"""Sentinel failover benchmark: how long from a primary's SIGKILL to a new version enforced.

Each round starts a primary, a replica and three sentinels on loopback
(``testlab/sentinel_lab.py``: ``down-after-milliseconds`` 1000, ``failover-timeout`` 2000),
syncs the sample feed, starts two ``blocklist-proxy`` processes on the Sentinel URL, then
SIGKILLs the primary and at once runs ``blocklist-sync`` with one more entry. It reports,
per round and as median and worst: when the sync exited (0: it completed on the new
primary), and when the first and the last proxy enforced the new version (read from their
``blocklist_list_version`` gauge every 10 ms), all counted from the kill.

    .venv/bin/python bench/failover.py [--rounds 5]

Sentinel's own detection (``down-after-milliseconds``) and election are part of the figure:
with Sentinel's default of 30 s, add 29 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support import redis_binary  # noqa: E402

from testlab.harness import VENV_BIN, Proxy, feed_with  # noqa: E402
from testlab.origins import TestCA  # noqa: E402
from testlab.sentinel_lab import sentinel_cluster  # noqa: E402


def sync(url: str, feed: Path, data: Path) -> int:
    command = [
        str(VENV_BIN / "blocklist-sync"), "--store", url, "--feed-url", feed.as_uri(),
        "--format", "text", "--name", "sample", "--force", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(data)}
    return subprocess.run(command, env=env, capture_output=True, timeout=300).returncode


def one_round(directory: Path, ca: TestCA) -> tuple[int, float, float, float]:
    with sentinel_cluster(Path(redis_binary()), directory / "sentinel") as cluster:
        url = cluster.url(failover_timeout="30")
        data = directory / "data"
        if sync(url, feed_with(directory), data) != 0:
            raise SystemExit("the first sync failed")
        proxies = [
            Proxy(
                directory / f"proxy{i}", store=url, routes=None, confdir=directory / "conf", ca=ca
            )
            for i in range(2)
        ]
        try:
            for proxy in proxies:
                proxy.start()
            before = proxies[0].metric("blocklist_list_version")
            (directory / "next").mkdir()
            feed = feed_with(directory / "next", "http://fresh.example.net/new.html")
            cluster.primary.kill()
            killed = time.monotonic()
            status = sync(url, feed, data)
            synced = time.monotonic() - killed
            seen: dict[int, float] = {}
            deadline = killed + 120
            while len(seen) < len(proxies) and time.monotonic() < deadline:
                for i, proxy in enumerate(proxies):
                    if i not in seen and proxy.metric("blocklist_list_version") > before:
                        seen[i] = time.monotonic() - killed
                time.sleep(0.01)  # poll interval of the measurement
            if len(seen) < len(proxies):
                raise SystemExit("a proxy never enforced the new version")
            return status, synced, min(seen.values()), max(seen.values())
        finally:
            for proxy in proxies:
                proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp) / "ca")
        for n in range(args.rounds):
            directory = Path(tmp) / f"round{n}"
            directory.mkdir()
            status, synced, first, last = one_round(directory, ca)
            rows.append((synced, first, last))
            print(
                f"round {n + 1}: sync exit {status} at {synced:.2f} s, new version enforced "
                f"at {first:.2f} s by the first proxy, {last:.2f} s by both (from the kill)",
                flush=True,
            )
    for name, values in zip(
        ("sync done", "first proxy", "both proxies"), zip(*rows, strict=True), strict=True
    ):
        print(f"{name}: median {statistics.median(values):.2f} s, worst {max(values):.2f} s")


if __name__ == "__main__":
    main()
