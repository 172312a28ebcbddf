"""Issue 21, items 2 and 3, through the live proxy: each wrapper family around a listed URL
gets the 451 with no upstream connection at all; the same wrappers around unlisted URLs,
the pages that only name a listed host, and redirects whose listed host is user info pass
to their origin.

One proxy for the module (regular mode, the sample feed plus an exact-query entry, synced by
the real ``blocklist-sync``). The generators over random listed URLs are in
``tests/test_wrappers.py``; these are one or two of each family, and the library must agree.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import quote

import pytest

from blocklist_addon import Blocklist
from testlab.harness import (
    SAMPLE_FEED,
    Proxy,
    World,
    assert_blocked,
    feed_entries,
)

EXACT = "http://exact.example.net/view?id=42"
PAGE = "http://blocked.example.com/page.html"
HOST = "whole-site.blocked.test"


def b64url(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def split(text: str, size: int) -> str:
    return "/".join(text[i : i + size] for i in range(0, len(text), size))


def b64_levels(url: str, levels: int) -> str:
    for level in range(levels):
        url = f"http://r{level}.example.net/go?u=" + quote(base64.b64encode(url.encode()).decode())
    return url


LISTED = {
    "imgproxy-split": "http://img.example.net/insecure/rs:fill:300:400/"
    + split(b64url(PAGE), 7)
    + ".png",
    "imgproxy-split-query": "http://img.example.net/Zx9_k2Ab/w:300/" + split(b64url(EXACT), 3),
    "thumbnail-split": "http://thumbs.example.net/th/" + split(b64url(f"http://{HOST}/a.jpg"), 16),
    "imgproxy-plain": f"http://img.example.net/insecure/plain/{EXACT}@png",
    "imgproxy-plain-escaped": "http://img.example.net/insecure/plain/"
    + quote(EXACT, safe="")
    + "@webp",
    "tracker-version": "http://www.search.example.net/ck/a?!&&p=9f3&u=a1" + b64url(PAGE) + "&ntb=1",
    "path-parameters": "http://r.search.example.net/_ylt=Awr;_ylu=X3o-/RV=2/RE=1700000000/RU="
    + quote(EXACT, safe="").lower()
    + "/RK=2/RS=Zx9-",
    "ssl-shorthand": "http://images.example.net/?url=ssl:blocked.example.com/page.html&w=300",
    "ssl-shorthand-escaped": "http://images.example.net/?url="
    + quote("ssl:exact.example.net/view?id=42", safe=""),
    "base64-three-levels": b64_levels(PAGE, 3),
    # a host in another site's path that is fetched through it
    "proxy-root": f"http://p.example.net/proxy/{HOST}/",
    "amp-root": f"http://a.example.net/c/s/{HOST}/",
    "word-then-resource": f"http://cdn.example.net/anything/{HOST}/photo.jpg",
    "user-info-host-after": f"http://r.example.net/?u=http://evil.example.net%252F@{HOST}/",
}

NEAR_MISSES = {
    "imgproxy-split-sibling": "http://img.example.net/insecure/rs:fill:300:400/"
    + split(b64url("http://blocked.example.com/page2.html"), 7)
    + ".png",
    "imgproxy-plain-other-query": "http://img.example.net/insecure/plain/"
    + quote(EXACT + "&page=2", safe="")
    + "@png",
    "path-parameters-other-query": "http://r.search.example.net/_ylt=Awr/RV=2/RU="
    + quote(EXACT + "1", safe="")
    + "/RK=2/RS=Zx9-",
    "tracker-version-sibling": "http://www.search.example.net/ck/a?u=a1"
    + b64url("http://blocked.example.com/other.html"),
    "base64-three-levels-sibling": b64_levels("http://blocked.example.com/other.html", 3),
    # pages about a listed host
    "tag-slash": f"http://blog.example.net/tag/{HOST}/",
    "tag-page-2": f"http://blog.example.net/tag/{HOST}/page/2/",
    "tag-feed": f"http://blog.example.net/tag/{HOST}/feed/",
    "website-info": f"http://stats.example.net/website/{HOST}/",
    "tag-www": f"http://blog.example.net/tag/www.{HOST}",
    # the listed host is user info once the redirector has decoded its parameter
    "user-info": f"http://r.example.net/?u=http://{HOST}%252F@evil.example.net/",
    "user-info-query": f"http://r.example.net/?u=http://{HOST}%253F@evil.example.net/",
    "user-info-encoded": "http://r.example.net/?u="
    + quote(f"http://{HOST}%2F@evil.example.net/x.html", safe=""),
}


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy], world: World) -> Proxy:
    return proxy_with_entries(
        "wrappers", EXACT, routes={"exact.example.net:80": world.listed_http.port}
    )


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_wrapped_listed_url_is_blocked_before_any_connection(
    proxy: Proxy, world: World, url: str
) -> None:
    assert_blocked(proxy, world, url)


@pytest.mark.parametrize("url", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_miss_reaches_its_origin(proxy: Proxy, url: str) -> None:
    response = proxy.get(url)
    assert response.status == 200, response.text
    assert response.headers["X-Origin"]


@pytest.fixture(scope="module")
def library() -> Blocklist:
    return Blocklist.from_entries([*feed_entries(SAMPLE_FEED), EXACT])


@pytest.mark.parametrize("url", LISTED.values(), ids=LISTED.keys())
def test_library_blocks_it_too(library: Blocklist, url: str) -> None:
    assert library.match(url) is not None


@pytest.mark.parametrize("url", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_library_passes_it_too(library: Blocklist, url: str) -> None:
    assert library.match(url) is None
