"""The matcher's behaviour that `make mutate` found no test for (issue 27, item 4): entries
known only by digest (sha256 feeds), what ``host_listing`` answers, which expression a
match reports when several are listed, and the key ``embedded_urls`` is given. Each test
runs on the compiled lookups and on the Python reference (``compiled=False``)."""

from __future__ import annotations

import asyncio
import pathlib
import urllib.parse
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.lists.store import StoreError, open_store
from blocklist_addon.urls.matcher import (
    NOT_LISTED,
    WALK_FLOOR,
    Blocklist,
    Entry,
    HostListing,
    Match,
    compile_entry,
    directory_depth,
    exempt_hosts,
    expression_of,
    untranslated_host,
)
from blocklist_addon.urls.snapshot import Snapshot, expression_digest, host_key
from testlab.adversarial import CountingBlocklist

BOTH = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])


def digest_of(entry: str) -> str:
    c = compile_entry(entry)
    assert c is not None
    return expression_digest(expression_of(c)).hex()


def build(
    hostless: Sequence[str], hosted: Sequence[str] = (), *, compiled: bool = True
) -> Blocklist:
    """A list whose ``hostless`` entries are known only by digest (list "sha", ids h0, h1
    ...) and whose ``hosted`` ones by digest and host, as the sync writes them (list "url",
    ids u0, u1 ...)."""
    rows: list[tuple[bytes, bytes | None, str, str | None, int | None]] = []
    for n, entry in enumerate(hostless):
        c = compile_entry(entry)
        assert c is not None
        rows.append((expression_digest(expression_of(c)), None, "sha", f"h{n}", None))
    for n, entry in enumerate(hosted):
        c = compile_entry(entry)
        assert c is not None
        rows.append(
            (
                expression_digest(expression_of(c)),
                host_key(c.host),
                "url",
                f"u{n}",
                directory_depth(c),
            )
        )
    return Blocklist(Snapshot.build(rows), compiled=compiled)


# -- entries known only by digest: the spec's 5 x 6 expressions --------------------------

HOSTLESS = [
    "a.hostless.test/",  # h0: a whole host
    "hostless.test/p/page.html",  # h1: a page
    "hostless.test/q.php?id=1",  # h2: a page with its query
    "hostless.test/d1/d2/d3/",  # h3: a directory within the spec's four prefixes
    "hostless.test/e1/e2/e3/e4/",  # h4: one deeper than they reach
    "b.c.d.e.hostless.test/",  # h5: six labels, one more than the spec's five
    "192.0.2.9/x.html",  # h6: an IP host
    "listed.test/h.html",  # h7: on a host that also has an entry known by host
]
HOSTED = ["listed.test/hosted/"]

HOSTLESS_BLOCKED = [
    ("http://a.hostless.test/", 0),
    ("http://a.hostless.test/x/y.html?z", 0),
    ("http://www.a.hostless.test/", 0),
    ("http://1.2.3.4.5.6.a.hostless.test/", 0),  # its last five labels are always looked up
    ("HTTP://A.HOSTLESS.TEST./", 0),
    ("http://hostless.test/p/page.html", 1),
    ("http://www.hostless.test/p/page.html?utm=1", 1),
    ("http://hostless.test/p/page.html/", 1),  # the page as a directory
    ("http://hostless.test/p/page.html%3Fid=1", 1),  # an escaped "?"
    ("http://hostless.test/q.php?id=1", 2),
    ("http://hostless.test/q.php/?id=1", 2),
    ("http://hostless.test/d1/d2/d3/", 3),
    ("http://hostless.test/d1/d2/d3/d4/x.html", 3),
    ("http://hostless.test/e1/e2/e3/e4/", 4),  # the exact path is always looked up
    ("http://b.c.d.e.hostless.test/", 5),
    ("http://b.c.d.e.hostless.test/x/", 5),
    ("http://192.0.2.9/x.html", 6),
    ("http://3221225993/x.html", 6),
    ("http://listed.test/h.html", 7),  # after the host's own entries found nothing
    ("http://www.listed.test/h.html", 7),
]
HOSTLESS_NOT_BLOCKED = [
    "http://hostless.test/",
    "http://hostless.test/p/",
    "http://hostless.test/p/page.htm",
    "http://hostless.test/q.php?id=2",
    "http://hostless.test/q.php",
    "http://hostless.test/d1/d2/",
    "http://hostless.test/e1/e2/e3/e4/x.html",  # the spec's four prefixes stop above it
    "http://x.b.c.d.e.hostless.test/",  # the spec's five labels do not reach it
    "http://b.a.hostless.test.example.org/",
    "http://192.0.2.10/x.html",
    "http://listed.test/",
    "http://listed.test/other.html",
    "http://other.test/h.html",
]


@BOTH
@pytest.mark.parametrize(("url", "n"), HOSTLESS_BLOCKED)
def test_entries_known_by_digest_block(compiled: bool, url: str, n: int) -> None:
    bl = build(HOSTLESS, HOSTED, compiled=compiled)
    assert bl.match(url) == Match("sha", f"h{n}", digest_of(HOSTLESS[n]), False)


@BOTH
@pytest.mark.parametrize("url", HOSTLESS_NOT_BLOCKED)
def test_entries_known_by_digest_and_what_they_leave(compiled: bool, url: str) -> None:
    assert build(HOSTLESS, HOSTED, compiled=compiled).match(url) is None


@BOTH
def test_entries_known_by_digest_beside_entries_known_by_host(compiled: bool) -> None:
    bl = build(HOSTLESS, HOSTED, compiled=compiled)
    hosted = Match("url", "u0", digest_of(HOSTED[0]), False)
    assert bl.match("http://listed.test/hosted/a/b/c/d/e/f.html") == hosted
    assert bl.match("http://www.listed.test/hosted/") == hosted


@BOTH
@pytest.mark.parametrize(("url", "n"), HOSTLESS_BLOCKED[::3])
def test_urls_embedded_in_others_are_matched_by_digest(compiled: bool, url: str, n: int) -> None:
    bl = build(HOSTLESS, HOSTED, compiled=compiled)
    found = Match("sha", f"h{n}", digest_of(HOSTLESS[n]), True)
    assert bl.match("http://r.example.net/out?u=" + urllib.parse.quote(url, safe="")) == found
    assert bl.match("http://r.example.net/out?u=" + url) == found
    assert bl.match("http://r.example.net/" + url.replace("http://", "")) == found


LABELS = st.sampled_from(["a", "b", "www", "x-y", "hostless"])
SEGMENTS = st.sampled_from(["a", "b", "c", "p.html", "d"])


@st.composite
def entries_and_urls(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Entries within the spec's reach (hosts of at most six labels, directories of at most
    three segments) and URLs on and around them."""
    entries, urls = [], []
    for _ in range(draw(st.integers(1, 4))):
        host = ".".join([*draw(st.lists(LABELS, min_size=0, max_size=3)), "test"])
        path = "/".join(draw(st.lists(SEGMENTS, max_size=3)))
        kind = draw(st.sampled_from(["dir", "page", "query"]))
        entry = f"{host}/{path}/" if kind == "dir" else f"{host}/{path}x.html"
        entry += "?id=1" if kind == "query" else ""
        entries.append(entry.replace("//", "/"))
    for _ in range(draw(st.integers(1, 6))):
        host = draw(st.sampled_from(entries)).split("/", 1)[0]
        if len(host.split(".")) < 6 and draw(st.booleans()):
            host = draw(LABELS) + "." + host
        path = "/".join(draw(st.lists(SEGMENTS, max_size=5)))
        tail = draw(st.sampled_from(["", "/", "x.html", "x.html/", "x.html?id=1", "?id=1"]))
        urls.append(f"http://{host}/{path}{tail}")
    return entries, urls


@BOTH
@settings(max_examples=150, deadline=None)
@given(entries_and_urls())
def test_within_the_spec_reach_a_digest_blocks_what_the_entry_does(
    compiled: bool, case: tuple[list[str], list[str]]
) -> None:
    entries, urls = case
    by_digest = build(entries, compiled=compiled)
    by_host = Blocklist.from_entries(entries, compiled=compiled)
    for url in urls + ["http://" + e for e in entries]:
        found, expected = by_digest.match(url), by_host.match(url)
        assert (found and found.digest) == (expected and expected.digest), url


# -- host_listing: what a CONNECT or a TLS client hello is told ----------------------------


@BOTH
def test_host_listing_of_entries_known_by_digest(compiled: bool) -> None:
    """Only a whole host listed by digest is known before the URL: its pages need it."""
    bl = build(HOSTLESS, HOSTED, compiled=compiled)
    whole = Match("sha", "h0", digest_of(HOSTLESS[0]), False)
    assert bl.host_listing("a.hostless.test") == HostListing(False, whole)
    assert bl.host_listing("www.a.hostless.test") == HostListing(False, whole)
    assert bl.host_listing("b.c.d.e.hostless.test").whole is not None
    assert bl.host_listing("hostless.test") == NOT_LISTED
    assert bl.host_listing("x.b.c.d.e.hostless.test") == NOT_LISTED  # beyond five labels
    assert bl.host_listing("listed.test") == HostListing(True, None)
    assert bl.host_listing("other.test") == NOT_LISTED


LISTING = [
    "whole.test/",  # u0
    "pages.test/p.html",  # u1
    "http://[2001:db8::1]/",  # u2
    "http://[2001:db8::2]/p.html",  # u3
    "192.0.2.1/",  # u4
    "own-test.translate.goog/",  # u5: the proxy host itself, listed whole
    "paged-test.translate.goog/p.html",  # u6: a page on the proxy host itself
    "pages.test/dir/",  # u7
]


@BOTH
def test_host_listing(compiled: bool) -> None:
    bl = build([], LISTING, compiled=compiled)

    def whole(n: int) -> HostListing:
        return HostListing(True, Match("url", f"u{n}", digest_of(LISTING[n]), False))

    assert bl.host_listing("whole.test") == whole(0)
    assert bl.host_listing("a.b.whole.test") == whole(0)
    assert bl.host_listing("WHOLE.Test.") == whole(0)
    assert bl.host_listing("pages.test") == HostListing(True, None)
    assert bl.host_listing("www.pages.test") == HostListing(True, None)
    assert bl.host_listing("2001:db8::1") == whole(2)  # as a TLS client hello gives it
    assert bl.host_listing("[2001:DB8::1]") == whole(2)
    assert bl.host_listing("2001:db8::2") == HostListing(True, None)
    assert bl.host_listing("[2001:db8::2]") == HostListing(True, None)
    assert bl.host_listing("2001:db8::3") == NOT_LISTED
    assert bl.host_listing("3405803777") == NOT_LISTED  # 203.0.113.1
    assert bl.host_listing("3221225985") == whole(4)  # 192.0.2.1
    assert bl.host_listing("0xC0.0.2.1") == whole(4)
    assert bl.host_listing("own-test.translate.goog") == whole(5)
    assert bl.host_listing("paged-test.translate.goog") == HostListing(True, None)
    assert bl.host_listing("pages-test.translate.goog") == HostListing(True, None)
    assert bl.host_listing("whole-test.translate.goog") == whole(0)
    for host in ["example", "other.test", "whole.example.net", "", "a b", "a/b", "[::g]"]:
        assert bl.host_listing(host) == NOT_LISTED, host


# -- which entry a match names when several are listed ----------------------------------

#: Every expression a URL on listed.test/a/b/page.html?x=1 and its spellings is looked up
#: under, each listed: the first looked up is the one a match names.
ORDERED = [
    "listed.test/a/b/page.html?x=1",  # u0: the path with its query
    "listed.test/a/b/page.html",  # u1: the path
    "listed.test/",  # u2: the directories, from the root down
    "listed.test/a/",  # u3
    "listed.test/a/b/",  # u4
    "listed.test/a/b/page.html/",  # u5
    "listed.test/a/b/c.html?x=1",  # u6
    "listed.test/a/b/c.html",  # u7
    "sub.listed.test/a/b/page.html",  # u8
    "listed.test/a/b/q.html?id=1?x=1",  # u9
    "listed.test/a/b/q.html?id=1",  # u10
    "listed.test/a/b/q.html",  # u11
]


@BOTH
@pytest.mark.parametrize(
    ("url", "n"),
    [
        ("http://listed.test/a/b/page.html?x=1", 0),
        ("http://listed.test/a/b/page.html?x=2", 1),
        ("http://listed.test/a/b/page.html", 1),
        ("http://listed.test/a/b/page.html/?x=1", 5),  # the page as a directory first
        ("http://listed.test/a/b/page.html/", 5),
        ("http://listed.test/a/b/other.html", 2),
        ("http://listed.test/a/b/c.html/?x=1", 2),  # its directory comes before the page
        ("http://sub.listed.test/a/b/page.html", 8),  # the host before its parents
        ("http://www.sub.listed.test/a/b/page.html?x=1", 8),
        ("http://listed.test/a/b/q.html%3Fid=1?x=1", 2),
    ],
)
def test_the_first_expression_looked_up_names_the_match(compiled: bool, url: str, n: int) -> None:
    bl = build([], ORDERED, compiled=compiled)
    assert bl.match(url) == Match("url", f"u{n}", digest_of(ORDERED[n]), False)


# -- loading: from a store, from bytes -----------------------------------------------------


def test_a_list_is_loaded_from_its_store(tmp_path: pathlib.Path) -> None:
    store_url = tmp_path.as_uri()
    with pytest.raises(StoreError) as err:
        Blocklist.load(store_url)
    assert str(err.value) == f"no list is active in {store_url}: run blocklist-sync first"

    async def publish(bl: Blocklist) -> None:
        store = open_store(store_url)
        data = bl.to_bytes()
        await store.publish(data, checksum=bl.snapshot.checksum, entries=len(bl), source="t")
        await store.close()

    first = Blocklist.from_entries(["listed.test/a.html"])
    asyncio.run(publish(first))
    loaded = Blocklist.load(store_url)
    assert loaded.to_bytes() == first.to_bytes()
    assert loaded.match("http://listed.test/a.html") == first.match("http://listed.test/a.html")
    second = Blocklist.from_entries(["listed.test/b.html", "other.test/"])
    asyncio.run(publish(second))
    assert Blocklist.load(store_url).to_bytes() == second.to_bytes()
    assert asyncio.run(Blocklist.aload(store_url)).to_bytes() == second.to_bytes()
    assert Blocklist.load(store_url)._compiled is not None  # as a list from bytes


def test_a_list_from_bytes_is_compiled_unless_told() -> None:
    data = Blocklist.from_entries(["listed.test/a.html"]).to_bytes()
    assert Blocklist.from_bytes(data)._compiled is not None
    assert Blocklist.from_bytes(data, compiled=True)._compiled is not None
    assert Blocklist.from_bytes(data, compiled=False)._compiled is None
    assert Blocklist.from_entries([], compiled=False)._compiled is None


# -- Google Translate's proxy host, the report-form exemption ------------------------------


@BOTH
def test_a_translated_page_keeps_its_other_parameters(compiled: bool) -> None:
    bl = build([], ["q.test/view?id=42&page=2", "192.0.2.7/img/a.jpg"], compiled=compiled)
    query = Match("url", "u0", digest_of("q.test/view?id=42&page=2"), True)
    url = "https://q-test.translate.goog/view?id=42&page=2&_x_tr_sl=auto&_x_tr_tl=en"
    assert bl.match(url) == query
    assert bl.match(url.replace("page=2", "page=3")) is None
    ip = Match("url", "u1", digest_of("192.0.2.7/img/a.jpg"), True)
    assert bl.match("https://192-0-2-7.translate.goog/img/a.jpg?_x_tr_sl=auto") == ip
    assert bl.host_listing("192-0-2-7.translate.goog") == HostListing(True, None)


def test_an_outer_url_that_is_no_url_is_never_exempt() -> None:
    """The exemption is for a report form's own host: a URL whose host cannot be read is
    under none, and the listed URL in it is blocked."""
    bl = build([], ["listed.test/gallery/page.html"])
    found = Match("url", "u0", digest_of("listed.test/gallery/page.html"), True)
    for outer in ["http://:80/", "http:///"]:
        url = outer + "?u=http://listed.test/gallery/page.html"
        assert bl.match(url, embedded_exempt=["report.hotline.test"]) == found, url


def test_every_exempt_host_is_exempt() -> None:
    bl = build([], ["listed.test/gallery/page.html"])
    url = "https://report.hotline.test/report?url=http://listed.test/gallery/page.html"
    for exempt in [
        ["report.hotline.test", "other.test"],
        ["other.test", "report.hotline.test"],
        ["a.test", "hotline.test", "b.test"],
    ]:
        assert bl.match(url, embedded_exempt=exempt) is None, exempt
    assert bl.match(url, embedded_exempt=["a.test", "b.test"]) is not None


@BOTH
def test_host_listing_of_a_name_that_is_not_ascii(compiled: bool) -> None:
    """Lowercased as written: "ß" is not "SS" (IDNA 2008 keeps it, as browsers do)."""
    bl = build([], ["straße.test/", "strasse.test/p.html"], compiled=compiled)
    whole = Match("url", "u0", digest_of("straße.test/"), False)
    assert bl.host_listing("straße.test") == HostListing(True, whole)
    assert bl.host_listing("www.STRAßE.test") == HostListing(True, whole)
    assert bl.host_listing("strasse.test") == HostListing(True, None)


# -- the key embedded_urls is given --------------------------------------------------------


@BOTH
def test_the_host_key_names_the_listed_hosts_a_url_falls_under(compiled: bool) -> None:
    """``embedded_urls`` builds the candidates of removed hosts once per key and none for a
    host under no listed host (None): a key that is None for a listed host, or the same
    for two, would lose a listed URL."""
    bl = build([], ["listed.test/p.html", "sub.listed.test/", "192.0.2.7/"], compiled=compiled)
    assert bl._host_key("www.sub.listed.test") == ("sub.listed.test", "listed.test")
    assert bl._host_key("http://WWW.Listed.Test:80") == ("listed.test",)
    assert bl._host_key("//a.listed.test.") == ("listed.test",)
    assert bl._host_key("http://3221225991") == ("192.0.2.7",)
    assert bl._host_key("http://user@sub.listed.test") == ("sub.listed.test", "listed.test")
    assert bl._host_key("http://%6cisted.test") == ("listed.test",)  # the parser's reading
    for authority in ["other.test", "listed.test.example.org", "http://[::1]", "http://:80", "%"]:
        assert bl._host_key(authority) is None, authority
    hostless = build(["a.hostless.test/"], ["listed.test/p.html"], compiled=compiled)
    assert hostless._host_key("http://WWW.A.hostless.test") == ("www.a.hostless.test",)
    assert hostless._host_key("http://user@other.test") == ("other.test",)
    assert hostless._host_key("http://3221225991") == ("192.0.2.7",)
    assert hostless._host_key("http://:80") is None


def test_untranslated_host() -> None:
    """The label before ``.translate.goog`` is the host, "-" for "." and "--" for "-"."""
    site = ("listed-site.test", False)
    assert untranslated_host("listed--site-test.translate.goog") == site
    assert untranslated_host("listed--site-test.translate.goog.") == site
    assert untranslated_host("www.listed--site-test.translate.goog") == site
    assert untranslated_host("a.b.listed--site-test.translate.goog.") == site
    assert untranslated_host("192-0-2-7.translate.goog") == ("192.0.2.7", True)
    for host in [
        "translate.goog",
        ".translate.goog",
        "example.com",
        "a.translate.goog.example.org",
    ]:
        assert untranslated_host(host) is None, host


#: A page, its query spellings and an escaped "?", with no directory listed above them:
#: the expressions after the directories decide.
AFTER = [
    "listed.test/a/q.html?id=1?x=1",  # u0
    "listed.test/a/q.html?id=1",  # u1
    "listed.test/a/q.html",  # u2
    "listed.test/a/page.html",  # u3
    "listed.test/a/page.html?x=1",  # u4
    "listed.test/a/v.php?id=42",  # u5
    "listed.test/a/n.html?None",  # u6: a query that is only a query's text
    "listed.test/a/r%3Fs.html",  # u7: a page whose name holds an escaped "?"
]


@BOTH
@pytest.mark.parametrize(
    ("url", "n"),
    [
        ("http://listed.test/a/q.html%3Fid=1?x=1", 0),
        ("http://listed.test/a/q.html%3Fid=1%3Fx=1", 0),
        ("http://listed.test/a/q.html%3Fid=1", 1),
        ("http://listed.test/a/q.html%3Fid=2", 2),
        ("http://listed.test/a/q.html%3F", 2),
        ("http://listed.test/a/page.html/?x=1", 3),  # the page before the page with its query
        ("http://listed.test/a/page.html/?x=2", 3),
        ("http://listed.test/a/page.html?x=1", 4),
        ("http://listed.test/a/v.php/?id=42", 5),
        ("http://listed.test/a/v.php%3Fid=42", 5),
        ("http://listed.test/a/page.html%3Fx=1", 4),
        ("http://listed.test/a/page.html%3Fx=2", 3),
        ("http://listed.test/a/r%3Fs.html/", 7),  # the page as a directory, "?" or not
        ("http://listed.test/a/r%3Fs.html", 7),
    ],
)
def test_the_spellings_after_the_directories(compiled: bool, url: str, n: int) -> None:
    bl = build([], AFTER, compiled=compiled)
    assert bl.match(url) == Match("url", f"u{n}", digest_of(AFTER[n]), False)


@BOTH
@pytest.mark.parametrize(
    "url",
    [
        "http://listed.test/a/page.htmlx",  # not a page's prefix, only a directory's
        "http://listed.test/a/page.html/x",
        "http://listed.test/a/page.html/x/",
        "http://listed.test/a/q.htm%3Fid=1",
        "http://listed.test/a/v.php/?id=4",
        "http://listed.test/a/v.php/",
        "http://listed.test/a/v.php%3F",
        "http://listed.test/a/",
        "http://listed.test/a%3Fq.html",
        "http://listed.test/a/n.html",  # no query is no query, not "None"
        "http://listed.test/a/n.html/",
        "http://listed.test/a/n.html%3F",
    ],
)
def test_the_spellings_after_the_directories_go_no_further(compiled: bool, url: str) -> None:
    assert build([], AFTER, compiled=compiled).match(url) is None


@BOTH
def test_a_single_entry_known_by_digest(compiled: bool) -> None:
    """One such entry (the list's ``hostless`` count is 1) turns the host index's
    shortcut off as many do: a URL on a host with no entry known by host is checked."""
    bl = build(["a.hostless.test/"], ["listed.test/p.html"], compiled=compiled)
    found = Match("sha", "h0", digest_of("a.hostless.test/"), False)
    assert bl.match("http://a.hostless.test/x.html") == found
    assert bl.match("http://www.a.hostless.test/") == found
    assert bl.match("http://user@a.hostless.test/") == found
    assert bl.match("http://hostless.test/") is None
    assert bl.match("http://listed.test/p.html") == Match(
        "url", "u0", digest_of("listed.test/p.html"), False
    )
    assert bl.host_listing("a.hostless.test") == HostListing(False, found)


def test_the_errors_name_what_is_wrong() -> None:
    with pytest.raises(ValueError) as err:
        Blocklist.from_entries(["listed.test/a.html", "listed.test/b.html", "mailto:x"])
    assert str(err.value) == "entry 3 is not a URL or host/path expression"
    for bad in ["a b", "http://report.hotline.test/", "x:80"]:
        with pytest.raises(ValueError) as err:
            exempt_hosts(f"report.hotline.test, {bad} ,other.test")
        assert str(err.value) == f"not a host name: {bad!r}"


@BOTH
def test_the_walk_reaches_each_hosts_deepest_directory_entry(compiled: bool) -> None:
    """A host's walk stops at its deepest directory entry (``WALK_FLOOR`` at least): an
    entry exactly there, or as deep as the floor, is still found."""
    deep = "listed.test/" + "d/" * (WALK_FLOOR + 3)
    floor = "floor.test/" + "f/" * (WALK_FLOOR - 1)
    bl = build([], [deep, "listed.test/e/", floor], compiled=compiled)
    found = Match("url", "u0", digest_of(deep), False)
    assert bl.match("http://listed.test/" + "d/" * (WALK_FLOOR + 3)) == found
    assert bl.match("http://listed.test/" + "d/" * (WALK_FLOOR + 3) + "x.html") == found
    assert bl.match("http://listed.test/" + "d/" * (WALK_FLOOR + 40) + "x.html") == found
    assert bl.match("http://listed.test/" + "d/" * (WALK_FLOOR + 2) + "x.html") is None
    at_floor = Match("url", "u2", digest_of(floor), False)
    assert bl.match("http://floor.test/" + "f/" * (WALK_FLOOR - 1) + "x.html") == at_floor
    assert bl.match("http://www.floor.test/" + "f/" * WALK_FLOOR) == at_floor
    assert bl.match("http://floor.test/" + "f/" * (WALK_FLOOR - 2) + "x.html") is None


def test_a_list_is_compiled_unless_told_and_keeps_its_name_and_meta() -> None:
    bl = Blocklist.from_entries(
        ["listed.test/a.html", Entry("listed.test/b.html", "b", "other")],
        list_name="iwf",
        meta={"source": "feed.test"},
    )
    assert bl._compiled is not None
    assert Blocklist(bl.snapshot)._compiled is not None
    assert Blocklist(bl.snapshot, compiled=False)._compiled is None
    assert Blocklist.from_entries([], compiled=True)._compiled is not None
    assert bl.snapshot.meta["source"] == "feed.test"
    a = digest_of("listed.test/a.html")  # an entry without an id is known by its digest
    assert bl.match("http://listed.test/a.html") == Match("iwf", a, a, False)
    assert bl.match("http://listed.test/b.html") == Match(
        "other", "b", digest_of("listed.test/b.html"), False
    )


@BOTH
def test_a_listed_host_among_removed_decoys_is_found(compiled: bool) -> None:
    """Hosts whose segments ".." removes all continue with the same tail: ``embedded_urls``
    builds one candidate per listed host under them (the matcher's host key), not only the
    first few, so decoys before the listed one do not hide it."""
    bl = build([], ["listed.test/page.html"], compiled=compiled)
    found = Match("url", "u0", digest_of("listed.test/page.html"), True)
    before = "".join(f"/www.h{i}.other.test/.." for i in range(10))
    after = "".join(f"/www.g{i}.other.test/.." for i in range(10))
    url = "http://archive.example.org/web" + before + "/www.listed.test/.." + after
    assert bl.match(url + "/page.html") == found
    assert bl.match(url + "/other.html") is None


@BOTH
def test_each_url_costs_its_exact_lookups(compiled: bool) -> None:
    """The host's suffixes probed once, and on a listed host its expressions: the path, the
    root, the directories down to ``WALK_FLOOR`` or the host's deepest directory entry
    (never fewer: the time a URL takes tells nothing of a host's entries above the floor),
    and the spellings after them. No lookup is made twice, on either road."""
    deep = "deep.test/" + "d/" * (WALK_FLOOR + 3)
    bl = CountingBlocklist.from_entries(["shallow.test/a/", deep], compiled=compiled)
    for url, hosts, digests in [
        ("http://other.test/" + "x/" * 40, 1, 0),
        ("http://a.b.other.test/p.html", 3, 0),
        ("http://a.shallow.test/x/y/p.html", 2, 1 + 1 + 2),
        ("http://shallow.test/" + "x/" * 40 + "p.html", 1, 1 + 1 + WALK_FLOOR - 1),
        ("http://shallow.test/" + "x/" * 40 + "page/", 1, 1 + 1 + WALK_FLOOR - 1 + 1),
        ("http://shallow.test/" + "x/" * 40 + "?q", 1, 2 + 1 + WALK_FLOOR - 1 + 2),
        ("http://deep.test/" + "x/" * 40 + "p.html", 1, 1 + 1 + WALK_FLOOR + 3),
        ("http://user@deep.test/" + "x/" * 40 + "p.html", 1, 1 + 1 + WALK_FLOOR + 3),
    ]:
        bl.reset()
        assert bl.match(url) is None, url
        assert (bl.hosts, bl.digests) == (hosts, digests), url
