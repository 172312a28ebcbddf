"""The evasion families of issue 15 through the live proxy: each listed spelling gets the 451
with no upstream connection at all, each near miss passes to its origin.

One proxy for the module (regular mode, the sample feed plus the entries below, synced by the
real ``blocklist-sync``); the library-level tables for the same families are in
``tests/test_embedded.py``, ``tests/test_canonical.py`` and ``tests/test_matcher.py``.
"""

from __future__ import annotations

import base64
import pathlib
from collections.abc import Callable
from urllib.parse import quote

import pytest

from blocklist_addon import Blocklist
from testlab.harness import SAMPLE_FEED, Proxy, World, assert_blocked, assert_splash, feed_entries
from testlab.origins import TestCA

EXTRA_ENTRIES = [
    "http://blocked.example.com/my%20file.html",  # a page whose name holds a space
    "http://exact.example.net/view?id=42",  # an exact-query entry
    "http://report.hotline.example/listed-itself.html",  # an exempt host's own page
]
#: The hotline's report form: its own URL is checked, the URLs embedded in it are not.
EXEMPT = "report.hotline.example"

PAGE = "http://blocked.example.com/page.html"
EXACT = "http://exact.example.net/view?id=42"


def q(url: str) -> str:
    return quote(url, safe="")


def b64(url: str, *, url_safe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
    return encode(url.encode()).decode()


def padded(url: str, pad: str, times: int = 12) -> str:
    """``url`` with ``pad`` (a segment and the ".." that removes it) before its path."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}{pad * times}/{path}"


LISTED = {
    # 15.2: an escaped "?" followed by dot segments; "%2e%2e"; double encoding; query and
    # directory entries; and Google's reading ("%3F" starts the query).
    "escaped-?": "http://blocked.example.com/x%3F/../page.html",
    "escaped-?-%2e%2e": "http://blocked.example.com/x%3F/%2e%2e/page.html",
    "escaped-?-double": "http://blocked.example.com/x%253F/%252e%252e/page.html",
    "escaped-?-directory": "http://blocked.example.com/gallery/x%3F/../photo/1.jpg",
    "escaped-?-query-entry": "http://exact.example.net/a%3F/../view?id=42",
    "escaped-?-as-query": "http://blocked.example.com/page.html%3Fid=1",
    "escaped-?-embedded": "http://redirect.example.net/?u="
    + q("http://blocked.example.com/x%3F/../page.html"),
    # 15.4: "+" is a space to the redirector's form decoder.
    "form-plus": "http://redirect.example.net/?u="
    + q("http://blocked.example.com/my file.html").replace("%20", "+"),
    "form-plus-raw": "http://redirect.example.net/?u=http://blocked.example.com/my+file.html",
    # 15.7: the wrapped URL read whole keeps its exact query; the outer "&" ends it.
    "exact-query-wrapped": "http://redirect.example.net/?u=" + q(EXACT) + "&utm=1",
    "exact-query-nested": "http://r2.example.net/?u="
    + q("http://r1.example.net/?u=" + q(EXACT) + "&level=1")
    + "&level=2",
    # 15.3: padding with removed segments that hold markers fills no marker window.
    "padding-www": "http://redirect.example.net/?u=" + q(padded(PAGE, "/www.a/..")),
    "padding-schemes": "http://redirect.example.net/?u=" + padded(PAGE, "/http:/.."),
    "padding-values": "http://redirect.example.net/?u=" + q(padded(PAGE, "/=b.test/..")),
    "padding-archive": "http://archive.example.net/web/2020/" + padded(PAGE, "/www.a/www.b/../.."),
    "padding-removed-host": "http://archive.example.net/web/2020/www.blocked.example.com"
    + "/../www.a" * 12
    + "/../page.html",
    # 15.5: redirect targets as browsers read them (WHATWG URL).
    "lenient-leading-space": "http://redirect.example.net/?u=%20%01//blocked.example.com/page.html",
    "lenient-tab-in-scheme": "http://redirect.example.net/?u=ht%09tp://blocked.example.com/page.html",
    "lenient-no-slashes": "http://redirect.example.net/?u=https:blocked.example.com/page.html",
    "lenient-number-host": "http://redirect.example.net/?u=http:3221226028/img/photo.jpg",
    "lenient-protocol-relative-path": "http://redirect.example.net/out/%2F%2Fblocked.example.com"
    "%2Fpage.html",
    "lenient-backslashes": "http://redirect.example.net/out/\\\\blocked.example.com\\page.html",
    "lenient-ideographic-dots": "http://redirect.example.net/?u=blocked%E3%80%82example"
    "%E3%80%82com/page.html",
    # 15.6: wrappers that carry the host in the path or in another encoding.
    "amp-cache": "http://a-b.cdn.example.net/c/s/blocked.example.com/page.html",
    "amp-image": "http://a-b.cdn.example.net/i/s/blocked.example.com/gallery/photo/1.jpg",
    "amp-viewer": "http://www.example.net/amp/s/blocked.example.com/page.html",
    "image-cdn": "http://i0.example.net/blocked.example.com/page.html?w=300",
    "thumbor": "http://t.example.net/unsafe/300x200/smart/blocked.example.com/page.html",
    "media-proxy": "http://m.example.net/external/Zx9_k2Ab/http/192.0.2.44/img/photo.jpg",
    "generic-proxy": "http://p.example.net/proxy/whole-site.blocked.test/anything",
    "proofpoint-v2": "http://urldefense.example.net/v2/url?u=http-3A__blocked.example.com"
    "_page.html&d=DwMF&c=x",
    "proofpoint-v3": "http://urldefense.example.net/v3/__http://blocked.example.com/page.html"
    "__;!!Ab1$",
    "base64-param": "http://redirect.example.net/?u=" + b64(PAGE),
    "base64url-path": "http://redirect.example.net/go/" + b64(EXACT, url_safe=True) + "/x",
    "hex-camo": "http://camo.example.net/5f1d0e/" + PAGE.encode().hex(),
    "cache-operator": "http://search.example.net/search?q=cache:blocked.example.com/page.html",
    "translate-host": "http://blocked-example-com.translate.goog/page.html?_x_tr_sl=auto",
    # The exempt host's own URL is still checked.
    "exempt-host-itself": "http://report.hotline.example/listed-itself.html",
}

NEAR_MISSES = {
    "escaped-?-stays": "http://blocked.example.com/page.html%3F/../other.html",
    "escaped-?-sibling": "http://blocked.example.com/x%3F/../page2.html",
    "form-plus-literal": "http://redirect.example.net/?u="
    + q("http://blocked.example.com/my+file.html"),
    "exact-query-continues": "http://redirect.example.net/?u="
    + q("http://exact.example.net/view?id=42&page=2"),
    "exact-query-continues-nested": "http://r2.example.net/?u="
    + q("http://r1.example.net/?u=" + q("http://exact.example.net/view?id=42&page=2") + "&a=1"),
    "exact-query-other": "http://exact.example.net/view?id=42&page=2",
    "padding-sibling": "http://redirect.example.net/?u="
    + q(padded("http://blocked.example.com/other.html", "/www.a/..")),
    "amp-sibling": "http://a-b.cdn.example.net/c/s/blocked.example.com/other.html",
    "base64-sibling": "http://redirect.example.net/?u=" + b64("http://blocked.example.com/x.html"),
    "translate-sibling": "http://blocked-example-com.translate.goog/other.html",
    # a mere mention of a listed host is no fetch of its page
    "mention-tag": "http://blog.example.net/tag/blocked.example.com",
    "mention-whois": "http://whois.example.net/?domain=blocked.example.com",
    # the hotline's report form carrying a listed URL
    "report-form": f"http://{EXEMPT}/report?url=" + q(PAGE),
    "report-form-post-target": f"http://{EXEMPT}/r/" + b64(PAGE),
}


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy], world: World) -> Proxy:
    return proxy_with_entries(
        "evasion",
        *EXTRA_ENTRIES,
        routes={"exact.example.net:80": world.listed_http.port},
        options={"blocklist_embedded_exempt": EXEMPT},
    )


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_listed_spelling_is_blocked_before_any_connection(
    proxy: Proxy, world: World, url: str
) -> None:
    assert_blocked(proxy, world, url)


@pytest.mark.parametrize("url", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_miss_passes(proxy: Proxy, url: str) -> None:
    response = proxy.get(url)
    assert response.status == 200, response.text
    assert response.headers["X-Origin"]


# -- the same table against the library (no process): the two must agree ------------------


@pytest.fixture(scope="module")
def library() -> Blocklist:
    return Blocklist.from_entries(feed_entries(SAMPLE_FEED) + EXTRA_ENTRIES)


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_library_blocks_the_listed_spelling(library: Blocklist, url: str) -> None:
    assert library.match(url) is not None


@pytest.mark.parametrize("url", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_library_passes_the_near_miss(library: Blocklist, url: str) -> None:
    assert library.match(url, embedded_exempt=[EXEMPT]) is None


def test_report_form_is_blocked_without_the_exemption(library: Blocklist) -> None:
    assert library.match(NEAR_MISSES["report-form"]) is not None


def test_translate_host_of_a_whole_listed_site_over_tls(proxy: Proxy, world: World) -> None:
    """CONNECT to the Translate proxy host of a whole listed site: decrypted (the host has
    a listed entry through its translation) and answered with the splash page."""
    before = world.connections()
    response, _ = proxy.https_get(
        "whole--site-blocked-test.translate.goog", "/a", headers={"Accept": "text/html"}
    )
    assert_splash(response, page=True)
    assert world.connections() == before


def test_exempt_option_is_validated(
    tmp_path: pathlib.Path, confdir: pathlib.Path, ca: TestCA
) -> None:
    proxy = Proxy(
        tmp_path / "proxy",
        store=(tmp_path / "store").as_uri(),
        routes={},
        confdir=confdir,
        ca=ca,
        options={"blocklist_embedded_exempt": "https://report.hotline.example/form"},
    )
    proxy.start(wait=False)
    try:
        assert proxy.wait_exit(60) != 0
    finally:
        proxy.stop()
    assert "blocklist_embedded_exempt: not a host name" in proxy.log()
