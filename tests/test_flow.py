"""What every guard reads from a flow and how it answers one (blocklist_addon/guards/flow.py),
in-process: the URL the matcher reads (brackets, IDNA, the Host header), the Host header
check, a header read from the raw fields, and an answer from the proxy itself.

tests/test_proxy_ipv6.py checks the same through a running proxy; these run in `make quick`
and under `make mutate`, which sees only in-process tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.net.http import url
from mitmproxy.test import tflow, tutils

from blocklist_addon.guards.flow import (
    UNCHECKED,
    _authority,
    header,
    names_another_host,
    request_url,
    respond,
    wire_host,
)
from blocklist_addon.ops.splash import SplashResponse


def request(
    host: str,
    *,
    port: int = 80,
    scheme: bytes = b"http",
    method: bytes = b"GET",
    path: bytes = b"/x?q",
    host_header: str | None = None,
) -> http.Request:
    made = tutils.treq(host=host, port=port, scheme=scheme, method=method, path=path, headers=())
    if host_header is not None:
        made.headers["Host"] = host_header
    return made


@pytest.mark.parametrize(
    ("host", "wire"),
    [
        ("listed.example", "listed.example"),
        ("bücher.example", "xn--bcher-kva.example"),  # IDNA 2003, as mitmproxy encodes it
        ("ü..example", "ü..example"),  # an empty label: IDNA refuses, the host stays as it was
    ],
)
def test_wire_host_is_the_host_as_the_client_sent_it(host: str, wire: str) -> None:
    assert wire_host(host) == wire


@pytest.mark.parametrize(
    ("made", "url"),
    [
        (request("listed.example"), "http://listed.example/x?q"),
        (request("listed.example", port=8080), "http://listed.example:8080/x?q"),
        (request("2001:db8::7"), "http://[2001:db8::7]/x?q"),
        (request("2001:db8::7", port=8080), "http://[2001:db8::7]:8080/x?q"),
        (request("bücher.example"), "http://xn--bcher-kva.example/x?q"),
        (request("2001:db8::7", scheme=b"https", port=443), "https://[2001:db8::7]/x?q"),
        # OPTIONS *: the asterisk is no path of the URL
        (request("2001:db8::7", method=b"OPTIONS", path=b"*"), "http://[2001:db8::7]"),
    ],
)
def test_request_url_puts_ipv6_brackets_back_and_encodes_idna(made: http.Request, url: str) -> None:
    assert request_url(made) == url


def test_request_url_reads_the_host_header_only_when_asked() -> None:
    assert request_url(request("192.0.2.1", host_header="listed.example")) == "http://192.0.2.1/x?q"


def test_request_url_of_a_connect_is_host_and_port() -> None:
    connect = request("2001:db8::9", port=443, method=b"CONNECT", path=b"")
    connect.authority = "[2001:db8::9]:443"
    assert request_url(connect) == "[2001:db8::9]:443"
    connect = request("bücher.example", port=443, method=b"CONNECT", path=b"")
    connect.authority = "bücher.example:443"
    assert request_url(connect) == "xn--bcher-kva.example:443"


@pytest.mark.parametrize(
    ("made", "url"),
    [
        # transparent mode: the address is the destination, the Host header the site
        (request("192.0.2.1", host_header="listed.example"), "http://listed.example/x?q"),
        (request("192.0.2.1", host_header="listed.example:81"), "http://listed.example:81/x?q"),
        (request("192.0.2.1", host_header="[2001:db8::7]"), "http://[2001:db8::7]/x?q"),
        # no port in the Host header: the scheme's, not the connection's
        (
            request("192.0.2.1", scheme=b"https", port=8443, host_header="listed.example"),
            "https://listed.example/x?q",
        ),
        # a Host header no parser would accept is still read, not raised on
        (request("192.0.2.1", host_header="bad host.example"), "http://bad host.example/x?q"),
        # no Host header: the request's own host
        (request("2001:db8::7", port=8080), "http://[2001:db8::7]:8080/x?q"),
    ],
)
def test_request_url_by_host_header(made: http.Request, url: str) -> None:
    assert request_url(made, by_host_header=True) == url


def _by_host_header_in_full(made: http.Request) -> str:
    """request_url(by_host_header=True) as it was before its shortcut: the Host header
    parsed every time."""
    header_host, header_port = url.parse_authority(made.host_header or "", check=False)
    port = header_port or url.default_port(made.scheme) or made.port
    host = f"[{header_host}]" if ":" in header_host else header_host
    return url.unparse(made.scheme, host, port, made.path if made.path != "*" else "")


@pytest.mark.parametrize(
    "host", ["listed.example", "LISTED.example", "192.0.2.1", "bü.example", "[listed.example]"]
)
@pytest.mark.parametrize("header", ["(the host)", "listed.example", "listed.example:80"])
@pytest.mark.parametrize(
    ("scheme", "port"), [(b"http", 80), (b"http", 8080), (b"https", 443), (b"https", 80)]
)
@pytest.mark.parametrize("path", [b"/x?q", b"*"])
def test_request_url_by_host_header_shortcut_reads_what_the_full_parse_reads(
    host: str, header: str, scheme: bytes, port: int, path: bytes
) -> None:
    """A Host header naming the URL's own host on its scheme's port (a browser's every
    request, every page scanned) skips parse_authority; the URL is the same."""
    header = host if header == "(the host)" else header
    made = request(host, port=port, scheme=scheme, path=path, host_header=header)
    assert request_url(made, by_host_header=True) == _by_host_header_in_full(made)


def test_request_url_by_host_header_on_another_port_is_the_scheme_port() -> None:
    # The URL's host named, the connection on another port than the scheme's: the Host
    # header's (none: the scheme's), not the connection's.
    made = request("listed.example", port=8080, host_header="listed.example")
    assert request_url(made, by_host_header=True) == "http://listed.example/x?q"
    made = request("listed.example", scheme=b"https", port=80, host_header="listed.example")
    assert request_url(made, by_host_header=True) == "https://listed.example/x?q"


@pytest.mark.parametrize(
    ("made", "another"),
    [
        (request("listed.example"), False),  # no Host header, no authority
        (request("listed.example", host_header="listed.example"), False),
        (request("listed.example", host_header="LISTED.example"), False),
        (request("listed.example", host_header="listed.example:8080"), False),  # ports do not count
        (request("2001:db8::7", host_header="[2001:db8::7]:80"), False),
        (request("2001:db8::7", host_header="[2001:DB8::7]"), False),
        (request("192.0.2.1", host_header="listed.example"), True),
        (request("listed.example", host_header="other.example:80"), True),
        (request("listed.example", host_header="listed.example:http"), True),  # no port
    ],
)
def test_names_another_host(made: http.Request, another: bool) -> None:
    assert names_another_host(made) is another


def test_names_another_host_reads_the_http2_authority_without_a_host_header() -> None:
    made = request("192.0.2.1")
    made.authority = "listed.example:443"
    assert names_another_host(made) is True
    made.authority = "192.0.2.1:443"
    assert names_another_host(made) is False


def test_header_is_the_first_field_of_that_name_in_any_case() -> None:
    headers = http.Headers(
        [
            (b"Date", b"Mon, 07 Dec 2026 12:00:00 GMT"),  # as long as "host"
            (b"X-Hostname", b"long.example"),  # a longer name that begins with "host"
            (b"HOST", b"caf\xe9.example"),  # latin-1, as the wire allows
            (b"host", b"second.example"),
        ]
    )
    assert header(headers, b"host") == "café.example"
    assert header(headers, b"x-hostname") == "long.example"
    assert header(headers, b"accept") is None
    assert header(http.Headers([(b"hos", b"short.example")]), b"host") is None


def test_respond_answers_from_the_proxy_and_stops_the_upload_stream() -> None:
    flow = tflow.tflow()
    flow.request.stream = True
    answer = SplashResponse(451, [("Content-Type", "text/plain"), ("X-Blocked", "iwf")], b"no\n")
    respond(flow, answer)
    assert flow.request.stream is False
    assert flow.response is not None
    assert flow.response.status_code == 451
    assert flow.response.content == b"no\n"
    assert flow.response.headers.fields == (
        (b"Content-Type", b"text/plain"),
        (b"X-Blocked", b"iwf"),
        (b"content-length", b"3"),
    )


def test_what_could_not_be_checked_is_answered_503_and_not_cached() -> None:
    flow = tflow.tflow()
    respond(flow, UNCHECKED)
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.headers["Cache-Control"] == "no-store"
    assert flow.response.text == (
        "The proxy could not check this request against the blocklist; try again later.\n"
    )


@given(st.text(st.characters(exclude_characters=":["), max_size=80))
def test_a_host_without_colon_or_bracket_is_read_as_parse_authority_reads_it(value: str) -> None:
    """_authority's shortcut (no ":" or "[": the value whole) gives parse_authority's answer."""
    assert _authority(value) == url.parse_authority(value, check=False)
