"""IPv6-literal URLs through the live proxy (issue 15.1).

mitmproxy keeps an IPv6 host without its brackets (``request.host == "2001:db8::7"``, and
``request.url == "http://2001:db8::7/x"``), so a URL rebuilt from it reads as host ``2001``.
These requests reach the proxy as a browser sends them; each listed one must get the 451
without the listed origin ever seeing a connection, and IPv4-mapped spellings of a listed
IPv4 address must not be a way around its entry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mitmproxy.test import tutils

from blocklist_addon.guards.flow import request_url
from testlab.harness import Proxy, World, assert_splash

V6_ENTRIES = [
    "http://[2001:db8::7]/v6/page.html",
    "[2001:db8::9]/",  # a whole host
]

LISTED = [
    "http://[2001:db8::7]/v6/page.html",
    "http://[2001:db8::7]:80/v6/page.html",
    "http://[2001:db8::7]:8080/v6/page.html",
    "http://[2001:DB8:0:0:0:0:0:7]/v6/page.html",
    "http://[2001:db8::7]/v6/page.html?x=1",
    "http://[2001:db8::9]/anything",
    # The sample feed's http://192.0.2.44/img/photo.jpg, in IPv4-mapped IPv6 forms:
    "http://[::ffff:192.0.2.44]/img/photo.jpg",
    "http://[::ffff:c000:22c]/img/photo.jpg",
    "http://[0:0:0:0:0:ffff:192.0.2.44]:80/img/photo.jpg",
    # Embedded in a redirector, bracketed as a browser writes it:
    "http://redirect.example.net/?u=http%3A%2F%2F%5B2001%3Adb8%3A%3A7%5D%2Fv6%2Fpage.html",
]

UNLISTED = [
    "http://[2001:db8::7]/v6/other.html",
    "http://[2001:db8::8]/v6/page.html",
    "http://[::ffff:192.0.2.45]/img/photo.jpg",
]


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy], world: World) -> Proxy:
    routes = {
        "2001:db8::7:80": world.listed_http.port,
        "2001:db8::7:8080": world.listed_http.port,
        "2001:db8::9:80": world.listed_http.port,
        "2001:db8::9:443": world.listed_tls.port,
        "::ffff:192.0.2.44:80": world.listed_http.port,
        "::ffff:c000:22c:80": world.listed_http.port,
    }
    return proxy_with_entries("ipv6", *V6_ENTRIES, routes=routes)


@pytest.mark.parametrize("url", LISTED)
def test_listed_ipv6_literal_is_blocked_before_any_connection(
    proxy: Proxy, world: World, url: str
) -> None:
    before = world.listed_http.connections
    response = proxy.get(url, headers={"Accept": "text/html"})
    assert_splash(response, page=True)
    assert world.listed_http.connections == before


@pytest.mark.parametrize("url", UNLISTED)
def test_unlisted_ipv6_literal_passes(proxy: Proxy, url: str) -> None:
    response = proxy.get(url)
    assert response.status == 200, response.text


def test_connect_to_whole_listed_ipv6_host_is_intercepted_and_blocked(
    proxy: Proxy, world: World
) -> None:
    """CONNECT [2001:db8::9]:443: the host is listed whole, so the proxy decrypts (it has a
    listed entry) and answers the request inside with the splash page."""
    before = world.listed_tls.connections
    response, _ = proxy.https_get("2001:db8::9", "/anything", headers={"Accept": "text/html"})
    assert_splash(response, page=True)
    assert world.listed_tls.connections == before


def test_block_log_names_the_entry_not_the_address(proxy: Proxy) -> None:
    proxy.get("http://[2001:db8::7]/v6/page.html")
    lines = proxy.log_path.read_text() + proxy.blocks_path.read_text()
    assert "2001:db8::7" not in lines
    assert any(event["where"] == "request" for event in proxy.blocks())


@pytest.fixture(scope="module")
def refusing_proxy(proxy_with_entries: Callable[..., Proxy], world: World) -> Proxy:
    return proxy_with_entries(
        "ipv6-never",
        *V6_ENTRIES,
        routes={"2001:db8::9:443": world.listed_tls.port},
        options={"blocklist_intercept": "never"},
    )


@pytest.mark.parametrize("host", ["[2001:db8::9]", "[2001:DB8::0:9]"])
def test_connect_refused_for_whole_listed_ipv6_host_without_decryption(
    refusing_proxy: Proxy, world: World, host: str
) -> None:
    before = world.listed_tls.connections
    assert refusing_proxy.connect(host) == 451
    assert world.listed_tls.connections == before


# -- the URL the matcher reads, from mitmproxy's request (no process) ----------------------


@pytest.mark.parametrize(
    ("host", "port", "host_header", "direct", "by_host"),
    [
        ("2001:db8::7", 80, None, "http://[2001:db8::7]/x?q", "http://[2001:db8::7]/x?q"),
        ("2001:db8::7", 8080, None, "http://[2001:db8::7]:8080/x?q", None),
        ("example.com", 80, None, "http://example.com/x?q", "http://example.com/x?q"),
        # Transparent mode: the address is the destination, the Host header the site.
        ("2001:db8::7", 80, "listed.example", None, "http://listed.example/x?q"),
        ("192.0.2.1", 80, "[2001:db8::7]", "http://192.0.2.1/x?q", "http://[2001:db8::7]/x?q"),
        ("192.0.2.1", 80, "[2001:db8::7]:81", None, "http://[2001:db8::7]:81/x?q"),
    ],
)
def test_request_url_keeps_ipv6_brackets(
    host: str, port: int, host_header: str | None, direct: str | None, by_host: str | None
) -> None:

    request = tutils.treq(host=host, port=port, path=b"/x?q", headers=())
    if host_header is not None:
        request.headers["Host"] = host_header
    if direct is not None:
        assert request_url(request) == direct
    if by_host is not None:
        assert request_url(request, by_host_header=True) == by_host


def test_request_url_of_a_connect_keeps_brackets() -> None:

    request = tutils.treq(method=b"CONNECT", host="2001:db8::9", port=443, path=b"")
    request.authority = "[2001:db8::9]:443"
    assert request_url(request) == "[2001:db8::9]:443"
