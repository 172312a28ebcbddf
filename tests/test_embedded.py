"""Embedded URLs: vectors in the style of the Safe Browsing test vectors, then properties."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.canonical import as_byte_string, canonicalize, unescape, unescape_by_level
from blocklist_addon.urls.embedded import (
    MARKER_WINDOW,
    MAX_CANDIDATE_CHARS,
    _candidates,
    _search,
    embedded_urls,
)
from blocklist_addon.urls.embedded.depth import (
    DEEPEST,
    LEVEL_TABLES,
    RENDER,
    AsciiSlices,
    ascii_candidate,
    depth_of,
)
from blocklist_addon.urls.embedded.markers import MARKER, PLAIN, SKIP_OUTER
from testlab.adversarial import ADVERSARIAL, N

PAGE = "http://listed.test/page.html"


def canonicals(url: str) -> set[str | None]:
    return {canonicalize(c) for c in embedded_urls(url)}


def wrap(inner: str, times: int, prefix: str = "http://redirect.example.net/?u=") -> str:
    for _ in range(times):
        inner = prefix + quote(inner, safe="")
    return inner


# input -> exactly these candidates, in this order
EXACT = [
    # no marker: ordinary URLs give nothing
    ("http://www.example.com/a/b.html?q=cats&page=2", []),
    ("https://example.com/", []),
    ("https://example.com", []),
    ("http://www.example.com/search?q=cats+and+dogs&hl=en&start=10#results", []),
    ("http://www.example.com/images/2020/photo.jpg?w=640&h=480&fit=crop", []),
    ("http://www.example.com/a%20b/c%C3%A9.html?x=%E2%9C%93&y=%2541", []),
    ("http://www.example.com/app.js?v=1.2.3", []),
    ("http://www.example.com/time?at=12:30&tz=utc", []),
    ("http://www.example.com/path;jsessionid=ABC123?x=1", []),
    ("http://user:pw@www.example.com:8080/wiki/Main_Page?action=view", []),
    ("http://192.0.2.1/a?b=c", []),
    ("http://[2001:db8::1]/a?b=c", []),
    ("http://example.com/?empty=&flag&x=", []),
    ("http://www.awwwards.example.com/wow", []),
    # the URL itself is not embedded in itself
    (PAGE, []),
    ("http://www.listed.test/page.html", []),
    ("listed.test/page.html", []),
    # archive: embedded in the path; the outer "?" may belong to it or not
    ("http://archive.example.org/web/2020/http://listed.test/page.html", [PAGE]),
    (
        "http://archive.example.org/web/2020/http://listed.test/view.php?id=5",
        ["http://listed.test/view.php?id=5", "http://listed.test/view.php"],
    ),
    # the "&" ambiguity: both readings
    (
        "http://r.example.net/?u=http://listed.test/p.html?id=5&x=1",
        ["http://listed.test/p.html?id=5&x=1", "http://listed.test/p.html?id=5"],
    ),
    # encoded once: its own "&" was %26, the outer one was not, so it is read whole and
    # ends at the outer one (issue 15.7: "?id=5" alone would be another URL)
    (
        "http://r.example.net/?u=http%3A%2F%2Flisted.test%2Fp.php%3Fid%3D5%26x%3D1&utm=2",
        ["http://listed.test/p.php?id=5&x=1"],
    ),
    # an escaped "?" in the embedded URL's path stays escaped (issue 15.2)
    (
        "http://r.example.net/?u=http%3A%2F%2Flisted.test%2Fx%253F%2F..%2Fp.html",
        ["http://listed.test/x%3F/../p.html"],
    ),
    # ... and one escaped once in a raw parameter value is escaped in the URL as written,
    # but the redirector decodes its parameter before it redirects: both readings
    (
        "http://r.example.net/?u=http://listed.test/x%3F/../p.html",
        ["http://listed.test/x%3F/../p.html", "http://listed.test/x?/../p.html"],
    ),
    # a "+" in the outer path is a "+", also encoded with the embedded URL's own "/"
    ("http://r.example.net/out/%2F%2Flisted.test%2Fa%2Bb.html", ["listed.test/a+b.html"]),
    # "+" is a space to a form decoder (issue 15.4), a literal "+" was %2B
    (
        "http://r.example.net/?u=http%3A%2F%2Flisted.test%2Fmy+file%2B1.html",
        ["http://listed.test/my+file+1.html", "http://listed.test/my file+1.html"],
    ),
    (
        "http://archive.example.org/web/2020/http://listed.test/a+b.html",
        ["http://listed.test/a+b.html"],
    ),
    # an escaped "#" stays in the embedded path too
    (
        "http://r.example.net/?u=http%3A%2F%2Flisted.test%2Fa%2523b.html%23top",
        ["http://listed.test/a%23b.html#top"],
    ),
    # a www. right after the scheme is part of the scheme marker, not a second candidate
    ("http://r.example.net/?u=http://www.listed.test/p", ["http://www.listed.test/p"]),
    ("http://r.example.net/?u=www.listed.test/p", ["www.listed.test/p"]),
    ("http://r.example.net/?url=listed.test/page.html", ["listed.test/page.html"]),
    ("http://r.example.net/?url=//listed.test/page.html", ["//listed.test/page.html"]),
    # decided: a file name that looks like host.tld is a candidate (.zip is a real TLD);
    # a file name elsewhere in the path is not
    ("http://www.example.com/get?file=report.pdf", ["report.pdf"]),
    ("http://www.example.com/get?file=archive.zip&x=1", ["archive.zip&x=1", "archive.zip"]),
    ("http://www.example.com/files/report.pdf", []),
    # unescaped bytes >= 0x80 go back as %XX, so parse() reads the same bytes
    (
        "http://r.example.net/?u=http%3A%2F%2Flisted.test%2F%C3%A9t%C3%A9.html",
        ["http://listed.test/%C3%A9t%C3%A9.html"],
    ),
]


@pytest.mark.parametrize(("url", "expected"), EXACT)
def test_exact(url: str, expected: list[str]) -> None:
    assert embedded_urls(url) == expected


# input -> some candidate canonicalizes to this
CONTAINS = [
    ("http://archive.example.org/web/2020/http://listed.test/page.html", PAGE),
    ("http://archive.example.org/web/20200101000000/www.listed.test/page.html", None),
    ("http://translate.example.com/translate?sl=auto&tl=en&u=http://listed.test/page.html", PAGE),
    ("http://redirect.example.net/out?url=http%3A%2F%2Flisted.test%2Fpage.html", PAGE),
    ("http://search.example.com/search?q=http%3A%2F%2Flisted.test%2Fpage.html", PAGE),
    (
        "https://login.example.com/?next=https://listed.test/page.html",
        "https://listed.test/page.html",
    ),
    ("http://app.example.com/#/go?url=http://listed.test/page.html", PAGE),
    ("http://app.example.com/page#u=listed.test/page.html", PAGE),
    ("http://r.example.net/go?to=listed.test/page.html&from=home", PAGE),
    ("http://r.example.net/go?site=listed.test", "http://listed.test/"),
    ("http://r.example.net/go?site=listed.test.", "http://listed.test/"),
    ("http://r.example.net/go?url=listed.test:8080/page.html", PAGE),
    ("http://r.example.net/go?url=192.0.2.7/page.html", "http://192.0.2.7/page.html"),
    ("http://r.example.net/go?u=//listed.test/page.html", PAGE),
    ("http://r.example.net/go?u=\\\\listed.test\\page.html", PAGE),
    ("http://r.example.net/go?u=/\\listed.test/page.html", PAGE),
    ("http://r.example.net/go?u=http:\\\\listed.test\\page.html", PAGE),
    ("http://r.example.net/go?u=http:/listed.test/page.html", PAGE),
    ("http://r.example.net/go?u=https:///listed.test/page.html", "https://listed.test/page.html"),
    ("http://r.example.net/go?u=HtTp://LISTED.test/page.html", PAGE),
    ("http://r.example.net/go?u=HTTP%3a%2f%2flisted.test%2fpage.html", PAGE),
    ("http://r.example.net/go?u=WWW.Listed.Test/page.html", "http://www.listed.test/page.html"),
    ("http://r.example.net/go?u=www2.listed.test/page.html", "http://www2.listed.test/page.html"),
    ("http://r.example.net/go/http%3A%2F%2Flisted.test%2Fpage.html", PAGE),
    ("http://r.example.net%2Fgo%3Fu%3Dhttp%3A%2F%2Flisted.test%2Fpage.html", PAGE),
    ("http://r.example.net/go?u=http%3A%2F%2F%C3%A9xample.test%2F", "http://xn--xample-9ua.test/"),
    (
        "http://r.example.net/go?u=http://listed.test/été.html",
        "http://listed.test/%C3%A9t%C3%A9.html",
    ),
    ("http://r.example.net/go?u=http%" + "25" * 50 + "3A%2F%2Flisted.test%2Fpage.html", PAGE),
]


#: The other candidates of the rows of CONTAINS and LENIENT_AND_WRAPPED that give more than
#: the one named (by a part of the URL): the wrapper's own parameter or "__;..." read as part
#: of the URL too, the outer wrapper of a nested one, a query kept.
ALSO = [
    ("?to=listed.test/page.html&from=home", {"http://listed.test/page.html&from=home"}),
    ("i0.cdn.example/listed.test/page.html?w=300", {"http://listed.test/page.html?w=300"}),
    ("v3/__http://listed.test/page.html__;", {"http://listed.test/page.html__;!!Ab1$"}),
    ("a*20b.html__;JQ!!", {"http://listed.test/a*20b.html__;JQ!!Ab1$"}),
    ("**Aa.html__;JTI!!", {"http://listed.test/**Aa.html__;JTI!!Ab1$"}),
    (
        "u=http%3A%2F%2Fr2.example.net%2Fgo%2FaHR0cDovL2xpc3RlZC50ZXN0L3BhZ2U",
        {"http://r2.example.net/go/aHR0cDovL2xpc3RlZC50ZXN0L3BhZ2UuaHRtbA=="},
    ),
    (
        "u=aHR0cDovL3IyLmV4YW1wbGUubmV0Lz91PWh0dHAlM0ElMkYlMkZsaXN0ZWQudGVzdC",
        {"http://r2.example.net/?u=http://listed.test/page.html"},
    ),
]


def exactly(url: str, expected: str) -> set[str | None]:
    """What ``canonicals(url)`` must be: ``expected`` and the row's ALSO."""
    return {expected, *next((also for part, also in ALSO if part in url), set())}


@pytest.mark.parametrize(("url", "expected"), CONTAINS)
def test_contains(url: str, expected: str | None) -> None:
    expected = expected or "http://www.listed.test/page.html"
    assert canonicals(url) == exactly(url, expected)


B64 = base64.b64encode(PAGE.encode()).decode()
B64URL = base64.urlsafe_b64encode(b"https://listed.test/page.html?a=~~~").decode()
# issue 15.5: a redirect target as browsers read it (WHATWG URL), and 15.6: wrappers that
# carry the host in the path or in another encoding: input -> a candidate's canonical form
LENIENT_AND_WRAPPED = [
    # leading C0 controls and spaces, tabs and newlines anywhere
    ("http://r.example.net/?u=%20//listed.test/page.html", PAGE),
    ("http://r.example.net/?u=%01%20//listed.test/page.html", PAGE),
    ("http://r.example.net/?u=%20listed.test/page.html", PAGE),
    ("http://r.example.net/?u=ht%09tp://listed.test/page.html", PAGE),
    ("http://r.example.net/?u=http:%0A//listed.test/pa%0Dge.html", PAGE),
    ("http://r.example.net/out/%09/listed.test/page.html", PAGE),
    # a scheme without slashes, a number for a host
    ("http://r.example.net/?u=https:listed.test/page.html", "https://listed.test/page.html"),
    ("http://r.example.net/?u=http:3405803783/a.jpg", "http://203.0.113.7/a.jpg"),
    ("http://r.example.net/?u=http%3A3405803783%2Fa.jpg", "http://203.0.113.7/a.jpg"),
    # protocol-relative in a path, escaped or with backslashes
    ("http://r.example.net/out/%2F%2Flisted.test%2Fpage.html", PAGE),
    ("http://r.example.net/out//listed.test/page.html", PAGE),
    ("http://r.example.net/out/\\\\listed.test\\page.html", PAGE),
    ("http://r.example.net/out//[2001:db8::7]/a.jpg", "http://[2001:db8::7]/a.jpg"),
    # ideographic, full-width and halfwidth full stops in a bare host
    ("http://r.example.net/?u=listed\u3002test/page.html", PAGE),
    (
        "http://r.example.net/?u=www\uff0elisted\uff0etest/page.html",
        "http://www.listed.test/page.html",
    ),
    ("http://r.example.net/?u=listed%EF%BD%A1test/page.html", PAGE),
    ("http://r.example.net/c/s/listed\u3002test/page.html", PAGE),
    # AMP caches and viewers, image CDNs, Thumbor, media proxies, generic proxies
    ("https://a-b.cdn.ampproject.example/c/s/listed.test/page.html", PAGE),
    ("https://a-b.cdn.ampproject.example/i/s/listed.test/page.html", PAGE),
    ("https://a-b.cdn.ampproject.example/c/listed.test/page.html", PAGE),
    ("https://www.google.example/amp/s/listed.test/page.html", PAGE),
    ("https://i0.cdn.example/listed.test/page.html?w=300", PAGE),
    ("https://i0.cdn.example/listed.test:8080/page.html", PAGE),
    ("https://t.example/unsafe/300x200/smart/filters:blur(7)/listed.test/page.html", PAGE),
    ("https://m.example/external/Zx9_k2Ab/https/listed.test/page.html", PAGE),
    ("https://m.example/external/Zx9_k2Ab/http/192.0.2.7/a.jpg", "http://192.0.2.7/a.jpg"),
    ("https://p.example/proxy/listed.test/page.html", PAGE),
    # Proofpoint URL Defense v2 and v3
    ("https://urldefense.example/v2/url?u=http-3A__listed.test_page.html&d=DwMF&c=x", PAGE),
    (
        "https://urldefense.example/v2/url?u=https-3A__listed.test_view.php-3Fid-3D5-26a-3Db&d=x",
        "https://listed.test/view.php?id=5&a=b",
    ),
    ("https://urldefense.example/v3/__http://listed.test/page.html__;!!Ab1$", PAGE),
    (
        "https://urldefense.example/v3/__http://listed.test/a*20b.html__;JQ!!Ab1$",
        "http://listed.test/a%20b.html",
    ),
    (
        "https://urldefense.example/v3/__http://listed.test/**Aa.html__;JTI!!Ab1$",
        "http://listed.test/*.html",
    ),
    # base64 and base64url, as a parameter or a path segment, and hex (camo)
    ("http://r.example.net/?u=" + B64, PAGE),
    ("http://r.example.net/?u=" + quote(B64, safe=""), PAGE),
    ("http://r.example.net/?u=" + B64.rstrip("="), PAGE),
    ("http://r.example.net/go/" + B64URL + "/more", "https://listed.test/page.html?a=~~~"),
    ("http://r.example.net/?u=" + base64.b64encode(b"HTTP://listed.test/page.html").decode(), PAGE),
    ("https://camo.example/5f1d0e/" + PAGE.encode().hex(), PAGE),
    ("https://camo.example/5f1d0e?url=" + PAGE.encode().hex().upper(), PAGE),
    # Google's cache: operator
    ("http://search.example/search?q=cache:listed.test/page.html", PAGE),
    ("http://search.example/search?q=cache:http://listed.test/page.html", PAGE),
    ("http://search.example/search?q=cache%3Alisted.test%2Fpage.html&hl=en", PAGE),
    # nested: an encoded URL inside an encoded URL
    ("http://r.example.net/?u=" + quote("http://r2.example.net/go/" + B64, safe=""), PAGE),
    (
        "http://r.example.net/?u="
        + base64.b64encode(("http://r2.example.net/?u=" + quote(PAGE, safe="")).encode()).decode(),
        PAGE,
    ),
]


@pytest.mark.parametrize(("url", "expected"), LENIENT_AND_WRAPPED)
def test_lenient_and_wrapped(url: str, expected: str) -> None:
    assert canonicals(url) == exactly(url, expected)


# A mere mention of a host is no fetch of a page: without a path after it, a host in a path
# segment is no candidate (a tag page, a WHOIS query); as a parameter value it gives the
# host's root only, which only a whole-host entry blocks.
MENTIONS = [
    "http://whois.example/listed.test",
    "http://blog.example/tag/listed.test",
    "http://blog.example/tag/listed.test?page=2",
    "http://stats.example/site/listed.test#traffic",
    "http://search.example/search?q=site:listed.test",
    "http://search.example/search?q=listed.test+page.html",
]


@pytest.mark.parametrize("url", MENTIONS)
def test_mentions_give_no_page(url: str) -> None:
    assert embedded_urls(url) == []


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "inner",
    [PAGE, "http://listed.test/view.php?id=5", "http://listed.test/view.php?id=5&size=big"],
)
def test_nested_each_level_encoded_once_more(inner: str, levels: int) -> None:
    url = wrap(inner, levels)
    assert url.count("%25") >= (levels - 1) * 4  # really nested
    # the URL and each wrapper inside the outermost, whole
    every_level = {canonicalize(wrap(inner, k)) for k in range(levels)}
    assert canonicals(url) == every_level
    # with a parameter after it at the outermost level the exact query is still there
    assert canonicals(url + "&utm_source=mail") == every_level


def test_nested_mixed_wrappers() -> None:
    translated = "http://translate.example.com/?sl=auto&u=" + quote(PAGE, safe="")
    archived = "http://archive.example.org/web/2020/" + translated
    url = "http://redirect.example.net/out?to=" + quote(archived, safe="") + "&ref=mail"
    found = canonicals(url)
    assert found == {
        canonicalize(PAGE),
        canonicalize(translated),
        canonicalize(archived),
        "http://translate.example.com/?sl=auto",  # (cut at the translator's own "&")
    }


@pytest.mark.parametrize("inner", [PAGE, "http://listed.test/view.php?id=5&size=big"])
def test_found_whole_when_every_level_adds_parameters(inner: str) -> None:
    url = inner
    levels = [url]
    for level in range(4):
        url = f"http://r{level}.example.net/?u={quote(url, safe='')}&level={level}"
        levels.append(url)
    found = canonicals(url)
    assert found == {canonicalize(level) for level in levels[:-1]}
    # its own query is never cut short, nor continued with a wrapper's parameters
    assert not any(c and c.startswith(inner) and c != canonicalize(inner) for c in found)
    assert canonicalize("http://listed.test/view.php?id=5") not in found


def test_not_a_string_gives_nothing() -> None:
    assert embedded_urls(None) == []  # type: ignore[arg-type]
    assert embedded_urls(b"http://r.example.net/?u=http://listed.test/") == ["http://listed.test/"]


# -- bounds: every marker is looked at, output stays linear -------------------------------


def assert_bounded(url: str, out: list[str]) -> None:
    n = len(as_byte_string(url))
    assert len(out) <= 4 * n
    assert all(len(c) <= 3 * MAX_CANDIDATE_CHARS for c in out)
    assert sum(map(len, out)) <= 3 * 6 * MARKER_WINDOW * (MARKER_WINDOW + 2) * n
    assert len(set(out)) == len(out)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_64k_is_bounded(name: str) -> None:
    url = ADVERSARIAL[name]
    assert_bounded(url, embedded_urls(url))


def test_a_candidate_cut_inside_its_host_is_not_one() -> None:
    """The window or the length cap cutting a candidate inside its authority leaves no host
    (the text goes on): such a candidate is dropped, where each of its host's suffixes was a
    lookup for nothing (nine for each bare value of bench/adversarial.py's "bare values").
    One that runs to the end of the text, or to a delimiter, is kept."""
    values = "".join(f"a=h{i}.test&" for i in range(10))
    runs = [f"h{i}.test&" + "".join(f"a=h{j}.test&" for j in range(i + 1, 10)) for i in range(10)]
    shorts = [f"h{i}.test" for i in range(10)]
    assert embedded_urls("http://r.example.net/?" + values) == [
        "h0.test",
        "h1.test",
        *(c for pair in zip(runs[2:], shorts[2:], strict=True) for c in pair),
    ]
    assert embedded_urls("http://r.example.net/?" + values + "z/")[2] == runs[2] + "z/"
    assert embedded_urls("http://r.example.net/?u=http://" + "a." * 5000 + "listed.test/x") == []
    assert embedded_urls("http://r.example.net/?u=http://a&b.test/x&v=1") == [
        "http://a&b.test/x&v=1",
        "http://a",
        "b.test/x&v=1",
        "b.test/x",
    ]


def test_listed_url_after_thousands_of_markers_is_found() -> None:
    decoys = "".join(f"a{i}=http://h{i}.test/x&b{i}=www.w{i}.test&" for i in range(1500))
    url = f"http://r.example.net/?{decoys}u={quote(PAGE, safe='')}&{decoys}"
    assert len(url) > N
    assert canonicalize(PAGE) in canonicals(url)


def test_candidate_is_cut_at_max_length_but_keeps_host_and_path() -> None:
    out = embedded_urls(ADVERSARIAL["long path"])
    assert [len(c) for c in out] == [MAX_CANDIDATE_CHARS]
    assert out[0].startswith("http://listed.test/aaaa")


def test_candidate_is_cut_at_the_marker_window() -> None:
    hosts = [f"http://h{i}.test/" for i in range(MARKER_WINDOW + 2)]
    out = embedded_urls("http://r.example.net/?u=" + "".join(hosts))
    assert out[0] == "".join(hosts[:MARKER_WINDOW])
    assert out[-1] == hosts[-1]


# -- padding with dot segments that hold markers (issue 15.3) -----------------------------

PADS = ["/www.a/..", "/http:/..", "/=b.test/..", "/www.a/www.b/../..", "/../www.a/..", "/x.test/.."]
WRAPS = [
    lambda inner: "http://r.example.net/?u=" + inner,
    lambda inner: "http://r.example.net/?u=" + quote(inner, safe=""),
    lambda inner: "http://r.example.net/?u=" + quote(inner, safe="") + "&x=1",
    lambda inner: "http://archive.example.org/web/2020/" + inner,
    lambda inner: (
        "http://r2.example.net/?u="
        + quote("http://r.example.net/?u=" + quote(inner, safe="") + "&y=1", safe="")
        + "&x=1"
    ),
]


@pytest.mark.parametrize("wrap_at", range(len(WRAPS)))
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("host", ["http://listed.test", "listed.test", "//listed.test"])
def test_padding_with_removed_markers_does_not_hide_the_path(
    host: str, pad: str, wrap_at: int
) -> None:
    if wrap_at == 3:  # an archive path holds the scheme form
        host = "http://listed.test"
    inner = host + pad * (2 * MARKER_WINDOW + 1) + "/page.html"
    assert canonicalize(PAGE) in canonicals(WRAPS[wrap_at](inner))


def test_a_host_removed_by_dot_segments_keeps_its_resolved_path() -> None:
    inner = "www.listed.test" + "/../www.a" * (2 * MARKER_WINDOW) + "/../page.html"
    found = canonicals("http://archive.example.org/web/2020/" + inner)
    assert found == {
        "http://www.listed.test/page.html",
        "http://www.listed.test/",
        "http://www.a/page.html",
        "http://www.a/",
    }


def test_padding_keeps_the_query_reading() -> None:
    inner = "http://listed.test" + "/www.a/.." * 20 + "/view.php?id=5"
    found = canonicals("http://r.example.net/?u=" + inner + "&x=1")
    assert found == {
        "http://listed.test/view.php?id=5",
        "http://listed.test/view.php?id=5&x=1",
        "http://listed.test/",
        "http://www.a/view.php?id=5",
        "http://www.a/view.php?id=5&x=1",
        "http://www.a/",
    }


def test_removed_hosts_sharing_a_long_tail_are_built_once_per_key() -> None:
    """Thousands of hosts whose segments ".." removes all continue with the same tail:
    the matcher's host key builds one candidate per listed host, not per host."""
    from blocklist_addon import Blocklist
    from blocklist_addon.urls.matcher import Match
    from blocklist_addon.urls.snapshot import expression_digest

    bl = Blocklist.from_entries([PAGE])
    decoys = "".join(f"/www.h{i}.listed.test/.." for i in range(2000))
    target = "/http:/listed.test" + "/www.a/.." * 40 + "/page.html"
    url = "http://archive.example.org/web" + decoys + "/" + "a" * 6000 + target
    out = embedded_urls(url, host_key=bl._host_key)
    assert_bounded(url, out)
    assert sum(map(len, out)) < 40 * len(url)
    digest = expression_digest("listed.test/page.html").hex()
    assert bl.match(url) == Match("default", digest, digest, embedded=True)
    assert bl.match(url.replace("page.html", "other.html")) is None


# -- properties ----------------------------------------------------------------------------

URLISH = st.text(alphabet="%253aAfF/\\:?&=#.wWhHtTpPsS x0é\x00", max_size=60)
ANY_INPUT = st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")), URLISH)


@given(ANY_INPUT)
def test_total_and_candidates_are_unescaped_substrings(url: str) -> None:
    """(Inputs this short have too few markers for the resolved reading, whose candidates
    are a host and the text after it with dot segments removed.)"""
    out = embedded_urls(url)
    assert isinstance(out, list)
    text = unescape(as_byte_string(url))
    for candidate in out:
        assert isinstance(candidate, str)
        assert candidate.isascii()
        assert unescape(candidate) in text
        canonicalize(candidate)  # accepted: never raises
    assert_bounded(url, out)


@given(ANY_INPUT)
def test_levels_decode_exactly_what_unescape_decodes(url: str) -> None:
    raw = as_byte_string(url)
    tagged = unescape_by_level(raw, LEVEL_TABLES)
    assert tagged.translate(RENDER[DEEPEST]) == unescape(raw)


@pytest.mark.parametrize("times", range(DEEPEST + 3))
@pytest.mark.parametrize("char", "&?#+/\\:=")
def test_level_is_how_often_a_character_was_encoded(char: str, times: int) -> None:
    encoded = char
    for _ in range(times):
        encoded = quote(encoded, safe="")
    tagged = unescape_by_level("a" + encoded + "b", LEVEL_TABLES)
    assert len(tagged) == 3
    assert depth_of(tagged[1]) == min(times, DEEPEST)


@given(st.text(alphabet="253aAfF/\\:?&=#.wWhHtTpPsSlL x0%", max_size=60))
def test_plain_means_no_marker(url: str) -> None:
    """The fast path returns [] only where the full search finds nothing."""
    if PLAIN.fullmatch(url):
        assert MARKER.search(url, SKIP_OUTER.match(url).end()) is None


#: Pieces of every marker and encoded-URL trigger, and of what comes near them.
TOKENS = st.sampled_from(
    [
        *"/\\:?&=#.%-_[]@ \t\x01wWhHtTpPsSeEcCaAxX019",
        *["http:", "https:", "HtTpS:", "//", "www.", "ww", "cache:", "a.com", ".co", ".xn--p1ai"],
        *[
            "1.2.3.4",
            "192.0.2.7/",
            ":8080",
            "[::1]",
            "[2001:db8::7]",
            "aHR0cDov",
            "SFRUUHM6",
            "aFR",
        ],
        *["68747470", "687474703a2f2f", "4854545053", "http-3A__", "__http:", "__;!", "x.test"],
        *["\xe3\x80\x82", "\xef\xbc\x8e", "\xef\xbd\xa1", "\xc3\xa9", "%2F", "%3A", "%2e"],
        *["%20", "%2520", "%20%20", "%09", "=%20", "a%20"],
    ]
)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(["http://r.example/", "https://r.example/a?", ""]),
    st.lists(TOKENS, max_size=12),
)
@example("https://r.example/a?", [" ", "%20", "a.com"])  # a space, an escaped one, a host
def test_plain_means_nothing_to_find(outer: str, tokens: list[str]) -> None:
    """Where the fast path answers [], the full search finds no marker (nor URL written in
    another encoding) and no candidate at all."""
    url = outer + "".join(tokens)
    if PLAIN.fullmatch(url):
        start = SKIP_OUTER.match(url).end()
        assert MARKER.search(url, start) is None
        found: dict[str, None] = {}
        assert not _candidates(found, url, None)  # nothing decoded to search again
        assert not found


#: URLs that carry a URL, each one the full search finds.
CARRIERS = [
    "http://r.example.net/web/http://listed.test/page.html",
    "http://r.example.net/out?u=http://listed.test/page.html&x=1",
    "http://r.example.net/c/s/listed.test/page.html",
    "http://r.example.net/go?q=a b&u=//listed.test/",
    "http://r.example.net/a/www.listed.test/",
    "http://r.example.net/?u= listed.test/x",
]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(CARRIERS), st.data())
def test_plain_refuses_every_escaped_spelling_of_a_carrier(url: str, data: st.DataObject) -> None:
    """Escaping any characters of a URL that carries one (once or twice, as %20 for a
    space) leaves it to the full search: the fast path reads escapes only as spaces."""
    assert embedded_urls(url)
    chars = []
    for ch in url[len("http://r.example.net") :]:
        times = data.draw(st.integers(0, 2))
        for _ in range(times):
            ch = quote(ch, safe="")
        chars.append(ch)
    escaped = "http://r.example.net" + "".join(chars)
    assert unescape(escaped) == url
    assert not PLAIN.fullmatch(escaped)
    assert embedded_urls(escaped)


@given(st.sampled_from(["http://", "https://", "HTTP://", "http:/", "http:\\\\", "//", "www."]))
def test_plain_rejects_every_marker_kind(marker: str) -> None:
    assert not PLAIN.fullmatch(f"http://r.example.net/?u={marker}listed.test/")


LABEL = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
INNER = st.builds(
    "{}://{}{}.{}/{}{}".format,
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["", "www."]),
    LABEL,
    st.sampled_from(["test", "example.com", "example.net", "example.org"]),
    st.lists(LABEL, max_size=3).map(lambda parts: "".join(p + "/" for p in parts)),
    st.one_of(
        st.just(""),
        LABEL.map(lambda name: name + ".html"),
        st.lists(st.tuples(LABEL, LABEL), min_size=1, max_size=3).map(
            lambda kv: "view.php?" + "&".join(f"{k}={v}" for k, v in kv)
        ),
    ),
)
WRAPPER = st.sampled_from(
    [
        "http://redirect.example.net/?u=",
        "https://translate.example.com/translate?sl=auto&tl=en&u=",
        "http://search.example.org/search?q=",
        "http://archive.example.org/web/2020/",
    ]
)


@given(INNER, st.integers(1, 5), WRAPPER, st.booleans())
def test_nested_wrapping_is_found(inner: str, times: int, prefix: str, trailing: bool) -> None:
    url = wrap(inner, times, prefix) + ("&utm=1" if trailing else "")
    assert canonicalize(inner) in canonicals(url)


# -- candidates written in ASCII: one conversion of the text, the same strings -------------

#: Pieces of hosts in paths and values written with the full stops browsers map to "." (and
#: escaped), full-width letters, other bytes >= 0x80, and the markers and delimiters near them.
WIDE_TOKENS = st.sampled_from(
    [
        *["\u3002", "\uff0e", "\uff61", "/h\u3002test", "/h\uff0etest/", "/\uff48\u3002test"],
        *["www\u3002", "=h\uff61test&", "/\u00e9\u3002test", "\u2603", "\uff48\uff54\uff54\uff50"],
        *["%E3%80%82", "%EF%BC%8E", "%25E3%2580%2582", "%C3%A9", "%FF", "\udc80", "\xe9"],
        *["http://", "https:", "//", "www.", "a.test", "listed.test/", "u=", "?", "&", "=", "#"],
        *["+", "%2B", "%2F", "%3F", "%26", "%252F", "/", "/../", "@", "/tag/", "cache:", "x"],
    ]
)
WIDE_URLS = st.builds(
    "{}{}".format,
    st.sampled_from(["http://r.example.net/?u=", "http://r.example.net/", "http://a.test/?", ""]),
    st.lists(st.tuples(WIDE_TOKENS, st.integers(1, 12)), max_size=16).map(
        lambda parts: "".join(token * k for token, k in parts)
    ),
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(WIDE_URLS, ANY_INPUT))
def test_candidates_cut_from_one_conversion_are_the_reference(url: str) -> None:
    """The candidates of a text with bytes >= 0x80 are slices of one ASCII conversion of
    the text (AsciiSlices); the reference converts each candidate by itself, as the search
    did before: the same list, in the same order."""
    assert embedded_urls(url) == _search(url, None, whole_text=False)


@given(st.text(alphabet="a/.%?\x80\xe3\x82\xff\u0100", max_size=40), st.data())
def test_a_slice_of_the_conversion_is_the_slice_converted(text: str, data: st.DataObject) -> None:
    """Also from and to the middle of a run of bytes >= 0x80, and beside a character above
    latin-1 (written as itself, as ascii_candidate writes it)."""
    slices = AsciiSlices(text)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert slices.of(start, end) == ascii_candidate(text[start:end])
    assert slices.of(0, len(text)) == ascii_candidate(text)
