"""The page guard's mitmproxy hooks (``guards.pages.PageScanner``) on one buffered response:
the body read as mitmproxy's ``get_content`` decodes it (without its header lookups), a
listed link neutralized whatever the Content-Encoding and the charset, the body encoded
back in its coding with a Content-Length that is right, and a page with nothing listed
going out exactly as it came: the same bytes object, not decoded into it nor re-encoded,
its headers untouched."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from mitmproxy import http
from mitmproxy.net import encoding
from mitmproxy.test import taddons, tflow

from blocklist_addon import Blocklist
from blocklist_addon.guards.pages import SPLASH_PATH, PageScanner
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.ops.metrics import Metrics

LISTED = "http://blocked.example.com/page.html"
CAFE = "http://blocked.example.com/caf\u00e9.html"  # listed; written &eacute; in the pages
SPLASH = f"http://site.example.org{SPLASH_PATH}?list=default"
BLOCKED = "about:invalid#blocked"

CODINGS = {
    None: lambda body: body,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
}
# (Content-Type, text, how the text is written): a listed link found only when the charset
# is read right (caf&eacute; is caf\u00e9 in windows-1252, &eacute; in any charset).
CHARSETS = [
    ("text/html; charset=utf-8", "utf-8"),
    ("text/html; charset=windows-1252", "windows-1252"),
    ("text/html", "utf-16"),  # its byte order mark says so
    ("application/xhtml+xml; charset=utf-8", "utf-8"),
]


def page(links: list[str], charset: str, resources: list[str] | None = None) -> bytes:
    """Each link twice: as a link (a) and as a resource (img, ``resources`` when given)."""
    text = "<p>caf\u00e9 \u00ff</p>" + "".join(
        f'<a href="{u}">x</a><img src="{r}">'
        for u, r in zip(links, resources or links, strict=True)
    )
    return text.encode(charset)


def scanner() -> tuple[PageScanner, Metrics]:
    metrics = Metrics()
    lists = ActiveList(metrics)
    lists.blocklist = Blocklist.from_entries([LISTED, CAFE])
    blocklog = BlockLog()
    return PageScanner(lists, metrics, blocklog, Enforcer(lists, metrics, blocklog)), metrics


def served(raw: bytes, headers: list[tuple[bytes, bytes]]) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.url = "http://site.example.org/dir/index.html"
    flow.response = http.Response.make(200)
    flow.response.headers = http.Headers([*headers, (b"Content-Length", b"%d" % len(raw))])
    flow.response.raw_content = raw
    return flow


def through(guard: PageScanner, flow: http.HTTPFlow) -> None:
    with taddons.context(guard, guard.blocklog):
        guard.responseheaders(flow)
        assert not flow.response.stream  # a known length within the limit: buffered
        assert guard.response(flow) is None  # small: scanned on the event loop


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize(("content_type", "charset"), CHARSETS)
def test_a_listed_link_is_neutralized_in_every_coding_and_charset(
    coding: str | None, content_type: str, charset: str
) -> None:
    guard, metrics = scanner()
    links = [
        "http://site.example.org/ok.html",
        LISTED,
        "http://blocked.example.com/caf&eacute;.html",
    ]
    raw = CODINGS[coding](page(links, charset))
    headers = [(b"Content-Type", content_type.encode())]
    if coding:
        headers.append((b"Content-Encoding", coding.encode()))
    flow = served(raw, headers)
    through(guard, flow)
    response = flow.response
    assert response.headers.get("content-encoding") == coding
    assert response.headers["content-length"] == str(len(response.raw_content))
    body = encoding.decode(response.raw_content, coding) if coding else response.raw_content
    # caf&eacute; is caf\u00e9 in windows-1252 and UTF-16 pages, not in UTF-8 ones
    cafe_listed = charset != "utf-8"
    cafe = [SPLASH, BLOCKED] if cafe_listed else [links[2], links[2]]
    assert body == page([links[0], SPLASH, cafe[0]], charset, [links[0], BLOCKED, cafe[1]])
    listed = 4 if cafe_listed else 2
    assert (
        sum(
            metrics.value("blocklist_links_total", list="default", kind=kind, action="neutralize")
            for kind in ("navigate", "resource")
        )
        == listed
    )


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize(("content_type", "charset"), CHARSETS)
def test_a_page_with_nothing_listed_goes_out_as_it_came(
    coding: str | None, content_type: str, charset: str
) -> None:
    guard, metrics = scanner()
    raw = CODINGS[coding](page(["http://site.example.org/ok.html", "/caf\u00e9.html"], charset))
    headers = [(b"Content-Type", content_type.encode())]
    if coding:
        headers.append((b"Content-Encoding", coding.encode()))
    flow = served(raw, headers)
    fields = list(flow.response.headers.fields)
    through(guard, flow)
    assert flow.response.raw_content is raw  # neither decoded into place nor encoded again
    assert list(flow.response.headers.fields) == fields
    assert metrics.value("blocklist_pages_scanned_total") == 1


def test_the_fields_of_a_header_given_twice_are_read_together() -> None:
    """As mitmproxy's headers.get reads them: the charset in a second Content-Type field
    counts (the link is listed in windows-1252 only), and two Content-Encoding fields are
    one coding it does not know: the body is not scanned, and is counted so."""
    guard, metrics = scanner()
    body = page(["http://blocked.example.com/caf&eacute;.html"], "windows-1252")
    flow = served(body, [(b"Content-Type", b"text/html"), (b"content-type", b"charset=cp1252")])
    through(guard, flow)
    assert b"caf&eacute;" not in flow.response.raw_content
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content))

    raw = brotli.compress(gzip.compress(page([LISTED], "utf-8")))
    flow = served(
        raw,
        [
            (b"Content-Type", b"text/html"),
            (b"Content-Encoding", b"gzip"),
            (b"Content-Encoding", b"br"),
        ],
    )
    through(guard, flow)
    assert flow.response.raw_content is raw
    assert metrics.value("blocklist_pages_unscanned_total", reason="undecodable") == 1


@pytest.mark.parametrize(
    ("coding", "raw"),
    [("gzip", b"not gzip at all"), ("utf8", page([LISTED], "utf-8")), ("x-unknown", b"<a>")],
)
def test_a_body_that_does_not_decode_is_counted_and_passed_as_it_came(
    coding: str, raw: bytes
) -> None:
    """As before the hook read the body itself (Message.get_content would raise): a text
    codec named as a Content-Encoding is not a content coding either."""
    guard, metrics = scanner()
    flow = served(raw, [(b"Content-Type", b"text/html"), (b"Content-Encoding", coding.encode())])
    through(guard, flow)
    assert flow.response.raw_content is raw
    assert metrics.value("blocklist_pages_unscanned_total", reason="undecodable") == 1
    assert metrics.value("blocklist_pages_scanned_total") == 0


def test_other_types_are_not_read() -> None:
    guard, metrics = scanner()
    raw = page([LISTED], "utf-8")
    flow = served(raw, [(b"Content-Type", b"text/plain")])
    through(guard, flow)
    assert flow.response.raw_content is raw
    assert metrics.value("blocklist_pages_scanned_total") == 0
