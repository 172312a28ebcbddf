"""Downloading feeds from a real aiohttp server on 127.0.0.1 (DESIGN "Failure behaviour").

Every failure must end in one FetchError line that names no credential; waits are bounded
by ``fetch`` (a timeout around each download), never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.fetch import FeedSource, FetchError, FetchResult, FetchState, fetch_feed

BODY = b"# test list\nhttp://secret-entry.test/gallery/page.html\nwhole-site.test/\n"
SHA = hashlib.sha256(BODY).hexdigest()
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 24 Nov 2026 10:00:00 GMT"
TOKEN = "tok-7f3a9c1e5b-SECRET"
USER, PASSWORD = "operator", "pa55-SECRET-wörd"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LIMIT = 10.0  # seconds any one download may take in these tests


async def fetch(source: FeedSource, state: FetchState | None = None, **kw: object) -> FetchResult:
    return await asyncio.wait_for(fetch_feed(source, state or FetchState(), **kw), LIMIT)


async def fetch_error(source: FeedSource, state: FetchState | None = None) -> str:
    with pytest.raises(FetchError) as e:
        await fetch(source, state)
    message = str(e.value)
    assert "\n" not in message
    for secret in (TOKEN, PASSWORD, "SECRET"):
        assert secret not in message
    return message


# -- the feed server ---------------------------------------------------------------------


@dataclass
class Feed:
    """The test server: its requests, by path, and what it serves."""

    server: TestServer
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)
    flaky: int = 0  # how many 503s /flaky still answers before a 200

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def source(self, path: str, **kw: object) -> FeedSource:
        kw.setdefault("backoff", 0.01)
        return FeedSource(name="test", url=self.url(path), format="text", **kw)  # type: ignore[arg-type]

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def headers(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]


def routes(feed: Feed) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        feed.requests.append((request.path, dict(request.headers)))
        return await handler(request)

    async def listing(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        return web.Response(body=BODY, headers={"ETag": ETAG, "Last-Modified": LAST_MODIFIED})

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="error page")

    async def flaky(request: web.Request) -> web.StreamResponse:
        if feed.flaky > 0:
            feed.flaky -= 1
            return web.Response(status=503)
        return web.Response(body=BODY)

    async def bearer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        return web.Response(body=BODY)

    async def basic(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != BASIC:
            return web.Response(status=401)
        return web.Response(body=BODY)

    async def stall(request: web.Request) -> web.StreamResponse:
        await feed.never.wait()  # set only at teardown
        return web.Response(body=BODY)

    async def stall_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        await response.write(BODY[:10])
        await feed.never.wait()
        return response

    async def drop(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(BODY[:20])
        assert request.transport is not None
        request.transport.close()
        return response

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(BODY[:20])
        assert request.transport is not None
        request.transport.close()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the cap is found by reading
        await response.prepare(request)
        while True:  # ends when the client goes away (the handler is cancelled)
            await response.write(b"example.com/page\n" * 4096)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"example.com/a\n" * 10_000)

    async def bomb(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(b"example.com/a\n" * 200_000),
            headers={"Content-Encoding": "gzip"},
        )

    async def with_checksum(request: web.Request) -> web.StreamResponse:
        value = {
            "hex": SHA.upper(),
            "base64": base64.b64encode(bytes.fromhex(SHA)).decode(),
            "bad": hashlib.sha256(b"something else").hexdigest(),
            "junk": "not-a-checksum",
        }[request.match_info["kind"]]
        return web.Response(body=BODY, headers={"X-Checksum-SHA256": value})

    async def sidecar(request: web.Request) -> web.StreamResponse:
        body = {
            "good": f"{SHA}  list.txt\n",
            "bad": f"{hashlib.sha256(b'other').hexdigest()}  list.txt\n",
            "junk": "<html>not found</html>",
        }[request.match_info["kind"]]
        return web.Response(text=body)

    async def secure(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        assert request.transport.get_extra_info("peercert")  # the client's certificate
        return web.Response(body=BODY)

    app = web.Application(middlewares=[record])
    app.router.add_get("/list", listing)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/bearer", bearer)
    app.router.add_get("/basic", basic)
    app.router.add_get("/stall", stall)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/drop", drop)
    app.router.add_get("/truncated", truncated)
    app.router.add_get("/endless", endless)
    app.router.add_get("/big", big)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/checksum/{kind}", with_checksum)
    app.router.add_get("/sidecar/{kind}", sidecar)
    app.router.add_get("/secure", secure)
    return app


async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Feed]:
    feed = Feed(server=None)  # type: ignore[arg-type]
    feed.server = TestServer(routes(feed), host="127.0.0.1")
    await feed.server.start_server(ssl=ssl_context)
    try:
        yield feed
    finally:
        feed.never.set()
        await feed.server.close()


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    async for f in serve():
        yield f


@pytest.fixture
async def other() -> AsyncIterator[Feed]:
    """A second server: another origin on 127.0.0.1."""
    async for f in serve():
        yield f


# -- conditional requests ----------------------------------------------------------------


async def test_200_then_304(feed: Feed) -> None:
    source = feed.source("/list")
    first = await fetch(source)
    assert (first.not_modified, first.data, first.status) == (False, BODY, 200)
    assert first.state == FetchState(ETAG, LAST_MODIFIED)
    assert "If-None-Match" not in feed.headers("/list")[0]

    second = await fetch(source, first.state)
    assert (second.not_modified, second.data, second.status) == (True, None, 304)
    assert second.state == first.state
    assert feed.hits("/list") == 2  # exactly one request for the conditional fetch
    sent = feed.headers("/list")[1]
    assert sent["If-None-Match"] == ETAG
    assert sent["If-Modified-Since"] == LAST_MODIFIED


async def test_stale_validators_get_the_body(feed: Feed) -> None:
    result = await fetch(feed.source("/list"), FetchState('"v0"', None))
    assert result.data == BODY and result.state.etag == ETAG


async def test_given_session_is_used_and_left_open(feed: Feed) -> None:
    async with aiohttp.ClientSession() as session:
        result = await fetch(feed.source("/list"), session=session)
        assert result.data == BODY and not session.closed


def test_state_round_trips_and_tolerates_junk() -> None:
    state = FetchState(ETAG, LAST_MODIFIED)
    assert FetchState.from_dict(state.to_dict()) == state
    assert FetchState.from_dict(None) == FetchState()
    assert FetchState.from_dict({"etag": 5, "last_modified": ""}) == FetchState()


# -- status codes and retries ------------------------------------------------------------


async def test_5xx_is_retried_then_fails(feed: Feed) -> None:
    message = await fetch_error(feed.source("/status/500", retries=2))
    assert message == f"HTTP 500 from {feed.url('/status/500')} (after 3 attempts)"
    assert feed.hits("/status/500") == 3


async def test_5xx_then_success(feed: Feed) -> None:
    feed.flaky = 2
    result = await fetch(feed.source("/flaky", retries=3))
    assert result.data == BODY and feed.hits("/flaky") == 3


@pytest.mark.parametrize(
    ("code", "hint"),
    [(404, "check the feed URL"), (401, "needs credentials"), (403, "needs credentials")],
)
async def test_4xx_is_not_retried(feed: Feed, code: int, hint: str) -> None:
    message = await fetch_error(feed.source(f"/status/{code}", retries=3))
    assert message.startswith(f"HTTP {code} from {feed.url(f'/status/{code}')} (")
    assert hint in message
    assert feed.hits(f"/status/{code}") == 1


async def test_connection_refused_is_retried() -> None:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        source = FeedSource("t", f"http://127.0.0.1:{port}/list", "text", retries=1, backoff=0.01)
        message = await fetch_error(source)
    assert message.startswith(f"cannot connect to http://127.0.0.1:{port}/list")
    assert message.endswith("(after 2 attempts)")


async def test_read_timeout_before_headers(feed: Feed) -> None:
    message = await fetch_error(feed.source("/stall", read_timeout=0.2, retries=1))
    assert message == f"timed out: no data from {feed.url('/stall')} for 0.2s (after 2 attempts)"
    assert feed.hits("/stall") == 2


async def test_read_timeout_mid_body(feed: Feed) -> None:
    message = await fetch_error(feed.source("/stall-body", read_timeout=0.2, retries=0))
    assert message.startswith("timed out: no data")


async def test_connection_dropped_mid_body(feed: Feed) -> None:
    message = await fetch_error(feed.source("/drop", retries=1))
    assert message == (
        f"connection to {feed.url('/drop')} dropped after 20 bytes of the body (after 2 attempts)"
    )
    assert feed.hits("/drop") == 2


async def test_truncated_body(feed: Feed) -> None:
    message = await fetch_error(feed.source("/truncated", retries=0))
    assert message == f"truncated body from {feed.url('/truncated')}: 20 of 1000 bytes"


async def test_over_max_bytes_by_content_length(feed: Feed) -> None:
    message = await fetch_error(feed.source("/big", max_bytes=1000))
    assert "over the 1000-byte limit (Content-Length 140000)" in message
    assert feed.hits("/big") == 1  # not retried


async def test_over_max_bytes_stops_reading(feed: Feed) -> None:
    # The body never ends: only stopping at the cap ends the download.
    message = await fetch_error(feed.source("/endless", max_bytes=200_000))
    assert message.endswith("is over the 200000-byte limit")


async def test_decompressed_size_is_capped(feed: Feed) -> None:
    assert (await fetch(feed.source("/bomb"))).data == b"example.com/a\n" * 200_000
    message = await fetch_error(feed.source("/bomb", max_bytes=1_000_000))
    assert "over the 1000000-byte limit" in message


async def test_url_shown_without_userinfo_or_query(feed: Feed) -> None:
    url = feed.url("/status/404").replace("http://", "http://user:SECRET@") + "?sig=SECRET"
    message = await fetch_error(replace(feed.source("/"), url=url))
    assert message == f"HTTP 404 from {feed.url('/status/404')} (check the feed URL)"


async def test_unsupported_scheme() -> None:
    message = await fetch_error(FeedSource("t", "ftp://feed.example.net/list", "text"))
    assert "unsupported URL scheme 'ftp'" in message


# -- checksums ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hex", "base64"])
async def test_checksum_header_matches(feed: Feed, kind: str) -> None:
    source = feed.source(f"/checksum/{kind}", checksum_header="X-Checksum-SHA256")
    assert (await fetch(source)).data == BODY


async def test_checksum_header_mismatch(feed: Feed) -> None:
    source = feed.source("/checksum/bad", checksum_header="X-Checksum-SHA256")
    message = await fetch_error(source)
    assert message == (
        f"checksum mismatch: the {len(BODY)}-byte body does not match the X-Checksum-SHA256 header"
    )
    assert feed.hits("/checksum/bad") == 1


async def test_checksum_header_missing_or_junk(feed: Feed) -> None:
    missing = await fetch_error(feed.source("/list", checksum_header="X-Checksum-SHA256"))
    assert missing.startswith("no X-Checksum-SHA256 header in the response from")
    junk = await fetch_error(feed.source("/checksum/junk", checksum_header="X-Checksum-SHA256"))
    assert "not a SHA-256" in junk


async def test_checksum_sidecar(feed: Feed) -> None:
    good = feed.source("/list", checksum_url=feed.url("/sidecar/good"))
    assert (await fetch(good)).data == BODY
    bad = feed.source("/list", checksum_url=feed.url("/sidecar/bad"))
    assert "checksum mismatch" in await fetch_error(bad)
    junk = feed.source("/list", checksum_url=feed.url("/sidecar/junk"))
    assert "does not start with a hex SHA-256" in await fetch_error(junk)
    missing = feed.source("/list", checksum_url=feed.url("/status/404"))
    assert (await fetch_error(missing)).startswith("HTTP 404 from")


async def test_sidecar_not_fetched_when_not_modified(feed: Feed) -> None:
    source = feed.source("/list", checksum_url=feed.url("/sidecar/good"))
    result = await fetch(source, FetchState(ETAG))
    assert result.not_modified and feed.hits("/sidecar/good") == 0


# -- credentials -------------------------------------------------------------------------


async def test_bearer_token_from_file(
    feed: Feed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    assert (await fetch(feed.source("/bearer", token_file=token_file))).data == BODY
    assert feed.headers("/bearer")[0]["Authorization"] == f"Bearer {TOKEN}"

    token_file.write_text("wrong-token\n")
    message = await fetch_error(feed.source("/bearer", token_file=token_file, retries=2))
    assert message == f"HTTP 401 from {feed.url('/bearer')} (check the token file)"
    assert feed.hits("/bearer") == 2
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


async def test_token_not_sent_to_another_origin(feed: Feed, other: Feed, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    source = feed.source("/bearer", token_file=token_file, checksum_url=other.url("/sidecar/good"))
    assert (await fetch(source)).data == BODY
    assert "Authorization" not in other.headers("/sidecar/good")[0]


async def test_unreadable_token_file(feed: Feed, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    message = await fetch_error(feed.source("/bearer", token_file=missing))
    assert message == f"cannot read token file {missing}: No such file or directory"
    assert feed.requests == []

    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert await fetch_error(feed.source("/bearer", token_file=empty)) == (
        f"token file {empty} is empty"
    )
    two_lines = tmp_path / "two-lines"
    two_lines.write_text(f"{TOKEN}\nX-Injected: {TOKEN}\n")
    assert "not allowed in an HTTP header" in await fetch_error(
        feed.source("/bearer", token_file=two_lines)
    )
    assert feed.requests == []


async def test_credentials_never_over_plain_http_to_another_host(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    source = FeedSource("t", "http://feed.example.net/list", "text", token_file=token_file)
    assert "refusing to send credentials over plain http://" in await fetch_error(source)


async def test_basic_auth_from_environment(
    feed: Feed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FEED_USERNAME", USER)
    monkeypatch.setenv("FEED_PASSWORD", PASSWORD)
    assert (await fetch(feed.source("/basic", basic_auth_env="FEED"))).data == BODY

    monkeypatch.setenv("FEED_PASSWORD", "wrong")
    message = await fetch_error(feed.source("/basic", basic_auth_env="FEED"))
    assert message.endswith("(check $FEED_USERNAME and $FEED_PASSWORD)")
    assert PASSWORD not in caplog.text

    monkeypatch.delenv("FEED_PASSWORD")
    assert await fetch_error(feed.source("/basic", basic_auth_env="FEED")) == (
        "basic auth needs $FEED_USERNAME and $FEED_PASSWORD in the environment"
    )


# -- TLS with a client certificate ---------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server: ssl.SSLContext
    client: Path  # certificate and key in one PEM
    client_cert: Path  # certificate only, with the key in client_key
    client_key: Path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if server:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    out = b"" if cert is None else cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        out += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _issue("Test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server = _issue("127.0.0.1", server_key, issuer, server=True)
    client = _issue("sync.example.net", client_key, issuer)
    (d / "ca.pem").write_bytes(_pem(ca))
    (d / "server.pem").write_bytes(_pem(server, server_key))
    (d / "client.pem").write_bytes(_pem(client, client_key))
    (d / "client-cert.pem").write_bytes(_pem(client))
    (d / "client-key.pem").write_bytes(_pem(None, client_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "server.pem")
    context.load_verify_locations(d / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return Pki(d / "ca.pem", context, d / "client.pem", d / "client-cert.pem", d / "client-key.pem")


@pytest.fixture
async def tls_feed(pki: Pki) -> AsyncIterator[Feed]:
    async for f in serve(pki.server):
        yield f


async def test_client_certificate(tls_feed: Feed, pki: Pki) -> None:
    url = tls_feed.url("/secure")
    assert url.startswith("https://127.0.0.1:")
    for source in (
        tls_feed.source("/secure", ca_file=pki.ca, client_cert=pki.client),
        tls_feed.source(
            "/secure", ca_file=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key
        ),
    ):
        result = await fetch(source)
        assert result.data == BODY and result.status == 200
    assert tls_feed.hits("/secure") == 2


async def test_tls_failures(tls_feed: Feed, pki: Pki, tmp_path: Path) -> None:
    untrusted = await fetch_error(tls_feed.source("/secure", client_cert=pki.client, retries=0))
    assert untrusted == f"TLS certificate of {tls_feed.url('/secure')} is not trusted" + (
        " (set ca_file for a private CA)"
    )
    # Without a client certificate the server refuses the handshake (TLS 1.3 may report it
    # only once the request is sent): a FetchError either way, after no retries.
    await fetch_error(tls_feed.source("/secure", ca_file=pki.ca, retries=0))

    missing = tmp_path / "no-such.pem"
    message = await fetch_error(tls_feed.source("/secure", ca_file=pki.ca, client_cert=missing))
    assert message == f"cannot load client certificate {missing}: No such file or directory"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text(f"{TOKEN}\n")
    message = await fetch_error(tls_feed.source("/secure", ca_file=pki.ca, client_cert=not_pem))
    assert message.startswith(f"cannot load client certificate {not_pem}: ")
    message = await fetch_error(tls_feed.source("/secure", ca_file=not_pem))
    assert message.startswith(f"cannot load CA file {not_pem}: ")


# -- file:// -----------------------------------------------------------------------------


async def test_file_feed(tmp_path: Path) -> None:
    path = tmp_path / "sample list.txt"
    path.write_bytes(BODY)
    source = FeedSource("sample", path.as_uri(), "text")
    first = await fetch(source)
    assert (first.not_modified, first.data, first.status) == (False, BODY, None)
    st = path.stat()
    assert first.state == FetchState(etag=f"file:{st.st_mtime_ns}:{st.st_size}")

    second = await fetch(source, first.state)
    assert second.not_modified and second.data is None and second.state == first.state

    path.write_bytes(BODY + b"example.org/new\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = await fetch(source, first.state)
    assert not third.not_modified and third.data == BODY + b"example.org/new\n"


async def test_file_feed_failures(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    message = await fetch_error(FeedSource("s", missing.as_uri(), "text"))
    assert message == f"cannot read feed file {missing}: No such file or directory"

    path = tmp_path / "list.txt"
    path.write_bytes(BODY)
    too_small = FeedSource("s", path.as_uri(), "text", max_bytes=10)
    assert "over the 10-byte limit" in await fetch_error(too_small)
    remote = FeedSource("s", "file://feed.example.net/list.txt", "text")
    assert "names a remote host" in await fetch_error(remote)


async def test_file_feed_checksum(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(BODY)
    sidecar = tmp_path / "list.txt.sha256"
    sidecar.write_text(f"{SHA}  list.txt\n")
    source = FeedSource("s", path.as_uri(), "text", checksum_url=sidecar.as_uri())
    assert (await fetch(source)).data == BODY
    sidecar.write_text(f"{hashlib.sha256(b'x').hexdigest()}  list.txt\n")
    assert "checksum mismatch" in await fetch_error(source)
