"""ETag and Last-Modified games a feed server (or a mirror) plays with the sync: the real
``blocklist-sync`` run in this process against aiohttp servers on 127.0.0.1 and a file
store."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import open_store
from sync import cli

LAST_MODIFIED = "Mon, 07 Dec 2026 10:00:00 GMT"


def entries(tag: str, count: int = 20) -> list[str]:
    return [f"http://{tag}{i}.example.com/gallery/{i}.html" for i in range(count)]


@dataclass
class Server:
    """Serves ``body`` with ``etag`` and a fixed Last-Modified; ``not_modified`` says what
    it answers 304 to."""

    body: bytes
    etag: str = '"1"'
    not_modified: Callable[[web.Request], bool] = lambda request: False
    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        if self.not_modified(request):
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(
            body=self.body, headers={"ETag": self.etag, "Last-Modified": LAST_MODIFIED}
        )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Server]]:
    runners: list[web.AppRunner] = []

    async def start(urls: list[str], **kw: object) -> Server:
        server = Server(body="".join(f"{u}\n" for u in urls).encode(), **kw)  # type: ignore[arg-type]
        app = web.Application()
        app.router.add_get("/list.txt", server.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}/list.txt"
        return server

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def sync(tmp_path: pathlib.Path, url: str) -> int:
    config = tmp_path / "sync.toml"
    config.write_text(
        f'store = "{(tmp_path / "store").as_uri()}"\n'
        f'[feeds.iwf]\nurl = "{url}"\nformat = "text"\nretries = 0\n'
    )
    return await cli.run(cli.build_parser().parse_args(["--config", str(config), "--quiet"]))


async def active(tmp_path: pathlib.Path) -> tuple[int, Blocklist] | None:
    store = open_store((tmp_path / "store").as_uri())
    try:
        pair = await store.load_active()
        return None if pair is None else (pair[0].version, Blocklist.from_bytes(pair[1]))
    finally:
        await store.close()


def conditional(request: web.Request) -> bool:
    """What a server does for a file older than If-Modified-Since, or a matching ETag."""
    return "If-Modified-Since" in request.headers or "If-None-Match" in request.headers


async def test_a_304_to_the_first_request_is_refused(
    tmp_path: pathlib.Path, serve: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    server = await serve(entries("a"), not_modified=lambda request: True)
    assert await sync(tmp_path, server.url) == 1
    assert "HTTP 304" in capsys.readouterr().err and await active(tmp_path) is None


async def test_validators_of_another_feed_url_are_never_sent(
    tmp_path: pathlib.Path, serve: Callable[..., Server]
) -> None:
    """The operator moves the feed to a new URL (a new provider, a mirror, the next list
    file) under the same name. The old URL's ETag and Last-Modified mean nothing there: a
    server whose file is older answers the old If-Modified-Since with 304, and the list
    from the old URL would stay in force for good, reported unchanged."""
    old = await serve(entries("old"))
    assert await sync(tmp_path, old.url) == 0
    new = await serve(entries("new"), etag='"1"', not_modified=conditional)
    assert await sync(tmp_path, new.url) == 0
    assert "If-Modified-Since" not in new.seen[0] and "If-None-Match" not in new.seen[0]
    found = await active(tmp_path)
    assert found is not None and all(found[1].match(u) for u in entries("new"))
    assert not any(found[1].match(u) for u in entries("old"))
    # Back at one URL, the validators are sent again: an unchanged feed costs a 304.
    assert await sync(tmp_path, new.url) == 0
    assert new.seen[-1]["If-None-Match"] == '"1"'
    assert (await active(tmp_path)) is not None


async def test_a_new_etag_on_the_same_content_makes_no_new_version(
    tmp_path: pathlib.Path, serve: Callable[..., Server]
) -> None:
    server = await serve(entries("a"))
    assert await sync(tmp_path, server.url) == 0
    server.etag = '"2"'
    assert await sync(tmp_path, server.url) == 0
    found = await active(tmp_path)
    assert found is not None and found[0] == 1


async def test_a_list_cannot_be_shrunk_away_a_step_at_a_time(
    tmp_path: pathlib.Path, serve: Callable[..., Server], capsys: pytest.CaptureFixture[str]
) -> None:
    """max_shrink (50%) refuses one big drop; a feed that loses 40% a run would otherwise
    be down to 1% of the list in nine cron runs (under an hour), each one exit 0. The
    drop is measured from the largest list the feed gave within the last day."""
    urls = entries("a", 100)
    server = await serve(urls)
    assert await sync(tmp_path, server.url) == 0
    for count, status in ((60, 0), (36, 1)):
        server.body = "".join(f"{u}\n" for u in urls[:count]).encode()
        server.etag = f'"{count}"'
        assert await sync(tmp_path, server.url) == status
    assert "shrank from 100 to 36 entries" in capsys.readouterr().err
    found = await active(tmp_path)
    assert found is not None and found[0] == 2 and found[1].match(urls[59])
    config = ["--config", str(tmp_path / "sync.toml"), "--quiet", "--force"]
    assert await cli.run(cli.build_parser().parse_args(config)) == 0  # the operator's call
    server.body = "".join(f"{u}\n" for u in urls[:30]).encode()
    server.etag = '"30"'
    assert await sync(tmp_path, server.url) == 0  # 36 -> 30 from the forced list


async def test_validators_a_server_garbles_cannot_break_later_runs(tmp_path: pathlib.Path) -> None:
    """An ETag (or Last-Modified) holding a control byte or bytes that are not ASCII is
    kept as it came; sent back next run, aiohttp refused it as a header injection: a
    ValueError out of the sync, on every run after, for every feed after this one."""
    body = "".join(f"{u}\n" for u in entries("a")).encode()
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            b'HTTP/1.1 200 OK\r\nETag: "\x01\xff"\r\nLast-Modified: \x01\xe9\r\n'
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/list.txt"
    try:
        assert await sync(tmp_path, url) == 0
        assert await sync(tmp_path, url) == 0
    finally:
        server.close()
        await server.wait_closed()
    assert len(requests) == 2 and b"If-None-Match" not in requests[1]
    found = await active(tmp_path)
    assert found is not None and found[0] == 1
