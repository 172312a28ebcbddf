"""A hard bound on what one request may cost the URL check (issue 21, item 4).

The check is linear in the URL, but a URL has no length limit in HTTP: a client could send
megabytes of hostile shapes and hold the proxy's event loop for each. A URL longer than
``blocklist_max_url_length`` (64 KiB by default; servers refuse far less, nginx and Apache at
8 KiB) is therefore refused with 414 and never forwarded, whether or not a listed URL hides
in it; anything shorter is checked whole, a listed URL at its very end included.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons, tflow

from blocklist_addon.guards.urls import DEFAULT_MAX_URL_LENGTH, Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.ops.metrics import Metrics
from testlab.harness import Proxy, World, assert_splash

LISTED_TAIL = "&u=http://blocked.example.com/page.html"
PADDING = "pad-"  # no marker: nothing in it starts an embedded candidate


def url_of(length: int, tail: str) -> str:
    """A redirector URL of exactly ``length`` characters ending in ``tail``."""
    head = "http://r.example.net/?pad="
    return head + (PADDING * length)[: length - len(head) - len(tail)] + tail


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy]) -> Proxy:
    return proxy_with_entries("long-urls")


@pytest.mark.parametrize("tail", [LISTED_TAIL, ""], ids=["listed-at-the-end", "unlisted"])
@pytest.mark.parametrize("length", [DEFAULT_MAX_URL_LENGTH + 1, 1_000_000])
def test_a_url_past_the_limit_is_refused_and_never_forwarded(
    proxy: Proxy, world: World, length: int, tail: str
) -> None:
    url = url_of(length, tail)
    assert len(url) == length
    before, refused = world.connections(), proxy.metric("blocklist_too_long_total")
    response = proxy.get(url)
    assert response.status == 414, response.text
    assert "longer than" in response.text
    assert world.connections() == before
    assert proxy.metric("blocklist_too_long_total") == refused + 1
    assert PADDING * 8 not in proxy.log()  # the URL is never logged


def test_a_url_at_the_limit_is_checked_whole(proxy: Proxy, world: World) -> None:
    """A listed URL at the end of the longest URL checked is still found, and an unlisted
    one of that length is forwarded as any other."""
    before = world.connections()
    assert_splash(proxy.get(url_of(DEFAULT_MAX_URL_LENGTH, LISTED_TAIL)), page=False)
    assert world.connections() == before
    proxy.get(url_of(DEFAULT_MAX_URL_LENGTH, ""))
    assert world.connections() == before + 1


def test_a_long_host_header_is_refused_as_well(proxy: Proxy, world: World) -> None:
    """The URL by Host header is bounded as the request target is: a short target with a
    Host header past the limit is not checked by a prefix but refused."""
    before = world.connections()
    host = "a." * (DEFAULT_MAX_URL_LENGTH // 2) + "blocked.example.com"
    response = proxy.raw(
        b"GET http://open.example.net/ HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 414 "), response[:200]
    assert world.connections() == before


@pytest.mark.parametrize("value", [0, 1023])
def test_the_limit_is_validated_at_start(value: int) -> None:
    enforcer = Enforcer(ActiveList(Metrics()), Metrics(), BlockLog())
    with taddons.context(enforcer) as context, pytest.raises(OptionsError, match="at least 1024"):
        context.configure(enforcer, blocklist_max_url_length=value)


def test_the_limit_applies_to_the_flow_in_the_addon() -> None:
    """The bound is read in configure and applied before any lookup: a flow past it is
    answered 414 even with no list to look in."""
    enforcer = Enforcer(ActiveList(Metrics()), Metrics(), BlockLog())
    with taddons.context(enforcer) as context:
        context.configure(enforcer, blocklist_max_url_length=2048)
        flow = tflow.tflow()
        flow.request.path = "/" + "a" * 4096
        enforcer.requestheaders(flow)
        assert flow.response is not None and flow.response.status_code == 414
