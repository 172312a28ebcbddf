"""What every concern does to a flow: read it (its URL, a header) and answer it.

Shared by the guards; one way each: the URL as the matcher must read it (``request_url``),
a header without mitmproxy's multidict cost (``header``), an answer from the proxy itself
(``respond``), and the 503 for what could not be checked (``UNCHECKED``).
"""

from __future__ import annotations

import re
from typing import Literal

from mitmproxy import http
from mitmproxy.net.http import url

from blocklist_addon.ops import splash

__all__ = [
    "THREAD_BYTES",
    "UNCHECKED",
    "UPLOAD_METHODS",
    "Check",
    "authority_url",
    "carries_body",
    "header",
    "host_field_url",
    "names_another_host",
    "request_url",
    "respond",
    "wire_host",
]

#: Where a check runs, as the error metric and log line name it.
Check = Literal["request", "connect", "tls", "server", "page", "upload", "image"]

#: The answer to a request that could not be checked (blocklist_on_error=closed).
UNCHECKED = splash.SplashResponse(
    503,
    [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
    b"The proxy could not check this request against the blocklist; try again later.\n",
)

#: The methods that carry an upload.
UPLOAD_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Bodies larger than this (a page, a post, a WebSocket message) are scanned in a worker
#: thread, not on the event loop, where a scan of about 0.5 s a MiB stalls every connection.
THREAD_BYTES = 64 * 1024


def wire_host(host: str) -> str:
    """The host as the client sent it. mitmproxy decodes the punycode host of a request
    (absolute form and CONNECT) with Python's IDNA 2003 codec, refuses one that does not
    round-trip, and encodes it back the same way to connect. Read as Unicode, it would be
    mapped by UTS 46 as of today, not Unicode 3.2's nameprep: another host for 1,211 of
    the 968,603 one-code-point A-labels mitmproxy accepts (``xn--a-5bh`` holds a Hangul
    filler that UTS 46 drops: it would be ``a``)."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def request_url(request: http.Request, *, by_host_header: bool = False) -> str:
    """The URL the client asked for, as the matcher (and a log or a page's base) must read it.

    mitmproxy keeps an IPv6 host without its brackets, so ``request.url`` and
    ``pretty_url`` give ``http://2001:db8::7/x``, which every URL parser reads as host
    ``2001``: a listed IPv6 address, and any IPv4 address written IPv4-mapped
    (``[::ffff:192.0.2.44]``), would pass. Build the URL here with the brackets put back;
    every URL taken from a request goes through this function. ``by_host_header``: the
    host the Host header (or HTTP/2 authority) names instead (transparent, reverse mode).
    """
    host, port = request.host, request.port
    if by_host_header and (header := request.host_header):
        if (
            header == host
            and ":" not in host
            and not host.startswith("[")  # parse_authority would take brackets off
            and port == url.default_port(request.scheme)
        ):
            # The Host header names the URL's own host on its scheme's port (a browser's
            # every request): the URL's own, without parse_authority's IDNA checks (about
            # 15 us, on every page scanned).
            return request.url
        host, header_port = _authority(header)
        port = header_port or url.default_port(request.scheme) or port
    elif host.isascii() and ":" not in host:
        return request.url  # no IPv6 literal: mitmproxy's own URL is right (and cheaper)
    else:
        host = wire_host(host)
    if ":" in host:
        host = f"[{host}]"
    if request.first_line_format == "authority":  # CONNECT host:port
        return f"{host}:{port}"
    path = request.path if request.path != "*" else ""
    return url.unparse(request.scheme, host, port, path)


def authority_url(request: http.Request) -> str | None:
    """The URL an HTTP/1 request in absolute form names by its request line, when that
    differs from the URL's host (else None). In a CONNECT tunnel and in transparent and
    reverse mode mitmproxy takes the URL's host from where the connection goes and sends the
    request line upstream as it is, and servers take the host from an absolute-form request
    line, not from Host (RFC 9112 section 3.2.2): ``GET http://listed.example/page`` with an
    unlisted Host header, to a server that hosts both, is the listed page."""
    if not request.data.authority or request.is_http2 or request.is_http3:
        return None  # origin form (or regular mode, where it is the URL's), or HTTP/2's
    return _url_by(request, request.authority)


def host_field_url(request: http.Request) -> str | None:
    """The URL an HTTP/2 or HTTP/3 request names by a Host header that disagrees with its
    :authority (else None), which the Host check does not read (``host_header`` is the
    :authority). The h2 library refuses the disagreement, unless validate_inbound_headers is
    off (which the addon refuses: ``ops.options.refuse_unsafe``): mitmproxy then keeps the
    Host header when it speaks HTTP/1 upstream, and the server serves the page of the host
    it names. Kept as a second line."""
    if not (request.is_http2 or request.is_http3):
        return None
    value = header(request.headers, b"host")
    if value is None or value == request.authority:
        return None
    return _url_by(request, value)


def _url_by(request: http.Request, authority: str) -> str | None:
    """The request's URL on the host (and port) ``authority`` names, None when that is the
    URL's own host."""
    host, port = _authority(authority)
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() == request.host.lower():
        return None
    host = wire_host(host)
    if ":" in host:
        host = f"[{host}]"
    port = port or url.default_port(request.scheme) or request.port
    return url.unparse(request.scheme, host, port, request.path if request.path != "*" else "")


#: A host and a port that is empty or out of range, which servers read as the host alone.
_LOOSE_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*):\d*\Z")


def _authority(value: str) -> tuple[str, int | None]:
    """The host and port of a Host header or authority as servers read them: mitmproxy's
    parse and, where that fails on the port, the host alone. ``Host: listed.example:`` (an
    empty port, which RFC 3986 allows) or ``:99999`` is ``listed.example`` to nginx, which
    picks its server by what comes before the colon; read whole, it was the host
    ``[listed.example:]``, which nothing lists. Without a ":" or "[" the value is its host
    whole, which parse_authority's checks (about 5 us, on every page scanned) would give."""
    if ":" not in value and "[" not in value:
        return value, None
    host, port = url.parse_authority(value, check=False)
    if port is None and (loose := _LOOSE_PORT.match(value)):
        host = loose["host"].removeprefix("[").removesuffix("]")
    return host, port


def names_another_host(request: http.Request) -> bool:
    """Whether the Host header names a host other than the URL's (transparent and reverse
    mode): only then can the URL by Host differ in what matching reads (ports do not count)."""
    # request.host_header without its multidict lookup: the first Host field, else the
    # HTTP/2 and HTTP/3 authority.
    header_value = header(request.headers, b"host") or request.authority
    if not header_value:
        return False
    host = header_value
    if host.rsplit(":", 1)[-1].isdigit():
        host = host.rpartition(":")[0]
    return host.removeprefix("[").removesuffix("]").lower() != request.host.lower()


def carries_body(request: http.Request) -> bool:
    """Whether ``request`` sends a body, whatever its method: one read already (at the
    ``request`` hook), else one it declares (a length above 0, or chunked). Servers read the
    body of any method (PHP's php://input, a handler for every method): the method does not
    decide what is checked. An HTTP/2 body without a length shows only once read."""
    if (content := request.data.content) is not None:
        return bool(content)
    for key, value in request.headers.fields:
        if len(key) == 17 and key.lower() == b"transfer-encoding":
            return True
        if len(key) == 14 and key.lower() == b"content-length":
            return value.strip().lstrip(b"0") != b""
    return False


def header(headers: http.Headers, name: bytes) -> str | None:
    """The first field ``name`` (lower case) of ``headers``, read straight from its fields:
    mitmproxy's ``headers.get`` costs about 3 us a call, which every request would pay
    several times over."""
    for key, value in headers.fields:
        if len(key) == len(name) and key.lower() == name:
            return value.decode("latin-1")
    return None


def respond(flow: http.HTTPFlow, answer: splash.SplashResponse) -> None:
    """Answer ``flow`` with ``answer`` from the proxy itself; nothing goes upstream."""
    flow.request.stream = False  # a streamed upload and a response cannot both be set
    flow.response = http.Response.make(
        answer.status, answer.body, [(k.encode(), v.encode()) for k, v in answer.headers]
    )
