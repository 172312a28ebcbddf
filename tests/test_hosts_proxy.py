"""Internationalised hosts through the live proxy: entries written in Unicode or in punycode
block the request a browser sends (always punycode, which mitmproxy decodes to Unicode with
Python's IDNA 2003 codec before the addon reads it), directly, inside a redirector and over
HTTPS (CONNECT and SNI), with no upstream connection; near misses reach their origin.

One proxy for the module (regular mode, the sample feed plus the entries below, synced by the
real ``blocklist-sync``). The library-level tables are in tests/test_hosts.py, Chromium's own
answers in tests/test_hosts_browser.py. Reserved names only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_hosts import OKINA, OKINA_ASCII

from testlab.harness import Proxy, World, assert_blocked, assert_splash
from testlab.origins import TestCA

#: "hangul" and a Hangul filler (U+1160) in punycode: browsers refuse it (UTS 46 drops the
#: filler, so the A-label does not decode to a valid label), but mitmproxy accepts it from
#: a client, decodes it to Unicode and connects to it as it is.
FILLER = "xn--hangul-gyy.example.org"

ENTRIES = [
    "http://\u2603.test/snow.html",  # Unicode page entry (xn--n3h.test)
    "http://xn--a_-yka.test/page.html",  # punycode page entry (a_ü.test)
    "http://xn--e28h.example.org/",  # punycode whole host (😀.example.org)
    f"{OKINA}/",  # Unicode whole host
    "http://hangul.example.org/filler.html",
    f"http://{FILLER}/listed.html",
]

LISTED = {
    "unicode-entry": "http://xn--n3h.test/snow.html",
    "unicode-entry-upper": "http://XN--N3H.TEST/snow.html",
    # mitmproxy hands the addon "a_ü.test": before issue 21 that never met the entry
    "punycode-entry": "http://xn--a_-yka.test/page.html",
    "punycode-whole-host": "http://www.xn--e28h.example.org/any/page",
    "unicode-whole-host": f"http://{OKINA_ASCII}/x.jpg",
    "redirect-unicode-escaped": "http://redir.example.net/?u=http://%E2%98%83.test/snow.html",
    "redirect-punycode": "http://redir.example.net/?u=http%3A%2F%2Fxn--n3h.test%2Fsnow.html",
    "redirect-unicode-for-punycode-entry": "http://redir.example.net/?u=http://a_%C3%BC.test"
    "/page.html",
    "redirect-ideographic-dot": "http://redir.example.net/?u=http://%F0%9F%98%80%E3%80%82"
    "example.org/",
    "path-wrapper": "http://i0.example.net/%E2%98%83.test/snow.html",
    # the host as the client sent it, not as UTS 46 maps mitmproxy's decoding of it
    "a-label-as-sent": f"http://{FILLER}/listed.html",
}

NEAR_MISSES = {
    "sibling-page": "http://xn--n3h.test/other.html",
    "another-emoji": "http://xn--n3ha.test/snow.html",  # ☃☃.test
    "letter-without-diaeresis": "http://a_u.test/page.html",
    "redirect-sibling": "http://redir.example.net/?u=http://%E2%98%83.test/other.html",
    # another host on the wire than hangul.example.org, whose page this path is on
    "a-label-not-its-mapping": f"http://{FILLER}/filler.html",
}


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy]) -> Proxy:
    return proxy_with_entries("idn", *ENTRIES)


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_listed_idn_is_blocked_before_any_connection(proxy: Proxy, world: World, url: str) -> None:
    assert_blocked(proxy, world, url)


@pytest.mark.parametrize("url", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_miss_reaches_its_origin(proxy: Proxy, world: World, url: str) -> None:
    before = world.open_http.connections
    response = proxy.get(url)
    assert response.status == 200, response.text
    assert response.headers["X-Origin"] == "open-http"
    assert world.open_http.connections == before + 1


@pytest.mark.parametrize("host", ["xn--e28h.example.org", "sub.xn--e28h.example.org", OKINA_ASCII])
def test_https_to_a_whole_listed_idn_host_is_answered_by_the_proxy(
    proxy: Proxy, world: World, host: str
) -> None:
    """CONNECT and SNI carry the punycode host; the entry may be written either way."""
    before = world.connections()
    response, _ = proxy.https_get(host, "/x.jpg")
    assert_splash(response, page=False)
    assert world.connections() == before


def test_https_to_a_listed_idn_page_is_decrypted_and_blocked(
    proxy: Proxy, world: World, ca: TestCA
) -> None:
    before = world.connections()
    response, seen = proxy.https_get("xn--n3h.test", "/snow.html", headers={"Accept": "text/html"})
    assert_splash(response, page=True)
    assert seen != ca.origin_der  # decrypted: the CONNECT host has a listed entry
    assert world.connections() == before
