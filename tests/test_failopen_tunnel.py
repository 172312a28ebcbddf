"""Fail-open through a tunnel: what mitmproxy relays as raw TCP is seen by no check.

Inside a CONNECT tunnel (and in transparent and SOCKS mode, and in a decrypted TLS
connection without ALPN), mitmproxy guesses the protocol from the client's first read and,
unless that read holds a letter-only method, a space and the end of the request line,
relays the connection as raw TCP: no requestheaders hook, no URL check, the listed page
served. A request after an empty line (which servers skip, RFC 9112 section 2.2), sent in
small pieces, or with a request line longer than one segment, went through.

Inside a tunnel (and in transparent and reverse mode) the URL's host is where the connection
goes, and an HTTP/1 request line in absolute form is sent upstream as it is: a server that
hosts both takes the listed host from ``GET http://listed.example/page`` and ignores the
unlisted Host header (RFC 9112 section 3.2.2; aiohttp does), and only the tunnel's host and
the Host header were checked. An HTTP/2 request's Host header that disagrees with its
:authority (which mitmproxy lets through when validate_inbound_headers is off) was not
checked either, and an HTTP/1 origin serves by it. With validation off, mitmproxy also
forwards a request with both Content-Length and Transfer-Encoding (request smuggling), so
the addon now refuses ``validate_inbound_headers=false``, at start and at run time.

The decision is driven through mitmproxy's own NextLayer addon and hook dispatch (the
addon's corrector placed after it, as in mitmdump), and end to end through a real mitmdump
with the addon and real origins.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy import context, events, layer, layers
from mitmproxy.proxy.layer import NextLayerHook
from mitmproxy.proxy.layers import modes
from mitmproxy.test import taddons, tflow

from blocklist_addon.addon import BlocklistAddon
from blocklist_addon.guards.flow import authority_url, host_field_url, request_url
from blocklist_addon.guards.tls import starts_http
from testlab.harness import Proxy, World, synced_store

LISTED_REQUEST = (
    b"GET /page.html HTTP/1.1\r\nHost: blocked.example.com\r\nConnection: close\r\n\r\n"
)


# -- the decision, through mitmproxy's NextLayer addon and hook dispatch --------------------


@pytest.fixture
def decide() -> Iterator[Callable[..., layer.Layer | None]]:
    """The layer mitmproxy's chain (its NextLayer, then the addon's corrector) picks for a
    transparent-mode connection whose client sent ``reads`` so far."""
    addon = BlocklistAddon()
    with taddons.context(NextLayer(), addon) as tctx:

        def run(*reads: bytes, **options: object) -> layer.Layer | None:
            if options:
                tctx.configure(addon, **options)
            nextlayer = connection(tctx.options, *reads)
            tctx.master.addons.trigger(NextLayerHook(nextlayer))
            return nextlayer.layer

        yield run
    addon.images._pool.shutdown(wait=False)
    addon.images.check.close()


def connection(options, *reads: bytes) -> layer.NextLayer:
    """A transparent-mode cleartext connection to 192.0.2.80:80 whose client sent ``reads``,
    waiting for its next layer."""
    client = tflow.tclient_conn()
    client.alpn = None  # cleartext: no TLS, so no ALPN
    client.tls = False
    client.sni = None
    ctx = context.Context(client, options)
    ctx.server.address = ("192.0.2.80", 80)
    ctx.layers = [modes.TransparentProxy(ctx)]
    nextlayer = layer.NextLayer(ctx)
    nextlayer.events = [events.DataReceived(client, data) for data in reads]
    return nextlayer


@pytest.mark.parametrize(
    "reads",
    [
        (b"\r\n" + LISTED_REQUEST,),
        (b"\n\n" + LISTED_REQUEST,),
        (b"M-SEARCH * HTTP/1.1\r\n\r\n",),  # a method with a hyphen
        (b"GET /" + b"a" * 4000,),  # a request line longer than the first read
        (b"GET /page.html HTTP/1.1",),  # the line end in the next segment
        (b"\r\n", b"\r\n", b"GET / HTTP/1.1\r\n"),
    ],
    ids=["crlf", "lf-lf", "hyphen", "long-line", "split-line", "blank-reads"],
)
def test_a_request_mitmproxy_would_relay_raw_is_read_as_http(
    decide: Callable[..., layer.Layer | None], reads: tuple[bytes, ...]
) -> None:
    found = decide(*reads)
    assert isinstance(found, layers.HttpLayer), found


@pytest.mark.parametrize(
    "reads",
    [(b"G",), (b"GE",), (b"GET",), (b"\r\n",), (b"\r\n", b"PO")],
    ids=["G", "GE", "GET", "crlf", "crlf-then-PO"],
)
def test_a_start_that_cannot_be_told_yet_waits_for_more_bytes(
    decide: Callable[..., layer.Layer | None], reads: tuple[bytes, ...]
) -> None:
    """None: mitmproxy's NextLayer asks again with the next bytes (it chose raw TCP)."""
    assert decide(*reads) is None


@pytest.mark.parametrize(
    "reads",
    [
        (b"\x00\x01\x02\x03binary",),
        (b"SSH-2.0-OpenSSH_9.6 Debian\r\n",),
        (b"A" * 40,),  # a "method" longer than any: no HTTP
        (b"{json} no http",),
    ],
    ids=["binary", "ssh", "long-token", "brace"],
)
def test_what_is_no_http_stays_raw_tcp(
    decide: Callable[..., layer.Layer | None], reads: tuple[bytes, ...]
) -> None:
    found = decide(*reads)
    assert isinstance(found, layers.TCPLayer), found


def test_raw_tcp_the_operator_asked_for_stays(decide: Callable[..., layer.Layer | None]) -> None:
    assert isinstance(decide(b"GE", tcp_hosts=[r"192\.0\.2\.80"]), layers.TCPLayer)
    ignored = decide(b"\r\n" + LISTED_REQUEST, ignore_hosts=[r"192\.0\.2\.80"], tcp_hosts=[])
    assert isinstance(ignored, layers.TCPLayer)
    shown = decide(b"\r\n" + LISTED_REQUEST, show_ignored_hosts=True)
    assert isinstance(shown, layers.TCPLayer)


def test_blank_lines_are_dropped_before_the_http_layer_reads_them() -> None:
    """mitmproxy's HTTP/1 parser takes one empty line, then waits for bytes already read:
    the request would hang."""
    addon = BlocklistAddon()
    with taddons.context(NextLayer(), addon) as tctx:
        nextlayer = connection(tctx.options, b"\r\n", b"\n" + LISTED_REQUEST)
        tctx.master.addons.trigger(NextLayerHook(nextlayer))
        assert isinstance(nextlayer.layer, layers.HttpLayer)
        assert [e.data for e in nextlayer.events] == [LISTED_REQUEST]  # type: ignore[attr-defined]
    addon.images._pool.shutdown(wait=False)
    addon.images.check.close()


def test_starts_http_bounds_what_it_waits_for() -> None:
    assert starts_http(b"\r\n" * 32) is None
    assert starts_http(b"\r\n" * 33) is True  # past the bound: HTTP, which the checks see
    assert starts_http(b"A" * 32) is None
    assert starts_http(b"A" * 33) is False


# -- end to end: a real client through a real mitmdump --------------------------------------


def tunnel(proxy: Proxy, authority: str) -> socket.socket:
    """A CONNECT tunnel to ``authority`` through ``proxy``, established."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy]) -> Proxy:
    return proxy_with_entries("tunnel")


@pytest.mark.parametrize("blank", [b"\r\n", b"\n\r\n"], ids=["crlf", "lf-crlf"])
def test_a_listed_page_after_an_empty_line_in_a_tunnel_gets_the_451(
    proxy: Proxy, world: World, blank: bytes
) -> None:
    before = world.connections()
    with tunnel(proxy, "blocked.example.com:80") as sock:
        sock.sendall(blank + LISTED_REQUEST)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 451"), answer[:300]
    assert world.connections() == before  # the listed origin never saw a connection


def test_a_listed_page_after_an_empty_line_in_decrypted_tls_without_alpn_gets_the_451(
    proxy: Proxy, world: World
) -> None:
    """A listed host is decrypted; with no ALPN, what is inside was guessed like cleartext."""
    before = world.connections()
    client = proxy.client_context()  # no ALPN offered
    raw = tunnel(proxy, "blocked.example.com:443")
    with raw, client.wrap_socket(raw, server_hostname="blocked.example.com") as sock:
        sock.sendall(b"\r\n" + LISTED_REQUEST)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 451"), answer[:300]
    assert world.connections() == before


def test_an_unlisted_page_after_an_empty_line_is_served(proxy: Proxy, world: World) -> None:
    with tunnel(proxy, "unlisted.example.org:80") as sock:
        sock.sendall(
            b"\r\nGET /x HTTP/1.1\r\nHost: unlisted.example.org\r\nConnection: close\r\n\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"X-Origin: open-http" in answer


def test_no_http_in_a_tunnel_still_reaches_its_origin(proxy: Proxy, world: World) -> None:
    """Raw TCP stays raw: the origin (an HTTP server) answers the bytes itself."""
    before = world.open_http.connections
    with tunnel(proxy, "unlisted.example.org:80") as sock:
        sock.sendall(b"\x00\x01\x02\x03 binary\r\n\r\n")
        answer = read_all(sock)
    assert world.open_http.connections == before + 1, answer[:300]
    assert b"aiohttp" in answer  # the origin's own answer, not the proxy's


# -- an absolute-form request line in a tunnel ----------------------------------------------


def test_a_listed_absolute_form_request_line_in_a_tunnel_gets_the_451(
    proxy: Proxy, world: World
) -> None:
    before = world.connections()
    with tunnel(proxy, "unlisted.example.org:80") as sock:
        sock.sendall(
            b"GET http://blocked.example.com/page.html HTTP/1.1\r\n"
            b"Host: unlisted.example.org\r\nConnection: close\r\n\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 451"), answer[:300]
    assert world.connections() == before


def test_an_unlisted_absolute_form_request_line_in_a_tunnel_is_served(
    proxy: Proxy, world: World
) -> None:
    with tunnel(proxy, "unlisted.example.org:80") as sock:
        sock.sendall(
            b"GET http://blocked.example.com/other.html HTTP/1.1\r\n"
            b"Host: unlisted.example.org\r\nConnection: close\r\n\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


@pytest.mark.parametrize(
    ("authority", "url"),
    [
        (b"", None),  # origin form
        (b"unlisted.example.org", None),  # the URL's own host
        (b"UNLISTED.example.org:80", None),
        (b"blocked.example.com", "http://blocked.example.com/page.html"),
        (b"blocked.example.com:8080", "http://blocked.example.com:8080/page.html"),
        (b"[2001:db8::9]", "http://[2001:db8::9]/page.html"),
    ],
)
def test_authority_url(authority: bytes, url: str | None) -> None:
    request = tflow.treq(host="unlisted.example.org", port=80, path=b"/page.html")
    request.data.authority = authority
    assert authority_url(request) == url


# -- a Host header with an empty or out-of-range port ----------------------------------------


@pytest.mark.parametrize("host", ["blocked.example.com:", "blocked.example.com:99999"])
def test_a_listed_host_with_an_empty_port_in_a_tunnel_gets_the_451(
    proxy: Proxy, world: World, host: str
) -> None:
    """nginx reads the host alone (RFC 3986 allows an empty port) and serves the listed
    page; the check read the whole value as one odd host, listed nowhere."""
    before = world.connections()
    with tunnel(proxy, "unlisted.example.org:80") as sock:
        sock.sendall(
            f"GET /page.html HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 451"), answer[:300]
    assert world.connections() == before


@pytest.mark.parametrize(
    ("header", "url"),
    [
        ("blocked.example.com:", "http://blocked.example.com/page.html"),
        ("blocked.example.com:99999", "http://blocked.example.com/page.html"),
        ("[2001:db8::9]:", "http://[2001:db8::9]/page.html"),
        ("blocked.example.com:8080", "http://blocked.example.com:8080/page.html"),
        ("2001:db8::9", "http://[2001:db8::9]/page.html"),  # unbracketed: as before
    ],
)
def test_request_url_by_a_host_header_with_a_loose_port(header: str, url: str) -> None:
    request = tflow.treq(host="unlisted.example.org", port=80, path=b"/page.html")
    request.headers["Host"] = header
    assert request_url(request, by_host_header=True) == url


# -- HTTP/2: a Host header that disagrees with the :authority --------------------------------


def h2_get(proxy: Proxy, connect: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One HTTP/2 request, sent with ``headers`` as given (h2 would refuse to send a Host
    that disagrees with :authority), through a decrypted CONNECT tunnel; status and body,
    or 0 when the stream was reset."""
    context = proxy.client_context()
    context.set_alpn_protocols(["h2"])
    raw = tunnel(proxy, connect)
    with raw, context.wrap_socket(raw, server_hostname=connect.rsplit(":", 1)[0]) as sock:
        config = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body = 0, b""
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status, body
            sock.sendall(conn.data_to_send())
        return status, body


@pytest.fixture(scope="module")
def decrypting_proxy(proxy_with_entries: Callable[..., Proxy]) -> Proxy:
    """Decrypting everything, with mitmproxy's header validation on (the addon refuses it
    off)."""
    return proxy_with_entries("decrypting", options={"blocklist_intercept": "all"})


@pytest.mark.parametrize("page", ["/page.html", "/other.html"])
def test_an_http2_host_header_that_disagrees_with_the_authority_never_reaches_the_origin(
    decrypting_proxy: Proxy, world: World, page: str
) -> None:
    """With validate_inbound_headers off, mitmproxy spoke HTTP/1 to the origin and kept the
    Host header, which the origin read: the listed page was served while only the
    :authority was checked. With it on (which the addon now insists on), the h2 library
    refuses the request, listed or not."""
    before = len(world.open_tls.requests)
    try:
        got, body = h2_get(
            decrypting_proxy,
            "unlisted.example.org:443",
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "unlisted.example.org"),
                (":path", page),
                ("host", "blocked.example.com"),
            ],
        )
    except ConnectionResetError:  # mitmproxy closes the connection on the protocol error
        got, body = 0, b""
    assert got != 200, body[:200]
    assert world.open_tls.requests[before:] == []


def test_host_field_url_reads_an_http2_host_header_that_disagrees_with_the_authority() -> None:
    """The check behind the refusal, kept should the h2 library ever let one through."""
    request = tflow.treq(host="unlisted.example.org", port=443, path=b"/page.html")
    request.scheme = "https"
    request.http_version = "HTTP/2.0"
    request.authority = "unlisted.example.org"
    request.headers["host"] = "blocked.example.com"
    assert host_field_url(request) == "https://blocked.example.com/page.html"
    request.headers["host"] = "unlisted.example.org"
    assert host_field_url(request) is None
    request.http_version = "HTTP/1.1"
    request.headers["host"] = "blocked.example.com"
    assert host_field_url(request) is None


# -- validate_inbound_headers=false ------------------------------------------------------------


def test_validate_inbound_headers_off_is_refused_at_start(
    make_proxy: Callable[..., Proxy], tmp_path
) -> None:
    """Off, mitmproxy forwards a request with both Content-Length and Transfer-Encoding as
    it came: an origin that reads Content-Length takes the rest of the body for a second
    request, which no check saw (request smuggling). Before, the proxy started."""
    proxy = make_proxy(synced_store(tmp_path), options={"validate_inbound_headers": "false"})
    proxy.start(wait=False)
    try:
        code = proxy.wait_exit()
    except subprocess.TimeoutExpired:
        pytest.fail("the proxy started with validate_inbound_headers=false")
    assert code != 0
    log = proxy.log()
    assert "blocklist: validate_inbound_headers=false: mitmproxy then forwards" in log, log
    assert "Traceback" not in log


def test_validate_inbound_headers_off_is_refused_while_running() -> None:
    addon = BlocklistAddon()
    try:
        with taddons.context(addon, Proxyserver()) as tctx:
            with pytest.raises(OptionsError, match="validate_inbound_headers"):
                tctx.configure(addon, validate_inbound_headers=False)
            assert tctx.options.validate_inbound_headers is True  # the change rolled back
            tctx.configure(addon, validate_inbound_headers=True)
    finally:
        addon.images._pool.shutdown(wait=False)
        addon.images.check.close()
