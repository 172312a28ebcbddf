"""`blocklist-sync` end to end: a real aiohttp feed server, a real Redis and the file store."""

from __future__ import annotations

import asyncio
import pathlib
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import SYNCED_STATE, StoreError, open_store
from blocklist_addon.urls.matcher import Match
from blocklist_addon.urls.snapshot import expression_digest
from sync import cli
from sync.feeds import FORMATS

LISTED = [f"http://blocked{i}.example.com/gallery/page{i}.html" for i in range(40)]
FEED = ("# sample\n" + "\n".join(LISTED) + "\n").encode()
PLAINTEXT = [b"blocked1", b"example.com", b"gallery/page"]
#: A time as `blocklist-sync status` prints it.
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ min ago\)"


def listed(i: int) -> Match:
    """What the synced list answers for LISTED[i]: the text feed gives no ids, so the entry
    is named by its digest."""
    digest = expression_digest(f"blocked{i}.example.com/gallery/page{i}.html").hex()
    return Match("iwf", digest, digest, False)


@dataclass
class FeedServer:
    """Serves FEED with an ETag; ``mode`` switches it to one failure at a time."""

    body: bytes = FEED
    mode: str = "ok"
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    never: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def etag(self) -> str:
        return f'"{hash(self.body) & 0xFFFFFFFF:x}"'

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        etag = self.etag
        match self.mode:
            case "500" | "404" | "401":
                return web.Response(status=int(self.mode), text="no")
            case "empty":
                return web.Response(body=b"")
            case "html":
                return web.Response(text="<!DOCTYPE html><html><body>Login</body></html>")
            case "garbage":  # the same bytes every run, so the same refusal
                return web.Response(body=random.Random(27).randbytes(4096))
            case "timeout":
                await self.never.wait()
            case "truncated":
                response = web.StreamResponse(headers={"Content-Length": str(len(self.body))})
                await response.prepare(request)
                await response.write(self.body[: len(self.body) // 2])
                request.transport.close()
                return response
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(body=self.body, headers={"ETag": etag})


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    app = web.Application()
    app.router.add_get("/list.txt", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/list.txt"
    yield server
    server.never.set()
    await runner.cleanup()


@pytest.fixture
def config(tmp_path: pathlib.Path, store_url: str, feed_server: FeedServer) -> pathlib.Path:
    path = tmp_path / "sync.toml"
    path.write_text(
        f'store = "{store_url}"\n'
        "[feeds.iwf]\n"
        f'url = "{feed_server.url}"\n'
        'format = "text"\n'
        "read_timeout = 0.5\n"
        "retries = 1\n"
        "backoff = 0.01\n"
    )
    return path


async def sync(*argv: str) -> int:
    return await cli.run(cli.build_parser().parse_args(list(argv)))


async def active(store_url: str) -> tuple[int, bytes] | None:
    store = open_store(store_url)
    try:
        pair = await store.load_active()
        return None if pair is None else (pair[0].version, pair[1])
    finally:
        await store.close()


async def test_good_feed_activates_and_blocks(config: pathlib.Path, store_url: str) -> None:
    assert await sync("--config", str(config)) == 0
    found = await active(store_url)
    assert found is not None and found[0] == 1
    bl = Blocklist.from_bytes(found[1])
    assert len(bl) == len(LISTED)
    assert bl.match("HTTP://WWW.BLOCKED7.EXAMPLE.COM/gallery/page7.html?x=1") == listed(7)
    assert bl.match("http://blocked7.example.com/gallery/") is None


async def test_unchanged_feed_is_one_304(
    config: pathlib.Path, store_url: str, feed_server: FeedServer
) -> None:
    assert await sync("--config", str(config)) == 0
    before = await active(store_url)
    feed_server.requests.clear()
    assert await sync("--config", str(config)) == 0
    assert len(feed_server.requests) == 1
    assert feed_server.requests[0]["If-None-Match"] == feed_server.etag
    assert await active(store_url) == before


async def synced_state(store_url: str) -> dict[str, object] | None:
    store = open_store(store_url)
    try:
        return await store.get_state(SYNCED_STATE)
    finally:
        await store.close()


async def test_unchanged_feed_confirms_the_list_current(
    config: pathlib.Path, store_url: str, feed_server: FeedServer
) -> None:
    """A 304 makes no version, so proxies learn the list is still current from the synced
    state: without it an unchanged list would read as stale after blocklist_max_age."""
    assert await sync("--config", str(config)) == 0
    first = await synced_state(store_url)
    assert first is not None and first["version"] == 1
    # The checksum says which list version 1 is (a store that lost its data numbers anew).
    store = open_store(store_url)
    try:
        info = await store.active()
    finally:
        await store.close()
    assert info is not None and first["checksum"] == info.checksum
    assert await sync("--config", str(config)) == 0  # a 304
    second = await synced_state(store_url)
    assert second is not None and second["version"] == 1
    assert second["fresh_at"] > first["fresh_at"]
    feed_server.mode = "500"
    assert await sync("--config", str(config)) == 1  # a failed feed confirms nothing
    assert await synced_state(store_url) == second


@pytest.mark.parametrize(
    "mode", ["500", "404", "401", "empty", "html", "garbage", "timeout", "truncated", "shrink"]
)
async def test_bad_feed_exits_1_and_changes_nothing(
    config: pathlib.Path,
    store_url: str,
    feed_server: FeedServer,
    mode: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await sync("--config", str(config)) == 0
    before = await active(store_url)
    capsys.readouterr()
    if mode == "shrink":
        feed_server.body = ("\n".join(LISTED[:10]) + "\n").encode()
    else:
        feed_server.mode = mode
    assert await sync("--config", str(config)) == 1
    err = capsys.readouterr().err
    reason = {
        "500": f"HTTP 500 from {feed_server.url} (after 2 attempts)",
        "404": f"HTTP 404 from {feed_server.url} (check the feed URL)",
        "401": f"HTTP 401 from {feed_server.url} (the feed needs credentials: token_file, "
        "basic_auth_env or client_cert)",
        "empty": "feed is empty",
        "html": "feed looks like an HTML page, not a text list",
        "garbage": "not text: a binary control byte at line 1",
        "timeout": f"timed out: no data from {feed_server.url} for 0.5s (after 2 attempts)",
        "truncated": f"truncated body from {feed_server.url}: {len(FEED) // 2} of {len(FEED)} "
        "bytes (after 2 attempts)",
        "shrink": "shrank from 40 to 10 entries (75%), over the 50% limit; use --force if intended",
    }[mode]
    assert err == f"iwf: FAILED: {reason}; its last good entries stay in force\n"
    assert await active(store_url) == before


async def test_shrink_is_accepted_with_force(
    config: pathlib.Path, store_url: str, feed_server: FeedServer
) -> None:
    assert await sync("--config", str(config)) == 0
    feed_server.body = ("\n".join(LISTED[:10]) + "\n").encode()
    assert await sync("--config", str(config), "--force") == 0
    found = await active(store_url)
    assert found is not None and len(Blocklist.from_bytes(found[1])) == 10


async def test_two_syncs_at_once(config: pathlib.Path, store_url: str) -> None:
    results = await asyncio.gather(*(sync("--config", str(config)) for _ in range(3)))
    assert results == [0, 0, 0]
    found = await active(store_url)
    assert found is not None and len(Blocklist.from_bytes(found[1])) == len(LISTED)


async def test_suppress_rollback_and_status(
    config: pathlib.Path,
    store_url: str,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await sync("--config", str(config)) == 0
    bl = Blocklist.from_bytes((await active(store_url) or (0, b""))[1])
    m = bl.match(LISTED[3])
    assert m == listed(3)

    assert await sync("--config", str(config), "suppress", m.entry_id, "--note", "appeal 12") == 0
    found = await active(store_url)
    assert found is not None and found[0] == 2
    assert Blocklist.from_bytes(found[1]).match(LISTED[3]) is None
    capsys.readouterr()
    assert await sync("--config", str(config), "status") == 0
    out = capsys.readouterr().out
    suppressed = out.splitlines()[-1]
    assert re.fullmatch(f"suppressed: {m.entry_id} since {WHEN}, note: appeal 12", suppressed)

    assert await sync("--config", str(config), "unsuppress", m.entry_id) == 0
    found = await active(store_url)
    assert found is not None and found[0] == 3
    assert Blocklist.from_bytes(found[1]).match(LISTED[3]) == m

    # A new feed version, rolled back: the next cron run must not bring it straight back.
    feed_server.body = FEED + b"http://blocked-new.example.net/x.html\n"
    assert await sync("--config", str(config)) == 0
    newest = await active(store_url)
    assert await sync("--config", str(config), "rollback") == 0
    rolled = await active(store_url)
    assert newest is not None and newest[0] == 4
    assert rolled is not None and rolled[0] == 5  # a rollback is a new version of the old list
    assert Blocklist.from_bytes(rolled[1]).match("http://blocked-new.example.net/x.html") is None
    assert await sync("--config", str(config)) == 0
    assert await active(store_url) == rolled
    # --force brings it back on purpose.
    assert await sync("--config", str(config), "--force") == 0
    again = await active(store_url)
    assert again is not None and again[0] == 6
    new = expression_digest("blocked-new.example.net/x.html").hex()
    found_new = Blocklist.from_bytes(again[1]).match("http://blocked-new.example.net/x.html")
    assert found_new == Match("iwf", new, new, False)


async def test_store_down_exits_1_with_a_clear_message(
    tmp_path: pathlib.Path,
    redis_factory: Callable[..., object],
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = redis_factory()
    url = server.url  # type: ignore[attr-defined]
    server.stop()  # type: ignore[attr-defined]
    code = await _main("--store", url, "--feed-url", feed_server.url, "--format", "text")
    assert code == 1
    err = capsys.readouterr().err
    address = url.removeprefix("redis://").removesuffix("/0")
    assert err == (
        f"blocklist-sync: redis at {address} unreachable: Connection refused; the previous "
        "list stays active\n"
    )


async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await _main("--feed-url", "http://127.0.0.1:9/x") == 2
    formats = ", ".join(FORMATS)
    assert capsys.readouterr().err == f"blocklist-sync: --feed-url needs --format ({formats})\n"
    assert await _main("--store", "ftp://127.0.0.1/", "status") == 2


async def _main(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_no_plaintext_in_the_store(config: pathlib.Path, store_url: str) -> None:
    assert await sync("--config", str(config)) == 0
    if store_url.startswith("file:"):
        root = pathlib.Path(store_url.removeprefix("file://"))
        blobs = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
        blobs += [str(p).encode() for p in root.rglob("*")]
    else:
        client = aioredis.from_url(store_url)
        try:
            keys = [k async for k in client.scan_iter(count=1000)]
            blobs = keys + [
                await client.get(k) or b"" for k in keys if await client.type(k) == b"string"
            ]
            for k in keys:
                if await client.type(k) == b"zset":
                    blobs += [m for m in await client.zrange(k, 0, -1)]
        finally:
            await client.aclose()
    assert blobs
    for blob in blobs:
        for needle in PLAINTEXT:
            assert needle not in blob


async def test_library_loads_the_active_list(config: pathlib.Path, store_url: str) -> None:
    with pytest.raises(StoreError, match="no list is active"):
        await Blocklist.aload(store_url)
    assert await sync("--config", str(config)) == 0
    bl = await asyncio.to_thread(Blocklist.load, store_url)
    assert bl.match(LISTED[0]) == listed(0)


async def test_status_shows_every_feed_the_store_knows_with_its_times(
    config: pathlib.Path,
    store_url: str,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without the config that synced them (issue 26, item 8), status still names the feeds
    the store keeps, with the time of the last success and of the last error."""
    assert await sync("--config", str(config)) == 0
    feed_server.mode = "html"  # an error page instead of the list
    assert await sync("--config", str(config)) == 1
    capsys.readouterr()
    assert await sync("--store", store_url, "status") == 0  # no config file at all
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("feed iwf:"))
    assert re.fullmatch(
        f"feed iwf: 40 entries, last ok {WHEN}, last changed {WHEN}, last error {WHEN}: "
        "feed looks like an HTML page, not a text list",
        line,
    )
