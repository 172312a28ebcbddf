"""Listed links in HTML and CSS (blocklist_addon/content/pages.py): every tag and form a browser
fetches or follows, every spelling the matcher knows, nothing else touched, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist
from blocklist_addon.content import pages
from blocklist_addon.content.pages import BLOCKED_RESOURCE, charset_of, find_links, neutralize
from blocklist_addon.urls.matcher import Entry

BL = Blocklist.from_entries(
    [
        "http://blocked.example.com/page.html",
        "http://blocked.example.com/gallery/",
        "whole-site.blocked.test/",
        "http://192.0.2.44/img/photo.jpg",
    ]
)
PAGE = "http://site.example.org/dir/index.html"
SPLASH = "http://site.example.org/.well-known/blocklist-proxy/blocked?list=default"
LISTED = "http://blocked.example.com/page.html"


def run(body: bytes, content_type: str = "text/html") -> tuple[bytes, int]:
    out, found = neutralize(body, content_type, PAGE, BL.match, lambda m: SPLASH)
    return out, len(found)


# Each: markup with {u} where the URL goes, and what a listed URL there becomes.
NAVIGATE = [
    '<a href="{u}">x</a>',
    "<a href='{u}'>x</a>",
    "<a href={u}>x</a>",
    '<A HREF = "{u}" class=x>x</A>',
    '<area shape=rect href="{u}">',
    '<iframe src="{u}"></iframe>',
    '<frame src="{u}">',
    '<form action="{u}" method=post></form>',
    '<button formaction="{u}">go</button>',
    '<input type=submit formaction="{u}">',
    '<meta http-equiv="refresh" content="0; url={u}">',
    "<meta http-equiv=Refresh content=\"5;URL='{u}'\">",
]
RESOURCE = [
    '<img src="{u}">',
    '<img alt="" srcset="{u} 2x">',
    '<img srcset="ok.jpg 1x, {u} 2x">',
    '<script src="{u}"></script>',
    '<link rel=stylesheet href="{u}">',
    '<picture><source srcset="{u}"></picture>',
    '<video src="{u}"></video>',
    '<video poster="{u}"></video>',
    '<audio src="{u}"></audio>',
    '<video><track src="{u}"></video>',
    '<embed src="{u}">',
    '<object data="{u}"></object>',
    '<input type=image src="{u}">',
    '<div style="background: url({u})">x</div>',
    "<div style=\"background: url('{u}')\">x</div>",
    '<style>body {{ background: url("{u}") }}</style>',
    '<style>@import "{u}";</style>',
    "<style>@import url({u});</style>",
]

SPELLINGS = [
    "http://blocked.example.com/page.html",
    "HTTP://BLOCKED.EXAMPLE.COM./page.html",
    "http://blocked.example.com:80/./page.html?x=1",
    "//blocked.example.com/page.html",
    "http://www.blocked.example.com/gallery/a/b.jpg",
    "http://3221226028/img/photo.jpg",
    "http://blocked.example.com/%70age.html",
    "https://sub.whole-site.blocked.test/",
    "http://r.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html",
]


@pytest.mark.parametrize("markup", NAVIGATE)
def test_links_and_frames_point_to_the_splash_page(markup: str) -> None:
    out, found = run(markup.format(u=LISTED).encode())
    assert found == 1
    assert out == markup.format(u=SPLASH).encode()


@pytest.mark.parametrize("markup", RESOURCE)
def test_resources_become_unfetchable(markup: str) -> None:
    out, found = run(markup.format(u=LISTED).encode())
    assert found == 1
    assert out == markup.format(u=BLOCKED_RESOURCE).encode()


@pytest.mark.parametrize("markup", NAVIGATE + RESOURCE)
def test_unlisted_links_are_left_alone(markup: str) -> None:
    body = markup.format(u="http://blocked.example.com/other.html").encode()
    assert run(body) == (body, 0)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_a_listed_url(spelling: str) -> None:
    out, found = run(f'<p>a</p><a href="{spelling}">x</a><p>b</p>'.encode())
    assert found == 1
    assert out == f'<p>a</p><a href="{SPLASH}">x</a><p>b</p>'.encode()


def test_relative_links_resolve_against_the_page_and_base_href() -> None:
    bl = Blocklist.from_entries(
        [
            Entry("http://blocked.example.com/page.html", id="page"),
            Entry("http://blocked.example.com/gallery/", id="gallery"),
        ]
    )
    page = "http://blocked.example.com/gallery/index.html"
    out, found = neutralize(b'<a href="photo.html">p</a>', "text/html", page, bl.match, str)
    resolved = [(link.url, match.entry_id) for link, match in found]
    assert resolved == [("http://blocked.example.com/gallery/photo.html", "gallery")]
    body = b'<base href="http://blocked.example.com/"><a href="page.html">p</a><a href=x.html>q</a>'
    out, found = neutralize(body, "text/html", PAGE, bl.match, lambda m: SPLASH)
    resolved = [(link.url, match.entry_id) for link, match in found]
    assert resolved == [("http://blocked.example.com/page.html", "page")]
    assert out.endswith(b"<a href=x.html>q</a>")


def test_character_references_in_urls_are_decoded() -> None:
    body = b'<a href="h&#116;tp://blocked.example.com/page&#46;html">x</a>'
    assert run(body)[1] == 1
    styled = b'<i style="background:url(&quot;http://blocked.example.com/page.html&quot;)">x</i>'
    out, found = run(styled)
    assert found == 1
    assert b"page.html" not in out


def test_css_escapes_and_css_files() -> None:
    css = b"a { background: url(http://blocked.example.com/p\\61 ge.html) }\n.b { color: red }\n"
    out, found = run(css, "text/css")
    assert found == 1
    assert out == b"a { background: url(" + BLOCKED_RESOURCE.encode() + b") }\n.b { color: red }\n"


@pytest.mark.parametrize(
    "body",
    [
        b'<!-- <a href="http://blocked.example.com/page.html"> -->',
        b"<script>var s = \"<a href='http://blocked.example.com/page.html'>\";</script>",
        b'<textarea><a href="http://blocked.example.com/page.html"></textarea>',
        b"<title>http://blocked.example.com/page.html</title>",
        b"<p>http://blocked.example.com/page.html as text</p>",
        b'<a title="http://blocked.example.com/page.html">x</a>',
    ],
)
def test_what_a_browser_neither_fetches_nor_follows_is_left_alone(body: bytes) -> None:
    assert run(body) == (body, 0)


def test_the_rest_of_the_page_is_untouched_byte_for_byte() -> None:
    before = "<p>caf\u00e9 \u2603 \u00ff</p>".encode()
    after = b"\n<p>\xff\xfe invalid utf-8 \x00</p>"
    body = before + f'<img src="{LISTED}">'.encode() + after
    out, found = run(body, "text/html; charset=utf-8")
    assert found == 1
    assert out == before + f'<img src="{BLOCKED_RESOURCE}">'.encode() + after


def test_charsets() -> None:
    assert charset_of("text/html; charset=ISO-8859-1", b"") == "iso8859-1"
    assert charset_of(None, b'<meta charset="windows-1252">') == "cp1252"
    assert charset_of(None, b"\xef\xbb\xbf<p>") == "utf-8"
    assert charset_of("text/css", b'@charset "koi8-r";', css=True) == "koi8-r"
    assert charset_of("text/html; charset=bogus", b"") == "utf-8"
    # UTF-16 is not ASCII-compatible: decoded, scanned and encoded back.
    body = f'<p>\u00e9</p><a href="{LISTED}">x</a>'.encode("utf-16-le")
    out, found = run(b"\xff\xfe" + body, "text/html")
    assert found == 1
    assert out.decode("utf-16") == f'<p>\u00e9</p><a href="{SPLASH}">x</a>'


def test_an_unterminated_tag_or_comment_ends_the_scan_but_not_early() -> None:
    body = f'<a x=\'unterminated <a href="{LISTED}">y</a>'.encode()
    assert run(body)[1] == 1  # the scanner sees more than a browser would, never less
    assert run(b"<!-- never closed <a href=" + LISTED.encode() + b">")[1] == 0
    assert run(b'<a href="' + LISTED.encode())[1] == 0  # the value never ends


def test_a_big_page_of_tags_is_linear() -> None:
    body = b"<b>x</b>" * 100_000 + f'<a href="{LISTED}">'.encode()
    assert run(body)[1] == 1
    assert len(list(find_links("<a href=x " * 50_000, PAGE))) == 1  # one tag, many attributes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_and_changes_nothing_unlisted(body: bytes) -> None:
    out, found = run(body)
    if not found:
        assert out == body


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(NAVIGATE + RESOURCE), min_size=1, max_size=6),
    st.sampled_from(SPELLINGS),
    st.text(alphabet="abc <>\"'=/-!", max_size=30),
)
def test_listed_links_are_found_among_others(markups: list[str], url: str, noise: str) -> None:
    noise = noise.replace("<", "")  # plain text between tags
    body = "".join(f"<p>{noise}</p>" + m.format(u=url) for m in markups).encode()
    out, found = run(body)
    assert found == len(markups)
    assert run(out)[1] == 0  # neutralized once is neutralized for good


@pytest.mark.parametrize("base", ["http://[bad/x", "http://[::1/", "//[x", "", "#top"])
def test_a_base_href_that_does_not_parse_falls_back_to_the_page_url(base: str) -> None:
    """A browser takes a base URL that does not parse as the document's own (WHATWG
    "fallback base URL"); the scan did not parse it either and raised, so the page went out
    unscanned under blocklist_on_error=pass (a way round the scan) or as a 502."""
    page = "http://blocked.example.com/gallery/index.html"
    bl = Blocklist.from_entries([Entry("http://blocked.example.com/gallery/", id="gallery")])
    body = f'<base href="{base}"><a href="photo.html">p</a><a href="/gallery/x">q</a>'.encode()
    for scan in (neutralize, lambda *a: pages._neutralize(*a, fast=False)):
        out, found = scan(body, "text/html", page, bl.match, lambda m: SPLASH)
        assert [link.url for link, _ in found] == [
            "http://blocked.example.com/gallery/photo.html",
            "http://blocked.example.com/gallery/x",
        ]
        links = f'<a href="{SPLASH}">p</a><a href="{SPLASH}">q</a>'
        assert out == f'<base href="{base}">{links}'.encode()
