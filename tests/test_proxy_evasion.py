"""The evasion families of issue 15 through the live proxy: each listed spelling gets the 451
with no upstream connection at all, each near miss passes to its origin.

One proxy for the module (regular mode, the sample feed plus the entries below, synced by the
real ``blocklist-sync``); the library-level tables for the same families are in
``tests/test_embedded.py``, ``tests/test_canonical.py`` and ``tests/test_matcher.py``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from harness import SAMPLE_FEED, Proxy, TestCA, World, assert_splash, feed_with, running, sync

from blocklist_addon import Blocklist

EXTRA_ENTRIES = [
    "http://blocked.example.com/my%20file.html",  # a page whose name holds a space
    "http://exact.example.net/view?id=42",  # an exact-query entry
]

PAGE = "http://blocked.example.com/page.html"
EXACT = "http://exact.example.net/view?id=42"


def feed_entries(path: pathlib.Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def q(url: str) -> str:
    return quote(url, safe="")


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
}


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
    confdir: pathlib.Path,
    ca: TestCA,
) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("evasion")
    store = (directory / "store").as_uri()
    sync(store, feed_with(directory, *EXTRA_ENTRIES), data_dir=directory / "data")
    routes = {**world.routes, "exact.example.net:80": world.listed_http.port}
    proxy = Proxy(directory / "proxy", store=store, routes=routes, confdir=confdir, ca=ca)
    with running(proxy):
        yield proxy


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_listed_spelling_is_blocked_before_any_connection(
    proxy: Proxy, world: World, url: str
) -> None:
    before = world.connections()
    response = proxy.get(url, headers={"Accept": "text/html"})
    assert_splash(response, page=True)
    assert world.connections() == before


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
    assert library.match(url) is None
