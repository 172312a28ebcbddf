"""Hash feed benchmark: memory and time to parse a 1,000,000-record ``hashes-jsonl`` feed,
build its snapshot, and rebuild the active list from the stored one, as ``blocklist-sync``
does (``parse_feed``, ``worker._pack``, then ``worker.build`` from a file store).

The feed is made here from random MD5 + PDQ hashes and short ids (never real list content).
Each step runs in a fresh child process, so that one measurement's allocations do not
serve the next: once untraced (wall time, and peak RSS over the RSS with the body already
in memory) and once under tracemalloc (peak traced bytes, the body excluded). Memory is
reported per record and as a ratio to the reference measured in the same run: the raw
bytes of the record's hashes and id, the least any in-memory form can hold.

    .venv/bin/python bench/hashfeed.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from blocklist_addon.lists.store import open_store
from sync import worker
from sync.config import Feed
from sync.feeds import parse_feed
from sync.fetch import FeedSource


def make_feed(n: int, seed: int = 20) -> tuple[bytes, int]:
    """The feed, and the raw bytes of its hashes and ids (the reference)."""
    rng = random.Random(seed)
    lines = []
    raw = 0
    for i in range(n):
        entry_id = f"h{i:x}"
        md5, pdq = rng.randbytes(16), rng.randbytes(32)
        lines.append(json.dumps({"id": entry_id, "md5": md5.hex(), "pdq": pdq.hex()}))
        raw += len(md5) + len(pdq) + len(entry_id)
    return ("\n".join(lines) + "\n").encode(), raw


def rss() -> int:
    """Resident bytes now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(n: int, traced: bool) -> dict[str, float]:
    data, raw = make_feed(n)
    feed = Feed(FeedSource(name="bench", url="file:///bench", format="hashes-jsonl"), "bench")
    before = rss()
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    parsed = parse_feed(data, "hashes-jsonl")
    parsed_at = time.perf_counter()
    parse_peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.reset_peak()
    blob = worker._pack(feed, parsed.entries)  # type: ignore[arg-type]
    built_at = time.perf_counter()
    build_peak = tracemalloc.get_traced_memory()[1] if traced else 0
    assert parsed.records == n and len(blob) > raw
    del parsed
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp).as_uri(), namespace="hashes")
        asyncio.run(store.set_blob(worker.feed_key("bench"), blob))
        if traced:
            tracemalloc.reset_peak()
        started = time.perf_counter()
        active = asyncio.run(worker.build(store, [feed], set()))
        rebuilt_at = time.perf_counter()
        rebuild_peak = tracemalloc.get_traced_memory()[1] if traced else 0
    assert active is not None and len(active) == n
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {
        "raw": raw,
        "parse_s": parsed_at - start,
        "build_s": built_at - parsed_at,
        "parse_peak": parse_peak,
        "build_peak": build_peak,
        "rebuild_s": rebuilt_at - started,
        "rebuild_peak": rebuild_peak,
        "rss": peak_rss,
        "body": len(data),
    }


def run_child(n: int, traced: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--records", str(n), "--child", "traced" if traced else "plain"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["plain", "traced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.records, args.child == "traced")))
        return
    n = args.records
    plain, traced = run_child(n, False), run_child(n, True)
    raw = traced["raw"] / n

    def per(value: float) -> str:
        return f"{value / n:6.0f} B/record ({value / n / raw:4.1f}x the raw hashes and id)"

    print(f"{n:,} records of md5 + pdq + id: body {plain['body'] / n:.0f} B/record, raw {raw:.0f}")
    print(f"parse: {plain['parse_s']:.2f} s, traced peak {per(traced['parse_peak'])}")
    print(f"build: {plain['build_s']:.2f} s, traced peak {per(traced['build_peak'])}")
    print(f"rebuild: {plain['rebuild_s']:.2f} s, traced peak {per(traced['rebuild_peak'])}")
    print(f"peak RSS over the body in memory: {per(plain['rss'])}")


if __name__ == "__main__":
    main()
