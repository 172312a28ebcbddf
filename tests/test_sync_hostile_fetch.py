"""The feed server as an attacker, or someone in front of it: redirects, slow bodies and
compression bombs against the real fetch, from real aiohttp servers on 127.0.0.1.

What ``tests/test_fetch.py`` already pins (status codes, caps by Content-Length and by
reading, truncation, checksums, untrusted TLS, credentials not sent to a sidecar on another
origin) is not repeated here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from test_fetch import _issue, _pem

from sync.fetch import FeedSource, FetchError, FetchState, fetch_feed
from testlab.drip import drip

try:  # aiohttp decodes zstd with the standard library's module (3.14) or its backport
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

BODY = b"http://secret-entry.test/gallery/page.html\n"
TOKEN = "tok-hostile-SECRET"
LIMIT = 10.0  # seconds any one fetch may take in these tests


async def fetch(source: FeedSource) -> bytes:
    result = await asyncio.wait_for(fetch_feed(source, FetchState()), LIMIT)
    assert result.data is not None
    return result.data


async def fetch_error(source: FeedSource) -> str:
    with pytest.raises(FetchError) as e:
        await asyncio.wait_for(fetch_feed(source, FetchState()), LIMIT)
    message = str(e.value)
    assert "\n" not in message and "SECRET" not in message
    return message


# -- servers -----------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as a server saw it: its path, headers and the client's certificate."""

    path: str
    headers: dict[str, str]
    client_cert: dict | None


@dataclass
class Server:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)
    redirect_to: str = ""  # where /redirect sends the client

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@dataclass(frozen=True)
class Pki:
    ca: Path
    client: Path  # certificate and key in one PEM
    server_pem: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _issue("Hostile test CA", ca_key, None, ca=True)
    server = _issue("127.0.0.1", server_key, (ca.subject, ca_key), server=True)
    client = _issue("sync.example.net", client_key, (ca.subject, ca_key))
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(_pem(server, server_key))
    (d / "client.pem").write_bytes(_pem(client, client_key))
    return Pki(d / "ca.pem", d / "client.pem", d / "server.pem")


def server_context(pki: Pki) -> ssl.SSLContext:
    """TLS that asks for a client certificate without requiring one: the server records
    whether the client presented it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_pem)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    started: list[Server] = []
    stop = asyncio.Event()

    async def start(ssl_context: ssl.SSLContext | None = None) -> Server:
        server = Server(server=None)  # type: ignore[arg-type]

        async def listing(request: web.Request) -> web.StreamResponse:
            transport = request.transport
            assert transport is not None
            cert = transport.get_extra_info("peercert")
            server.seen.append(Seen(request.path, dict(request.headers), cert or None))
            if request.path == "/redirect":
                raise web.HTTPFound(server.redirect_to)
            return web.Response(body=BODY)

        app = web.Application()
        app.router.add_get("/drip", drip(stop))
        app.router.add_get("/{tail:.*}", listing)
        server.server = TestServer(app, host="127.0.0.1")
        await server.server.start_server(ssl=ssl_context)
        started.append(server)
        return server

    yield start
    stop.set()
    for server in started:
        await server.server.close()


# -- redirects -----------------------------------------------------------------------------


async def test_redirect_from_https_to_plain_http_is_refused(
    serve: Callable[..., Awaitable[Server]], pki: Pki
) -> None:
    """The list is confidential and must arrive whole: a redirect to http:// would hand it
    to anyone on the path, readable and changeable. It is refused before any request."""
    feed = await serve(server_context(pki))
    plain = await serve()
    feed.redirect_to = plain.url("/list")
    source = FeedSource("t", feed.url("/redirect"), "text", ca_file=pki.ca, retries=0)
    message = await fetch_error(source)
    assert "plain http://" in message
    assert plain.seen == []


@pytest.mark.parametrize("credential", ["token", "client_cert"])
async def test_redirect_to_another_origin_gets_no_credential(
    serve: Callable[..., Awaitable[Server]], pki: Pki, tmp_path: Path, credential: str
) -> None:
    """A feed may redirect to a CDN or an object store (another origin, over https): the
    body is fetched, but neither the token nor the client certificate goes there."""
    feed = await serve(server_context(pki))
    other = await serve(server_context(pki))
    feed.redirect_to = other.url("/signed?X-Amz-Signature=abc")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    auth: dict[str, object] = (
        {"token_file": token_file} if credential == "token" else {"client_cert": pki.client}
    )
    source = FeedSource("t", feed.url("/redirect"), "text", ca_file=pki.ca, retries=0, **auth)
    assert await fetch(source) == BODY
    (first,) = feed.seen
    (second,) = other.seen
    if credential == "token":
        assert first.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "Authorization" not in second.headers
    else:
        assert first.client_cert is not None  # the feed's own origin gets it
        assert second.client_cert is None


async def test_redirect_on_the_same_origin_keeps_the_credentials(
    serve: Callable[..., Awaitable[Server]], pki: Pki, tmp_path: Path
) -> None:
    feed = await serve(server_context(pki))
    feed.redirect_to = "/moved/list.txt"  # relative, as servers often write it
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    source = FeedSource(
        "t",
        feed.url("/redirect"),
        "text",
        ca_file=pki.ca,
        client_cert=pki.client,
        retries=0,
    )
    assert await fetch(source) == BODY
    assert [s.path for s in feed.seen] == ["/redirect", "/moved/list.txt"]
    assert all(s.client_cert is not None for s in feed.seen)
    bearer = FeedSource("t", feed.url("/redirect"), "text", ca_file=pki.ca, token_file=token_file)
    assert await fetch(bearer) == BODY
    assert feed.seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    # Credentials in the feed URL itself go along on the same origin too (and not beyond).
    feed.redirect_to = feed.url("/moved/list.txt")  # absolute this time
    userinfo = feed.url("/redirect").replace("https://", "https://operator:SECRET-pw@")
    assert await fetch(FeedSource("t", userinfo, "text", ca_file=pki.ca)) == BODY
    basic = "Basic " + base64.b64encode(b"operator:SECRET-pw").decode()
    assert [s.headers.get("Authorization") for s in feed.seen[-2:]] == [basic, basic]
    other = await serve(server_context(pki))
    feed.redirect_to = other.url("/list")
    assert await fetch(FeedSource("t", userinfo, "text", ca_file=pki.ca)) == BODY
    assert feed.seen[-1].headers.get("Authorization") == basic
    assert "Authorization" not in other.seen[-1].headers


async def test_redirect_loop_and_odd_targets_fail_in_one_line(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    feed = await serve()
    feed.redirect_to = "/redirect"
    assert "too many redirects" in await fetch_error(
        FeedSource("t", feed.url("/redirect"), "text", retries=0)
    )
    feed.redirect_to = "file:///etc/passwd"
    assert (await fetch_error(FeedSource("t", feed.url("/redirect"), "text", retries=0))) != ""
    assert len(feed.seen) <= 12  # the loop was cut off
    # A URL nothing can parse is one line too, not a ValueError out of the sync.
    assert await fetch_error(FeedSource("t", "https://[feed.example.net/list", "text")) == (
        "feed t: invalid feed URL"
    )


# -- slow bodies ---------------------------------------------------------------------------


async def test_a_body_that_never_ends_meets_a_total_deadline(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    """Slowloris: a byte every 50 ms keeps every read under read_timeout, forever. Only a
    deadline on the whole download ends it (and frees the sync's lock for the next run)."""
    feed = await serve()
    source = FeedSource("t", feed.url("/drip"), "text", read_timeout=5, timeout=1.0, retries=2)
    started = time.monotonic()
    message = await fetch_error(source)
    elapsed = time.monotonic() - started
    assert "did not finish within 1s" in message
    assert elapsed < 3.0  # one deadline for every attempt, not one each


# -- compression bombs ---------------------------------------------------------------------

INFLATED = 256 * 1024 * 1024  # what each bomb inflates to
MAX_BYTES = 1024 * 1024


def _bomb(coding: str) -> bytes:
    block = b"example.com/a\n" * (1024 * 1024 // 14)
    blocks = INFLATED // len(block)
    if coding == "br":
        br = brotli.Compressor(quality=1)
        return b"".join(br.process(block) for _ in range(blocks)) + br.finish()
    if coding == "zstd":
        zs = zstd.ZstdCompressor(level=1)
        return b"".join(zs.compress(block) for _ in range(blocks)) + zs.flush()
    z = zlib.compressobj(9, wbits=31 if coding == "gzip" else 15)
    return b"".join(z.compress(block) for _ in range(blocks)) + z.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
async def test_a_compression_bomb_is_cut_off_in_bounded_memory(coding: str) -> None:
    """256 MiB compressed to a few hundred KiB: gzip and deflate (what the sync asks for)
    are inflated a piece at a time and cut off at max_bytes; br and zstd, never asked for,
    are refused unread. Memory stays bounded either way, whatever aiohttp does (before
    3.13.3, CVE-2025-69223, it inflated a network read whole: a brotli bomb took gigabytes
    before the cap was checked)."""
    bomb = _bomb(coding)
    assert len(bomb) < INFLATED // 100

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": coding})

    app = web.Application()
    app.router.add_get("/bomb", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        source = FeedSource(
            "t", str(server.make_url("/bomb")), "text", max_bytes=MAX_BYTES, retries=0
        )
        tracemalloc.start()
        try:
            message = await fetch_error(source)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await server.close()
    if coding in ("gzip", "deflate"):
        assert f"over the {MAX_BYTES}-byte limit" in message
    else:
        assert message.startswith(f"unsupported Content-Encoding '{coding}' from ")
    assert peak < 32 * MAX_BYTES + 2 * len(bomb)


# -- a body that ends only where the connection closes -----------------------------------------

LISTED = (
    b"http://listed.example.com/gallery/page.html\nhttp://site.example.org/users/a/photo.html\n"
)


@pytest.fixture
async def close_delimited() -> AsyncIterator[Callable[[bytes, dict[str, str]], str]]:
    """A server answering with neither Content-Length nor chunked encoding: its body ends
    where the connection closes, as HTTP/1.0 servers (and some proxies) send it."""
    servers: list[asyncio.Server] = []

    async def start(body: bytes, headers: dict[str, str]) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"HTTP/1.1 200 OK\r\nConnection: close\r\n{head}\r\n".encode() + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/list.txt"

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_body_cut_where_only_the_close_ends_it_is_refused(
    close_delimited: Callable[..., Awaitable[str]],
) -> None:
    """Cut mid-line (a reset path, an attacker's FIN), the last entry becomes a wider one:
    http://site.example.org/users/a/photo.html read as http://site.example.org/, the whole
    site. Without a length or chunks nothing tells the cut from the end, so such a body is
    only taken with a checksum to hold it to."""
    cut = LISTED[: LISTED.index(b"users")]
    url = await close_delimited(cut, {})
    message = await fetch_error(FeedSource("t", url, "text", retries=0))
    assert "no Content-Length" in message and "checksum" in message


async def test_a_close_delimited_body_is_taken_with_a_checksum(
    close_delimited: Callable[..., Awaitable[str]],
) -> None:
    digest = hashlib.sha256(LISTED).hexdigest()
    whole = await close_delimited(LISTED, {"X-Checksum-SHA256": digest})
    source = FeedSource("t", whole, "text", retries=0, checksum_header="X-Checksum-SHA256")
    assert await fetch(source) == LISTED
    cut = await close_delimited(LISTED[:-30], {"X-Checksum-SHA256": digest})
    message = await fetch_error(replace(source, url=cut))
    assert message.startswith("checksum mismatch")


# -- a compressed body cut short -----------------------------------------------------------------

PAGES = b"".join(b"http://h%d.example.com/gallery/page%d.html\n" % (i, i) for i in range(2000))


def _cut(coding: str) -> bytes:
    """The feed compressed, then cut mid-stream: a truncated upload to an object store
    served with its Content-Encoding, or a compressor cut off behind a proxy that still
    ends the response properly (a right Content-Length, or the last chunk)."""
    whole = zlib.compress(PAGES) if coding == "deflate" else zlib.compress(PAGES, wbits=31)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_body_cut_short_is_refused(coding: str) -> None:
    """gzip's trailer (and deflate's final block) say where the stream ends; a stream cut
    before it was taken as the whole list, its last entry cut mid-URL (page984.html read
    as page9, or a whole host)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=_cut(coding), headers={"Content-Encoding": coding})

    app = web.Application()
    app.router.add_get("/list.txt", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        source = FeedSource("t", str(server.make_url("/list.txt")), "text", retries=0)
        message = await fetch_error(source)
    finally:
        await server.close()
    assert f"{coding} body" in message and "cut short" in message


async def test_a_gzip_body_of_several_members_is_read_whole() -> None:
    """Concatenated gzip members are one valid body (RFC 1952): read all of them."""
    half = len(PAGES) // 2
    body = zlib.compress(PAGES[:half], wbits=31) + zlib.compress(PAGES[half:], wbits=31)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/list.txt", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert await fetch(FeedSource("t", str(server.make_url("/list.txt")), "text")) == PAGES
    finally:
        await server.close()
