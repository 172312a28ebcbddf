"""What the list blocks and what it leaves alone (DESIGN "Matching semantics")."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist, Entry, Match
from blocklist_addon.canonical import host_suffixes, parse, path_prefixes
from blocklist_addon.matcher import exempt_hosts, expression_of
from blocklist_addon.snapshot import expression_digest

PAGE = "http://listed.example/gallery/page.html"
LISTED = [
    PAGE,
    "listed.example/dir/",  # a directory and everything below it
    "whole-site.test/",  # a whole host
    "http://q.example.net/view.php?id=42",  # exactly this path and query
    "http://192.0.2.7/img/a.jpg",  # an IP host
    "http://deep.example.org/a/b/c/d/e/",  # a directory deeper than the spec's 4 prefixes
]


@pytest.fixture(scope="module")
def bl() -> Blocklist:
    return Blocklist.from_entries(
        [Entry(url, id=f"e{n}", list_name="iwf") for n, url in enumerate(LISTED)]
    )


BLOCKED = [
    # the page itself, any query string, subdomains
    PAGE,
    "https://listed.example/gallery/page.html",
    "http://listed.example/gallery/page.html?utm=1&x=2",
    "http://www.listed.example/gallery/page.html",
    "http://a.b.c.d.e.listed.example/gallery/page.html",
    # case, trailing dots, ports, userinfo, fragments, whitespace
    "HTTP://LISTED.EXAMPLE/gallery/page.html",
    "http://listed.example./gallery/page.html",
    "http://listed..example/gallery/page.html",
    "http://listed.example:80/gallery/page.html",
    "http://listed.example:8080/gallery/page.html",
    "http://user:secret@listed.example/gallery/page.html",
    "http://listed.example/gallery/page.html#top",
    " http://listed.example/gallery/page.html\t",
    "http://listed.exa\tmple/gallery/pa\nge.html",
    # percent-encoding, once or many times, of host and path
    "http://%6c%69%73%74%65%64.example/gallery/page.html",
    "http://listed.example/gallery/%70age.html",
    "http://listed.example/gallery%2Fpage.html",
    "http://listed.example/%2567allery/page.html",
    "http://listed.example/gallery/page%252Ehtml",
    # dot segments, slashes, backslashes, missing scheme
    "http://listed.example/gallery/./page.html",
    "http://listed.example/x/../gallery/page.html",
    "http://listed.example/gallery/%2e%2e/gallery/page.html",
    "http://listed.example//gallery///page.html",
    "http:\\\\listed.example\\gallery\\page.html",
    "http:/listed.example/gallery/page.html",
    "listed.example/gallery/page.html",
    "//listed.example/gallery/page.html",
    # the page as a directory
    "http://listed.example/gallery/page.html/",
    # directory and host entries
    "http://listed.example/dir/",
    "http://listed.example/dir/sub/file.jpg?s=1",
    "http://whole-site.test/",
    "http://www.whole-site.test/anything/at/all.html",
    # query entries: exactly that query
    "http://q.example.net/view.php?id=42",
    "http://q.example.net/view.php?id=42#x",
    # IPv4 in every encoding, and IPv6-mapped
    "http://192.0.2.7/img/a.jpg",
    "http://3221225991/img/a.jpg",
    "http://0xC0.0x00.0x02.0x07/img/a.jpg",
    "http://0300.0.02.07/img/a.jpg",
    "http://192.0.519/img/a.jpg",
    "http://0xc0000207/img/a.jpg",
    "http://[::ffff:192.0.2.7]/img/a.jpg",
    # deep directory entries block everything below them
    "http://deep.example.org/a/b/c/d/e/f/g/h.html",
]

NOT_BLOCKED = [
    # parents, siblings, other pages on a listed host
    "http://listed.example/",
    "http://listed.example/gallery/",
    "http://listed.example/gallery/page2.html",
    "http://listed.example/gallery/page.htm",
    "http://listed.example/gallery/Page.html",
    "http://listed.example/gallery/page.html.bak",
    "http://listed.example/other/gallery/page.html",
    "http://listed.example/dir",
    "http://listed.example/directory/file.jpg",
    # parent domain, lookalikes, siblings of a listed host
    "http://example/gallery/page.html",
    "http://notlisted.example/gallery/page.html",
    "http://listed.example.test/gallery/page.html",
    "http://listed-example.test/gallery/page.html",
    "http://whole-site.test.example.org/",
    "http://site.test/",
    # a prefix not at a "/" boundary
    "http://whole-site.testx/",
    "http://xwhole-site.test/",
    "http://deep.example.org/a/b/c/d/ef/g.html",
    "http://deep.example.org/a/b/c/d/",
    # other query strings for a query entry
    "http://q.example.net/view.php",
    "http://q.example.net/view.php?id=43",
    "http://q.example.net/view.php?id=421",
    "http://q.example.net/view.php?id=42&x=1",
    # other IPs, and the listed path on another host
    "http://192.0.2.8/img/a.jpg",
    "http://198.51.100.7/img/a.jpg",
    "http://example.com/gallery/page.html",
    # not URLs at all
    "",
    "mailto:someone@listed.example",
    "javascript:alert(1)",
    "http://",
    "\x00\xff%%%",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked(bl: Blocklist, url: str) -> None:
    m = bl.match(url)
    assert m is not None, url
    assert m.list_name == "iwf"
    assert not m.embedded


@pytest.mark.parametrize("url", NOT_BLOCKED)
def test_not_blocked(bl: Blocklist, url: str) -> None:
    assert bl.match(url) is None


WRAPPED = [
    "http://archive.example.org/web/2020/http://listed.example/gallery/page.html",
    "http://translate.example.com/translate?u=http://listed.example/gallery/page.html&hl=en",
    "http://r.example.com/?url=" + urllib.parse.quote(PAGE, safe=""),
    "http://search.example.com/search?q=" + urllib.parse.quote(PAGE, safe=""),
    "http://r.example.com/go?to=listed.example/gallery/page.html",
    "http://r.example.com/go?next=//listed.example/gallery/page.html",
    "http://r.example.com/out?u=www.whole-site.test/x",
]


def wrap(url: str, depth: int) -> str:
    for n in range(depth):
        url = f"http://r{n}.example.com/redirect?u=" + urllib.parse.quote(url, safe="")
    return url


@pytest.mark.parametrize("url", WRAPPED)
def test_embedded_urls_are_blocked(bl: Blocklist, url: str) -> None:
    m = bl.match(url)
    assert m is not None, url
    assert m.embedded


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_nested_redirectors(bl: Blocklist, depth: int) -> None:
    m = bl.match(wrap(PAGE, depth))
    assert m is not None and m.embedded
    assert bl.match(wrap("http://listed.example/gallery/other.html", depth)) is None


def test_embedded_query_entry_needs_its_query(bl: Blocklist) -> None:
    inner = "http://q.example.net/view.php?id=42"
    assert bl.match("http://r.example.com/?u=" + urllib.parse.quote(inner, safe="")) is not None
    assert bl.match("http://r.example.com/?u=http://q.example.net/view.php&id=43") is None


def test_match_carries_id_and_digest_but_no_plaintext(bl: Blocklist) -> None:
    m = bl.match("http://www.listed.example/gallery/page.html?x=1")
    assert m == Match(
        list_name="iwf",
        entry_id="e0",
        digest=expression_digest("listed.example/gallery/page.html").hex(),
        embedded=False,
    )
    assert "listed" not in repr(m)


def test_round_trip_through_bytes(bl: Blocklist) -> None:
    data = bl.to_bytes()
    again = Blocklist.from_bytes(data)
    assert len(again) == len(bl) == len(LISTED)
    for url in BLOCKED:
        assert again.match(url) == bl.match(url)
    for url in NOT_BLOCKED:
        assert again.match(url) is None
    assert b"listed" not in data and b"whole-site" not in data


def test_default_list_and_derived_ids() -> None:
    bl = Blocklist.from_entries(["listed.example/a.html"])
    m = bl.match("http://listed.example/a.html")
    assert m is not None and m.list_name == "default"
    assert (
        m.entry_id
        == Blocklist.from_entries(["http://LISTED.example/a.html"])
        .match("http://listed.example/a.html")
        .entry_id
    )  # derived from the canonical form, so stable across spellings and versions


def test_invalid_entry_is_reported_by_position_not_text() -> None:
    with pytest.raises(ValueError, match="entry 2") as err:
        Blocklist.from_entries(["listed.example/a.html", "mailto:secret@listed.example"])
    assert "secret" not in str(err.value)


def test_empty_list_blocks_nothing() -> None:
    bl = Blocklist.from_entries([])
    assert len(bl) == 0
    assert bl.match(PAGE) is None


# -- properties --------------------------------------------------------------------------

LABELS = st.sampled_from(["listed", "www", "a", "example", "test", "org", "x-y", "0", "1"])
SEGMENTS = st.sampled_from(["a", "b", "page.html", "dir", ".", "..", "", "%2e", "x%20y"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    host = ".".join(draw(st.lists(LABELS, min_size=1, max_size=5)))
    path = "/".join(draw(st.lists(SEGMENTS, max_size=6)))
    query = draw(st.one_of(st.none(), st.sampled_from(["", "id=1", "a=b&c=d"])))
    scheme = draw(st.sampled_from(["http://", "https://", "HTTP://", ""]))
    return f"{scheme}{host}/{path}" + ("" if query is None else "?" + query)


def reference_match(entries: list[str], url: str) -> bool:
    """Brute force: an entry matches when its expression is one of the URL's expressions
    (every host suffix x every directory prefix, plus the page-as-directory spelling)."""
    c = parse(url)
    if c is None:
        return False
    paths = path_prefixes(c.path, c.query, limit=None)
    if len(c.path) > 1 and c.path.endswith("/"):
        paths.append(c.path[:-1])
        if c.query is not None:
            paths.append(f"{c.path[:-1]}?{c.query}")
    wanted = {h + p for h in host_suffixes(c.host, c.is_ip, limit=None) for p in paths}
    for e in entries:
        ec = parse(e)
        assert ec is not None
        if expression_of(ec) in wanted:
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(urls(), min_size=1, max_size=8), st.lists(urls(), min_size=1, max_size=8))
def test_matches_the_brute_force_reference(entries: list[str], requests: list[str]) -> None:
    entries = [e for e in entries if parse(e) is not None]
    bl = Blocklist.from_entries(entries)
    for url in requests + entries:
        assert (bl.match(url) is not None) == reference_match(entries, url), url


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_match_is_total(url: str) -> None:
    bl = Blocklist.from_entries(LISTED)
    result = bl.match(url)
    assert result is None or isinstance(result, Match)


# -- Google Translate's proxy host form (issue 15.6) ---------------------------------------

TRANSLATED = Blocklist.from_entries(
    ["http://listed-site.example/page.html", "q.example/view?id=42", "whole.example/"]
)


@pytest.mark.parametrize(
    "url",
    [
        "https://listed--site-example.translate.goog/page.html",
        "https://listed--site-example.translate.goog/page.html?_x_tr_sl=auto&_x_tr_tl=en",
        "https://www-listed--site-example.translate.goog/page.html?_x_tr_hl=en",
        "https://LISTED--SITE-EXAMPLE.translate.goog./page.html",
        "https://q-example.translate.goog/view?id=42&_x_tr_sl=auto&_x_tr_tl=en",
        "https://whole-example.translate.goog/anything",
        "http://r.example.com/?u=https%3A%2F%2Flisted--site-example.translate.goog%2Fpage.html",
    ],
)
def test_translate_proxy_host_is_its_site(url: str) -> None:
    m = TRANSLATED.match(url)
    assert m is not None and m.embedded


@pytest.mark.parametrize(
    "url",
    [
        "https://listed--site-example.translate.goog/other.html",
        "https://listed-site-example.translate.goog/page.html",  # listed.site.example
        "https://q-example.translate.goog/view?id=43&_x_tr_sl=auto",
        "https://q-example.translate.goog/view?id=42&page=2&_x_tr_sl=auto",
        "https://translate.goog/page.html",
        "https://whole-example.translate.goog.example.net/",
    ],
)
def test_translate_proxy_host_near_misses(url: str) -> None:
    assert TRANSLATED.match(url) is None


def test_translate_proxy_host_listing() -> None:
    assert TRANSLATED.host_listing("whole-example.translate.goog").whole is not None
    listing = TRANSLATED.host_listing("listed--site-example.translate.goog")
    assert listing.entries and listing.whole is None
    assert not TRANSLATED.host_listing("other-example.translate.goog").listed


# -- the report-form exemption -------------------------------------------------------------

REPORT = "https://report.hotline.example/report?url=" + urllib.parse.quote(PAGE, safe="")


def test_embedded_exempt_hosts_are_not_checked_for_embedded_urls(bl: Blocklist) -> None:
    assert bl.match(REPORT) is not None
    assert bl.match(REPORT, embedded_exempt=["report.hotline.example"]) is None
    assert bl.match(REPORT, embedded_exempt=["Hotline.Example."]) is None  # and subdomains
    assert bl.match(REPORT, embedded_exempt=["other.example"]) is not None
    assert bl.match(REPORT, embedded_exempt=["hotline.example.net"]) is not None
    assert bl.match(
        REPORT.replace("report.", "evilreport."), embedded_exempt=["report.hotline.example"]
    )


def test_embedded_exempt_hosts_are_still_checked_themselves(bl: Blocklist) -> None:
    assert bl.match(PAGE, embedded_exempt=["listed.example"]) is not None
    translated = "https://listed-example.translate.goog/gallery/page.html"
    assert bl.match(translated, embedded_exempt=["translate.goog"]) is not None


def test_exempt_hosts_setting() -> None:
    assert exempt_hosts(" Report.Hotline.Example. , 192.0.2.1,,[2001:DB8::1]") == {
        "report.hotline.example",
        "192.0.2.1",
        "[2001:db8::1]",
    }
    for bad in ["http://report.hotline.example/", "report.hotline.example/form", "a b", "x:80"]:
        with pytest.raises(ValueError, match="not a host name"):
            exempt_hosts(bad)
