"""The fast page scan (``content.scan``, which ``neutralize`` runs) against the reference
(``content.links.find_links``, then the matcher for every link found, as the scanner worked
before it was made fast): the same bytes out and the same links reported, on generated pages,
so that a speed change cannot change a result. Also what the fast scan remembers between
pages (``content.verdicts``): never across lists, and bounded."""

from __future__ import annotations

import base64
import html
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist
from blocklist_addon.content import pages
from blocklist_addon.content import scan as fast_scan
from blocklist_addon.content.links import NEXT_TAG, resolve
from blocklist_addon.content.verdicts import VERDICT_URL_CHARS, VERDICTS_KEPT
from blocklist_addon.urls.matcher import Entry, Match
from blocklist_addon.urls.snapshot import Snapshot, expression_digest

LISTED = [
    Entry("http://listed.example.com/page.html", id="page"),
    Entry("http://listed.example.com/dir/", id="dir"),
    Entry("whole.listed.test/", id="whole"),
    Entry("http://192.0.2.44/img/a.jpg", id="ip"),
    Entry("q.example.net/view.php?id=42", id="query"),
    Entry("http://listed-host.test/x.html", id="translated"),
    Entry("http://listed.example.com/caf\u00e9.html", id="cafe"),
]
BL = Blocklist.from_entries(LISTED)
# Entries known only by digest (a sha256 feed): no host index, every URL goes to the matcher.
HOSTLESS = Blocklist(
    Snapshot.build(
        [
            (expression_digest("listed.example.com/page.html"), None, "hashed", "h1"),
            (expression_digest("whole.listed.test/"), None, "hashed", "h2"),
        ]
    )
)
SPLASH = "http://site.example.org/.well-known/blocklist-proxy/blocked?list=x"

TARGET = "http://listed.example.com/page.html"
URLS = [
    TARGET,
    "HTTP://LISTED.EXAMPLE.COM./page.html",
    "http://listed.example.com:80/./page.html?x=1",
    "//listed.example.com/page.html",
    "http://www.listed.example.com/dir/a/b.jpg",
    "http://listed.example.com/other.html",  # unlisted page on a listed host
    "http://listed.example.com/%70age.html",
    "https://sub.whole.listed.test/",
    "https://whole.listed.test",
    "http://3221226028/img/a.jpg",
    "http://192.0.2.44/img/a.jpg",
    "http://192.0.2.45/img/a.jpg",
    "http://q.example.net/view.php?id=42",
    "http://q.example.net/view.php?id=43",
    "https://listed--host-test.translate.goog/x.html?_x_tr_sl=auto",
    "https://other.translate.goog/x.html",
    "http://r.example.net/?u=" + quote(TARGET, safe=""),
    "http://r.example.net/go?u=" + base64.b64encode(TARGET.encode()).decode(),
    "https://cdn.example.net/c/s/listed.example.com/page.html",
    "https://cdn.example.net/c/s/listed\u3002example\u3002com/page.html",
    "http://archive.example.org/web/2020/" + TARGET,
    "http://r.example.net/?u=http://listed.example.com%252F@evil.example/",
    "http://user@listed.example.com/page.html",
    "http://a..listed.example.com/page.html",
    "h&#116;tp://listed.example.com/page&#46;html",
    "http://listed.example.com/page.html?a=1&amp;b=2",
    "http://site.example.org/a.html?x=1&amp;y=2",
    "http://www.site.example.org/articles/4/story.html?ref=home&p=4",
    "https://cdn.example.net/static/js/app.min.js?v=1.2.3",
    "http://search.example.com/search?q=hello%20world&lang=en",
    "https://img.example.org/photos/3.jpg",
    "http://caf\u00e9.example.org/x.html",
    "http://listed.example.com/caf\u00e9.html",
    "http://listed.example.com/caf&eacute;.html",  # listed in a windows-1252 page only
    "page.html",
    "../dir/x.jpg",
    "/dir/",
    "/page.html",
    "?id=42",
    "#top",
    "",
    " ",
    "data:text/html,<b>x</b>",
    "javascript:void(0)",
    "mailto:a@example.com",
    "http://[2001:db8::1]/x",
    "http://[::ffff:192.0.2.44]/img/a.jpg",
    "http://[bad/x",
    "https:listed.example.com/page.html",
    "\\\\listed.example.com\\page.html",
    "http://listed.example.com\\page.html",
]
NAVIGATE_OR_RESOURCE = [
    '<a href="{u}">x</a>',
    "<a href='{u}'>x</a>",
    "<a href={u}>x</a>",
    '<A HREF = "{u}" class=x>x</A>',
    '<a href href="{u}">x</a>',  # a first href without a value
    '<a href="{u}" href="http://listed.example.com/page.html">x</a>',  # the first counts
    '<area shape=rect href="{u}">',
    '<iframe src="{u}"></iframe>',
    '<form action="{u}" method=post></form>',
    '<button formaction="{u}">go</button>',
    '<meta http-equiv="refresh" content="0; url={u}">',
    "<meta content=\"5;URL='{u}'\" http-equiv=Refresh>",
    "<meta http-equiv=refresh>",
    '<img src="{u}" srcset="{u} 1x, {u},, 2x">',
    '<img srcset="{u}">',
    '<img srcset="{u},">',
    '<script src="{u}"></script>',
    '<link rel=stylesheet href="{u}">',
    '<video src="{u}" poster="{u}"></video>',
    '<object data="{u}"></object>',
    '<input type=image src="{u}" formaction="{u}">',
    '<div style="background: url({u})">x</div>',
    "<div style=\"background: url('{u}'); border-image: url({u})\">x</div>",
    '<p style="a:url(&quot;{u}&quot;)">x</p>',
    '<style>body {{ background: url("{u}") }} @import "{u}";</style>',
    "<style>@import url({u});</style>",
    "<base href='{u}'>",
    "<!-- {u} --><a href='{u}'>",
    "<script>var s = \"<a href='{u}'>\";</script>",
    "<textarea><a href='{u}'></textarea>",
    "<title>{u}</title>",
    "<p title='<a href={u}>'>x</p>",
    '<a x=\'unterminated <a href="{u}">y</a>',
]
CSS = [
    "a {{ background: url({u}) }}\n",
    'b {{ background: url("{u}") }} @import "{u}";\n',
    "c {{ background: url(http://listed.example.com/p\\61 ge.html) }} d {{ x: url('{u}') }}\n",
]
NOISE = st.text(alphabet="ab <>\"'=/&;#-!\u00e9\n", max_size=12)
PAGE_URLS = [
    "http://site.example.org/dir/index.html",
    "http://listed.example.com/dir/index.html",
    "https://listed--host-test.translate.goog/index.html",
]
CONTENT_TYPES = [
    "text/html",
    "text/html; charset=utf-8",
    "text/html; charset=windows-1252",
    "application/xhtml+xml",
]


@st.composite
def html_pages(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        parts.append(draw(NOISE))
        template = draw(st.sampled_from(NAVIGATE_OR_RESOURCE))
        parts.append(template.format(u=draw(st.sampled_from(URLS))))
    parts.append(draw(NOISE))
    text = "".join(parts)
    charset = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    if charset == "utf-16":
        return b"\xff\xfe" + text.encode("utf-16-le")
    return text.encode(charset, "replace")


def kept_for(check) -> pages.Kept | None:
    """The verdicts the scans of one list keep from page to page, as the page guard keeps
    them (one ``Kept`` a list, for the whole test session); none for any other check."""
    for blocklist in (BL, HOSTLESS):
        if check == blocklist.match:
            return KEPT.setdefault(id(blocklist), pages.Verdicts().of(blocklist))
    return None


KEPT: dict[int, pages.Kept] = {}


def both(
    body: bytes, content_type: str, page_url: str, check
) -> tuple[tuple[bytes, list], tuple[bytes, list]]:
    splash = lambda match: f"{SPLASH}&id={match.entry_id}"  # noqa: E731
    kept = kept_for(check)
    fast = pages._neutralize(body, content_type, page_url, check, splash, fast=True, kept=kept)
    reference = pages._neutralize(body, content_type, page_url, check, splash, fast=False)
    return fast, reference


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_pages(), st.sampled_from(CONTENT_TYPES), st.sampled_from(PAGE_URLS))
def test_the_fast_scan_finds_exactly_what_the_reference_finds(
    body: bytes, content_type: str, page_url: str
) -> None:
    for check in (BL.match, HOSTLESS.match, lambda url: BL.match(url)):
        fast, reference = both(body, content_type, page_url, check)
        assert fast == reference
        # and again, with the verdicts of the first pass remembered
        assert both(body, content_type, page_url, check)[0] == reference


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_pages(), st.permutations(CONTENT_TYPES), st.sampled_from(PAGE_URLS))
def test_what_is_kept_from_a_page_is_right_for_the_next(
    body: bytes, content_types: list[str], page_url: str
) -> None:
    """The same links on pages of other charsets and other URLs, one after the other."""
    for content_type in content_types:
        fast, reference = both(body, content_type, page_url, BL.match)
        assert fast == reference
        fast, reference = both(body, content_type, PAGE_URLS[0], BL.match)
        assert fast == reference


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(CSS), st.sampled_from(URLS)), min_size=1, max_size=5),
    NOISE,
)
def test_css_files_the_same(rules: list[tuple[str, str]], noise: str) -> None:
    body = (noise + "".join(rule.format(u=url) for rule, url in rules)).encode()
    for check in (BL.match, HOSTLESS.match):
        fast, reference = both(body, "text/css", PAGE_URLS[0], check)
        assert fast == reference


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(URLS), st.sampled_from(NAVIGATE_OR_RESOURCE))
def test_arbitrary_bytes_around_a_link_the_same(noise: bytes, url: str, template: str) -> None:
    body = noise[:300] + template.format(u=url).encode("utf-8", "replace") + noise[300:]
    for content_type in ("text/html", "text/css"):
        fast, reference = both(body, content_type, PAGE_URLS[1], BL.match)
        assert fast == reference


def test_the_generated_pages_do_hold_listed_links() -> None:
    """(The comparison above means little if nothing in the pool is listed.)"""
    listed = [url for url in URLS if BL.match(resolve(PAGE_URLS[0], url) or "#")]
    assert len(listed) == 25  # and the character references of one, decoded in a page
    body = "".join(f'<a href="{url}">' for url in URLS).encode()
    fast, reference = both(body, "text/html", PAGE_URLS[0], BL.match)
    assert [found.url for found, _ in fast[1]] == [found.url for found, _ in reference[1]]
    assert [match.entry_id for _, match in fast[1]] == [
        "page", "page", "page", "page", "dir", "page", "whole", "whole", "ip", "ip",
        "query", "translated", "page", "page", "page", "page", "page", "page", "page", "page",
        "page", "cafe", "ip", "page", "page", "page",
    ]  # fmt: skip


def test_a_url_is_checked_once_a_page() -> None:
    calls: list[str] = []

    def check(url: str) -> Match | None:
        calls.append(url)
        return BL.match(url)

    link = '<a href="http://site.example.org/a.html">a</a><img src="/a.html" srcset="/a.html 2x">'
    body = (link * 50 + f'<a href="{TARGET}">' * 3).encode()
    out, found = pages.neutralize(body, "text/html", PAGE_URLS[0], check, lambda m: SPLASH)
    assert calls == ["http://site.example.org/a.html", TARGET]
    assert [f.url for f, _ in found] == [TARGET] * 3
    assert out == (link * 50 + f'<a href="{SPLASH}">' * 3).encode()


def test_verdicts_are_never_carried_to_another_list() -> None:
    url = "http://later.example.net/page.html"
    body = f'<a href="{url}">x</a>'.encode()
    first = Blocklist.from_entries(["http://listed.example.com/page.html"])
    second = Blocklist.from_entries([url])
    verdicts = pages.Verdicts()

    def scan(blocklist: Blocklist) -> tuple[bytes, list]:
        kept = verdicts.of(blocklist)
        return pages.neutralize(body, "text/html", PAGE_URLS[0], blocklist.match, str, kept)

    assert scan(first) == (body, [])
    assert verdicts.of(first).urls == {url: None}
    _, found = scan(second)
    assert [(f.url, m.list_name) for f, m in found] == [(url, "default")]
    assert scan(first) == (body, [])
    assert verdicts.of(first) is verdicts.of(first)


def test_what_is_remembered_is_bounded() -> None:
    many = "".join(
        f'<a href="http://h{i}.example.org/{"x" * (i % 3) * 700}">'
        for i in range(VERDICTS_KEPT + 10)
    )
    kept = pages.Verdicts().of(BL)
    pages.neutralize(many.encode(), "text/html", PAGE_URLS[0], BL.match, str, kept)
    verdicts, links = kept.urls, kept.links
    assert 0 < len(verdicts) <= VERDICTS_KEPT
    assert max(map(len, verdicts)) <= VERDICT_URL_CHARS
    assert 0 < len(links) <= VERDICTS_KEPT
    assert max(map(len, links)) <= VERDICT_URL_CHARS
    assert 0 < len(kept.tags) <= VERDICTS_KEPT
    assert max(map(len, kept.tags)) <= VERDICT_URL_CHARS


RELATIVE = [url for url in URLS if resolve("http://a.test/", url) != url.strip()]


@pytest.mark.parametrize("template", NAVIGATE_OR_RESOURCE)
def test_a_tag_is_remembered_only_when_its_links_are_the_same_on_every_page(
    template: str,
) -> None:
    """A tag seen unlisted on one page is not read again on the next (``Kept.tags``) only
    when every URL in it is absolute (and ASCII): the same tag with a relative link, a
    style or a refresh, on a page where it resolves to a listed URL, is still found."""
    for url in [*RELATIVE, "http://site.example.org/x.html", TARGET]:
        body = ("<p>" + template.format(u=url) + "</p>").encode()
        kept = pages.Verdicts().of(BL)
        splash = lambda match: f"{SPLASH}&id={match.entry_id}"  # noqa: E731
        for page_url in [PAGE_URLS[0], PAGE_URLS[1], PAGE_URLS[0], PAGE_URLS[1]]:
            for content_type in ["text/html", "text/html; charset=windows-1252"]:
                fast = pages.neutralize(body, content_type, page_url, BL.match, splash, kept)
                reference = pages._neutralize(
                    body, content_type, page_url, BL.match, splash, fast=False
                )
                assert fast == reference, (url, page_url, content_type)


def test_what_tags_are_remembered() -> None:
    kept = pages.Verdicts().of(BL)
    body = (
        '<a href="http://site.example.org/a.html">'  # remembered
        '<img alt="" src="https://img.example.org/photos/3.jpg" srcset="http://x.test/b 2x">'
        '<a href="page.html">'  # relative: resolved on each page
        f'<a href="{TARGET}">'  # listed
        '<a href="http://listed.example.com/caf&eacute;.html">'  # not ASCII, once read
        '<div style="background: url(http://site.example.org/x.png)">'
        '<meta http-equiv="refresh" content="0; url=http://site.example.org/">'
        '<img srcset="http://x.test/b 1x, /c 2x">'
        "<script async></script>"  # no value: nothing to read, no link
    ).encode()
    pages.neutralize(body, "text/html", PAGE_URLS[0], BL.match, str, kept)
    assert kept.tags == {
        'a href="http://site.example.org/a.html"',
        'img alt="" src="https://img.example.org/photos/3.jpg" srcset="http://x.test/b 2x"',
        "script async",
    }


def test_a_tag_remembered_is_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    attributes = fast_scan.ATTRIBUTE_TEXTS

    class Counting:
        @staticmethod
        def findall(text: str, start: int, end: int) -> list:
            read.append(text[start:end])
            return attributes.findall(text, start, end)

    monkeypatch.setattr(fast_scan, "ATTRIBUTE_TEXTS", Counting)
    kept = pages.Verdicts().of(BL)
    body = b'<a href="http://site.example.org/a.html">x</a><a href="page.html">y</a>'
    for _ in range(3):
        assert pages.neutralize(body, "text/html", PAGE_URLS[0], BL.match, str, kept) == (
            body,
            [],
        )
    assert (
        read
        == [' href="http://site.example.org/a.html"', ' href="page.html"']
        + [' href="page.html"'] * 2
    )


# Text of one byte a character, with what decides a token: tags (wanted or not, any case),
# attributes with and without style, comments, end tags, and bytes >= 0x80.
TOKENIZER_TEXT = st.lists(
    st.sampled_from(
        [
            *("<", ">", "/", "!", "?", "-", "=", " ", '"', "'", "\t", "a", "p", "S"),
            *("\xe9", "\xff", "\xb5", "<a ", "<IMG ", "<Style>", "<script>", "</script>"),
            *("<!--", "-->", "<meta", "style=", "<xmp>", "<noFrames>", "<textarea", "<title>"),
            *("<b ", "href=", "<aside ", "STYLE=", "Style ="),
        ]
    ),
    max_size=40,
).map("".join)


def tokens(pattern, text: str) -> list[tuple[tuple[int, int], ...]]:
    out, pos = [], 0
    while (tag := pattern.match(text, pos)) is not None:
        out.append((tag.span(), tag.span(1), tag.span(2)))
        pos = tag.end()
    return out


@settings(max_examples=1000, deadline=None)
@given(TOKENIZER_TEXT)
def test_the_latin1_tokenizer_reads_tags_as_the_case_folding_one(text: str) -> None:
    assert tokens(fast_scan._NEXT_TAG_LATIN1, text) == tokens(NEXT_TAG, text)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["&", ";", "#", "x", "1", "a", "amp", "not", "para", "=", "lt", "AMP", "e"]
        ),
        max_size=12,
    ).map("".join)
)
def test_unescape_is_html_unescape(value: str) -> None:
    assert fast_scan._unescape(value) == html.unescape(value)


def test_unescape_leaves_a_query_alone_and_reads_references() -> None:
    assert fast_scan._unescape("?a=1&b=2") == "?a=1&b=2"
    assert fast_scan._unescape("?a=1&not=2") == "?a=1\u00ac=2"
    assert fast_scan._unescape("h&#116;tp") == "http"
    assert fast_scan._unescape("a&amp;b") == "a&b"
    assert fast_scan._unescape("a&hellip;b") == "a\u2026b"  # a reference only with its ";"


def test_a_relative_link_is_resolved_again_on_every_page() -> None:
    body = b'<a href="page.html">x</a>'
    found = []
    for page_url in ["", "http://listed.example.com/index.html", "page.html"]:
        fast, reference = both(body, "text/html", page_url, BL.match)
        assert fast == reference
        found.append([(link.url, match.entry_id) for link, match in fast[1]])
    assert found == [[], [("http://listed.example.com/page.html", "page")], []]


@pytest.mark.parametrize("order", [1, -1])
def test_a_link_read_in_another_charset_is_checked_again(order: int) -> None:
    """ "caf&eacute;" is "caf\u00e9" in a windows-1252 page (listed), not in a UTF-8 one."""
    body = b'<a href="http://listed.example.com/caf&eacute;.html">x</a>'
    found = {}
    for content_type in ["text/html; charset=windows-1252", "text/html; charset=utf-8"][::order]:
        fast, reference = both(body, content_type, PAGE_URLS[0], BL.match)
        assert fast == reference
        found[content_type] = [match.entry_id for _, match in fast[1]]
    assert found == {"text/html; charset=windows-1252": ["cafe"], "text/html; charset=utf-8": []}


@pytest.mark.parametrize("url", ["http://listed.example.com/page.html", "//whole.listed.test/"])
def test_a_listed_link_found_again_from_memory_is_still_neutralized(url: str) -> None:
    body = f'<a href="{url}">x</a><img src="{url}">'.encode()
    kept = pages.Verdicts().of(BL)
    for _ in range(3):
        out, found = pages.neutralize(
            body, "text/html", PAGE_URLS[0], BL.match, lambda m: SPLASH, kept
        )
        assert out == f'<a href="{SPLASH}">x</a><img src="{pages.BLOCKED_RESOURCE}">'.encode()
        assert len(found) == 2
