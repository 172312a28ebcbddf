"""Sync benchmark: a 1,000,000-entry text feed into a real Redis, then an unchanged re-sync.

Runs a private redis-server on 127.0.0.1 and an aiohttp feed server in the same process.
Reports wall time of the first sync (target < 20 s), of the unchanged re-sync (one 304),
Redis memory per entry, and, as a reference measured in the same run, the time to just
split the feed into lines and SHA-256 each one (the least any sync must do per entry).

    .venv/bin/python bench/syncing.py [--entries 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import tempfile
import time

import redis.asyncio as aioredis
from aiohttp import web
from support import free_port, redis_binary

from sync import cli


async def wait_for_redis(url: str, deadline: float) -> None:
    client = aioredis.from_url(url)
    try:
        while True:
            try:
                await client.ping()
                return
            except (OSError, aioredis.ConnectionError):
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def make_feed(n: int) -> bytes:
    lines = (f"http://h{i // 2:x}.example{i % 3}.test/gallery/{i:x}/page{i}.html" for i in range(n))
    return ("\n".join(lines) + "\n").encode()


def reference_seconds(feed: bytes) -> float:
    start = time.perf_counter()
    for line in feed.splitlines():
        hashlib.sha256(line).digest()
    return time.perf_counter() - start


async def main(n: int) -> None:
    feed = make_feed(n)
    etag = f'"{hashlib.sha256(feed).hexdigest()[:16]}"'
    requests: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            requests.append(304)
            return web.Response(status=304)
        requests.append(200)
        return web.Response(body=feed, headers={"ETag": etag})

    app = web.Application()
    app.router.add_get("/feed.txt", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    feed_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", feed_port).start()

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *("--appendonly", "no", "--dir", tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            await wait_for_redis(url, time.monotonic() + 10)
            client = aioredis.from_url(url)
            base = (await client.info("memory"))["used_memory"]
            argv = ["--store", url, "--feed-url", f"http://127.0.0.1:{feed_port}/feed.txt"]
            argv += ["--format", "text", "--name", "bench", "--quiet"]
            args = cli.build_parser().parse_args(argv)

            start = time.perf_counter()
            assert await cli.run(args) == 0
            first = time.perf_counter() - start
            used = (await client.info("memory"))["used_memory"] - base

            start = time.perf_counter()
            assert await cli.run(args) == 0
            again = time.perf_counter() - start
            await client.aclose()
        finally:
            server.terminate()
            server.wait(10)
    await runner.cleanup()

    reference = reference_seconds(feed)
    print(f"python {sys.version.split()[0]}, {n:,} entries, feed {len(feed) / 1e6:.1f} MB")
    print(f"  first sync into Redis: {first:.2f} s (target < 20 s), {first / reference:.1f}x")
    print(f"    the reference (split lines + SHA-256 each): {reference:.2f} s")
    print(f"  unchanged re-sync: {again * 1000:.0f} ms, feed requests: {requests}")
    print(f"  Redis memory: {used / n:.1f} bytes per entry ({used / 1e6:.1f} MB)")
    print("    (the active version, the previous ones kept, and the feed's compiled entries)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().entries))
