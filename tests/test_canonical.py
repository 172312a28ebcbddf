"""Tests for Safe Browsing canonicalization and expressions (blocklist_addon.urls.canonical).

Three kinds of evidence: the spec's own published vectors, our evasion and near-miss tables
("No evasion", "No collateral damage"), and hypothesis properties (total, idempotent,
bounded, the linear unescape is the spec's repeated unescape).

Outside the spec's vectors, which keep the spec's host names verbatim, only reserved names
appear here (example.com/.net/.org, *.test, *.invalid and the documentation IP ranges).
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.canonical import (
    _ESCAPES,
    _HOST_NEEDS_ESCAPE,
    _NEEDS_ESCAPE,
    _PATH_NEEDS_ESCAPE,
    MAX_DNS_NAME,
    MAX_SB_HOSTS,
    MAX_SB_PREFIXES,
    Canonical,
    _escapes,
    canonical_host,
    canonicalize,
    dns_suffixes,
    expressions,
    host_suffixes,
    parse,
    path_prefixes,
    unescape,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- 1. the spec's vectors ---------------------------------------------------------------

# Safe Browsing "URLs and Hashing", canonicalization examples: input -> canonical URL.
SPEC_VECTORS = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    (
        "http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
        "http://168.188.99.26/.secure/www.ebay.com/",
    ),
    (
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
    ),
    (
        "http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
        "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+",
    ),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "http://www.google.com/"),
    ("www.google.com", "http://www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q?"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    (b"http://\x01\x80.com/", "http://%01%80.com/"),  # bytes: one byte per character
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
    ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
]


@pytest.mark.parametrize(("url", "expected"), SPEC_VECTORS)
def test_spec_vector(url: str | bytes, expected: str) -> None:
    assert canonicalize(url) == expected
    # A canonical URL is its own canonical form.
    assert canonicalize(expected) == expected


# Safe Browsing "URLs and Hashing", suffix/prefix expression examples.
SPEC_EXPRESSIONS = [
    (
        "http://a.b.c/1/2.html?param=1",
        {
            "a.b.c/1/2.html?param=1",
            "a.b.c/1/2.html",
            "a.b.c/",
            "a.b.c/1/",
            "b.c/1/2.html?param=1",
            "b.c/1/2.html",
            "b.c/",
            "b.c/1/",
        },
    ),
    (
        "http://a.b.c.d.e.f.g/1.html",
        {
            "a.b.c.d.e.f.g/1.html",
            "a.b.c.d.e.f.g/",
            "c.d.e.f.g/1.html",
            "c.d.e.f.g/",
            "d.e.f.g/1.html",
            "d.e.f.g/",
            "e.f.g/1.html",
            "e.f.g/",
            "f.g/1.html",
            "f.g/",
        },
    ),
    ("http://1.2.3.4/1/", {"1.2.3.4/1/", "1.2.3.4/"}),
]


@pytest.mark.parametrize(("url", "expected"), SPEC_EXPRESSIONS)
def test_spec_expressions(url: str, expected: set[str]) -> None:
    got = expressions(url)
    assert set(got) == expected
    assert len(got) == len(expected)  # no duplicates


def test_expressions_most_specific_first() -> None:
    got = expressions("http://a.b.c/1/2.html?param=1")
    assert got[0] == "a.b.c/1/2.html?param=1"
    assert got[1] == "a.b.c/1/2.html"


def test_expression_count_limits() -> None:
    url = "http://a.b.c.d.e.f.g.h.example.com/1/2/3/4/5/6/7.html?q=1"
    got = expressions(url)
    hosts = {e.split("/", 1)[0] for e in got}
    paths = {"/" + e.split("/", 1)[1] for e in got}
    assert hosts == {
        "a.b.c.d.e.f.g.h.example.com",
        "f.g.h.example.com",
        "g.h.example.com",
        "h.example.com",
        "example.com",
    }
    assert paths == {
        "/1/2/3/4/5/6/7.html?q=1",
        "/1/2/3/4/5/6/7.html",
        "/",
        "/1/",
        "/1/2/",
        "/1/2/3/",
    }
    assert len(got) == MAX_SB_HOSTS * (MAX_SB_PREFIXES + 2) == 30


def test_host_suffixes_limits() -> None:
    host = "a.b.c.d.e.f.g"
    assert host_suffixes(host, False) == [host, "c.d.e.f.g", "d.e.f.g", "e.f.g", "f.g"]
    assert host_suffixes(host, False, limit=None) == [
        host,
        "b.c.d.e.f.g",
        "c.d.e.f.g",
        "d.e.f.g",
        "e.f.g",
        "f.g",
    ]
    assert host_suffixes("example.com", False) == ["example.com"]
    assert host_suffixes("www.example.com", False) == ["www.example.com", "example.com"]
    assert host_suffixes("localhost", False) == ["localhost"]
    # An IP address has no suffixes, however many dots it has.
    assert host_suffixes("192.0.2.1", True, limit=None) == ["192.0.2.1"]
    assert host_suffixes("[2001:db8::1]", True) == ["[2001:db8::1]"]


def test_path_prefixes_limits() -> None:
    path = "/1/2/3/4/5/6.html"
    assert path_prefixes(path, "q=1") == [f"{path}?q=1", path, "/", "/1/", "/1/2/", "/1/2/3/"]
    assert path_prefixes(path, None, limit=None) == [
        path,
        "/",
        "/1/",
        "/1/2/",
        "/1/2/3/",
        "/1/2/3/4/",
        "/1/2/3/4/5/",
    ]
    # A directory is its own exact path and is not repeated as a prefix.
    assert path_prefixes("/1/2/", None) == ["/1/2/", "/", "/1/"]
    assert path_prefixes("/", None) == ["/"]
    assert path_prefixes("/", "") == ["/?", "/"]  # an empty query is still a query


def test_unlimited_expressions_are_every_suffix_and_prefix() -> None:
    c = parse("http://a.b.c.d.e.f.g.example.com/1/2/3/4/5/6/page.html")
    assert c is not None
    assert len(host_suffixes(c.host, c.is_ip, limit=None)) == 8  # exact + 7 of 2+ labels
    assert len(path_prefixes(c.path, c.query, limit=None)) == 1 + 7  # exact + 7 dirs


# -- 2. evasions: every spelling of a listed URL canonicalizes to the plain one -----------

PAGE = "http://www.example.com/dir/page.html"
IP_PAGE = "http://192.0.2.1/page.html"
V6_PAGE = "http://[2001:db8::1]/page.html"
IDN_PAGE = "http://xn--bcher-kva.test/page.html"  # bücher.test

EVASIONS = [
    # case in scheme and host
    ("HTTP://WWW.EXAMPLE.COM/dir/page.html", PAGE),
    ("hTTp://Www.ExAmPlE.cOm/dir/page.html", PAGE),
    # percent-encoding: host (letters and dots), path characters, slashes, multiply
    ("http://%77%77%77%2E%65%78%61%6D%70%6C%65%2E%63%6F%6D/dir/page.html", PAGE),
    ("http://www%2eexample%2Ecom/dir/page.html", PAGE),
    ("http://www.%2565xample.com/dir/page.html", PAGE),
    ("http://www.example.com/%64%69%72/%70%61%67%65%2E%68%74%6D%6C", PAGE),
    ("http://www.example.com/dir%2Fpage.html", PAGE),
    ("http://www.example.com/dir%252Fpage.html", PAGE),
    ("http://www.example.com/dir%25252Fpage.html", PAGE),
    ("http://www.example.com/dir/page%25252E%252568tml", PAGE),
    ("http://www.example.com/%2564ir/page.html", PAGE),
    # trailing, leading and repeated dots in the host
    ("http://www.example.com./dir/page.html", PAGE),
    ("http://www.example.com.../dir/page.html", PAGE),
    ("http://www..example.com/dir/page.html", PAGE),
    ("http://.www.example.com/dir/page.html", PAGE),
    ("http://www.example.com%2E/dir/page.html", PAGE),
    # ports, default and explicit
    ("http://www.example.com:80/dir/page.html", PAGE),
    ("http://www.example.com:8080/dir/page.html", PAGE),
    ("http://www.example.com:/dir/page.html", PAGE),
    ("www.example.com:80/dir/page.html", PAGE),
    # userinfo
    ("http://user:pass@www.example.com/dir/page.html", PAGE),
    ("http://user@www.example.com/dir/page.html", PAGE),
    ("http://user:pass@www.example.com:8080/dir/page.html", PAGE),
    ("http://a@b.example.net@www.example.com/dir/page.html", PAGE),
    ("http://user:p%40ss@www.example.com/dir/page.html", PAGE),
    # dot segments, escaped dot segments, repeated slashes
    ("http://www.example.com/dir/./page.html", PAGE),
    ("http://www.example.com/dir/x/../page.html", PAGE),
    ("http://www.example.com/x/y/../../dir/page.html", PAGE),
    ("http://www.example.com/../dir/page.html", PAGE),
    ("http://www.example.com/dir/%2e/page.html", PAGE),
    ("http://www.example.com/dir/x/%2e%2e/page.html", PAGE),
    ("http://www.example.com/dir/x/%2E%2E/page.html", PAGE),
    ("http://www.example.com/dir/x/%252e%252e/page.html", PAGE),
    ("http://www.example.com/dir/x/.%2e/page.html", PAGE),
    ("http://www.example.com//dir///page.html", PAGE),
    ("http://www.example.com/dir//./x/..//page.html", PAGE),
    # backslashes and missing slashes, as browsers read them
    ("http:\\\\www.example.com\\dir\\page.html", PAGE),
    ("http://www.example.com\\dir\\page.html", PAGE),
    ("http:/\\www.example.com/dir/page.html", PAGE),
    ("http://www.example.com/dir%5Cpage.html", PAGE),
    ("http://www.example.com/dir\\x\\..\\page.html", PAGE),
    ("http:/www.example.com/dir/page.html", PAGE),
    ("http:www.example.com/dir/page.html", PAGE),
    ("http:///www.example.com/dir/page.html", PAGE),
    # missing scheme, protocol-relative
    ("www.example.com/dir/page.html", PAGE),
    ("//www.example.com/dir/page.html", PAGE),
    ("\\\\www.example.com\\dir\\page.html", PAGE),
    # fragment
    ("http://www.example.com/dir/page.html#top", PAGE),
    ("http://www.example.com/dir/page.html#a#b", PAGE),
    ("http://www.example.com/dir/page.html#/../other.html", PAGE),
    # tabs, CR, LF inside; whitespace and C0 controls around
    ("http://www.exa\tmple.com/dir/pa\r\nge.html", PAGE),
    ("ht\ttp://www.example.com/d\nir/page.html", PAGE),
    ("  http://www.example.com/dir/page.html  ", PAGE),
    ("\t\r\n http://www.example.com/dir/page.html \x00\x1f", PAGE),
    # bytes input
    (b"http://www.example.com/dir/page.html", PAGE),
    # full-width letters and dots, ideographic full stop, soft hyphen (UTS 46, as browsers)
    (
        "http://\uff57\uff57\uff57\uff0e\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0ecom/dir/page.html",
        PAGE,
    ),
    ("http://www\u3002example\u3002com/dir/page.html", PAGE),
    ("http://www\uff61example.com/dir/page.html", PAGE),
    ("http://\uff37\uff37\uff37.example.com/dir/page.html", PAGE),
    ("http://%EF%BD%97ww.example.com/dir/page.html", PAGE),
    ("http://www.exa\u00admple.com/dir/page.html", PAGE),
    # IPv4 in every legal encoding
    ("http://3221225985/page.html", IP_PAGE),
    ("http://0xc0000201/page.html", IP_PAGE),
    ("http://0XC0000201/page.html", IP_PAGE),
    ("http://030000001001/page.html", IP_PAGE),
    ("http://0300.0000.0002.0001/page.html", IP_PAGE),
    ("http://0xc0.0x0.0x2.0x1/page.html", IP_PAGE),
    ("http://0xc0.0.02.1/page.html", IP_PAGE),
    ("http://192.0.513/page.html", IP_PAGE),
    ("http://192.513/page.html", IP_PAGE),
    ("http://0xc0.0x000201/page.html", IP_PAGE),
    ("http://192.000.002.001/page.html", IP_PAGE),
    ("http://000000000000000000000300.0.2.1/page.html", IP_PAGE),
    ("http://0x00000000000000000000c0.0.2.1/page.html", IP_PAGE),
    ("http://192.0.2.1./page.html", IP_PAGE),
    ("http://192.0.2.1:80/page.html", IP_PAGE),
    ("http://%31%39%32.0.2.1/page.html", IP_PAGE),
    ("http://\uff11\uff19\uff12\uff0e\uff10\uff0e\uff12\uff0e\uff11/page.html", IP_PAGE),
    # IPv4-mapped IPv6 is the IPv4 address
    ("http://[::ffff:192.0.2.1]/page.html", IP_PAGE),
    ("http://[::FFFF:C000:0201]/page.html", IP_PAGE),
    ("http://[0:0:0:0:0:ffff:192.0.2.1]:80/page.html", IP_PAGE),
    # IPv6 spellings
    ("http://[2001:DB8::1]/page.html", V6_PAGE),
    ("http://[2001:0db8:0000:0000:0000:0000:0000:0001]/page.html", V6_PAGE),
    ("http://[2001:db8:0:0:0:0:0:1]:8080/page.html", V6_PAGE),
    ("http://[2001:db8::0:1]/page.html", V6_PAGE),
    ("http://user:pass@[2001:db8::1]:443/page.html", V6_PAGE),
    ("http://[2001:db8::1%25eth0]/page.html", V6_PAGE),
    ("[2001:db8::1]/page.html", V6_PAGE),
    # IDN: Unicode, punycode, case, percent-encoded UTF-8, decomposed, Unicode dots
    ("http://b\u00fccher.test/page.html", IDN_PAGE),
    ("http://B\u00dcCHER.TEST/page.html", IDN_PAGE),
    ("http://XN--BCHER-KVA.test/page.html", IDN_PAGE),
    ("http://b%C3%BCcher.test/page.html", IDN_PAGE),
    ("http://b%25C3%25BCcher.test/page.html", IDN_PAGE),
    (b"http://b\xc3\xbccher.test/page.html", IDN_PAGE),
    ("http://bu\u0308cher.test/page.html", IDN_PAGE),
    ("http://b\u00fccher\u3002test/page.html", IDN_PAGE),
    ("http://b\u00fccher\uff0etest./page.html", IDN_PAGE),
]


@pytest.mark.parametrize(("variant", "plain"), EVASIONS)
def test_evasion_canonicalizes_like_plain(variant: str | bytes, plain: str) -> None:
    assert canonicalize(plain) == plain
    assert canonicalize(variant) == plain
    assert expressions(variant) == expressions(plain)


def test_https_default_port_and_scheme_kept() -> None:
    assert canonicalize("HTTPS://www.example.com:443/dir/page.html") == (
        "https://www.example.com/dir/page.html"
    )
    # The scheme is not part of an expression: http and https match the same entries.
    assert expressions("https://www.example.com/dir/page.html") == expressions(PAGE)


# -- near misses: must stay apart (no collateral damage) ---------------------------------

NEAR_MISSES = [
    # path case matters (servers are case-sensitive)
    (PAGE, "http://www.example.com/dir/Page.html"),
    (PAGE, "http://www.example.com/DIR/page.html"),
    # a different or an added query
    ("http://www.example.com/page.html?id=1", "http://www.example.com/page.html?id=2"),
    ("http://www.example.com/page.html?id=1", "http://www.example.com/page.html?id=1&x=2"),
    ("http://www.example.com/page.html?id=1", "http://www.example.com/page.html?ID=1"),
    # siblings, parents, children and near names of a page
    (PAGE, "http://www.example.com/dir/page2.html"),
    (PAGE, "http://www.example.com/dir/page.htm"),
    (PAGE, "http://www.example.com/dir/"),
    (PAGE, "http://www.example.com/dir2/page.html"),
    (PAGE, "http://www.example.com/dir/page.html/"),
    (PAGE, "http://www.example.com/dir/page.html.bak"),
    (PAGE, "http://www.example.com/page.html"),
    (PAGE, "http://www.example.com/dir/page+html"),
    ("http://www.example.com/a%20b", "http://www.example.com/a+b"),
    ("http://www.example.com/dir/page.html", "http://www.example.com/dir/page%2Ehtml%2F"),
    # lookalike and neighbouring hosts
    (PAGE, "http://www.example.com.test/dir/page.html"),
    (PAGE, "http://www.example.co/dir/page.html"),
    (PAGE, "http://www.examp1e.com/dir/page.html"),
    (PAGE, "http://www-example.com/dir/page.html"),
    (PAGE, "http://wwwexample.com/dir/page.html"),
    (PAGE, "http://www.\u0435xample.com/dir/page.html"),  # Cyrillic small letter ie
    (PAGE, "http://www.example.net/dir/page.html"),
    (PAGE, "http://example.com/dir/page.html"),  # the parent domain is not blocked
    (IP_PAGE, "http://192.0.2.10/page.html"),
    (IP_PAGE, "http://3221225986/page.html"),
    (IP_PAGE, "http://[2001:db8::c000:201]/page.html"),
    (V6_PAGE, "http://[2001:db8::2]/page.html"),
    (IDN_PAGE, "http://bucher.test/page.html"),
]


@pytest.mark.parametrize(("listed", "other"), NEAR_MISSES)
def test_near_miss_stays_apart(listed: str, other: str) -> None:
    assert canonicalize(listed) != canonicalize(other)
    # An entry for `listed` is its most specific expression: `other` must not produce it.
    entry = expressions(listed)[0]
    assert entry not in expressions(other)


def test_subdomain_shares_expressions_but_not_canonical_form() -> None:
    # By design an entry on a host also covers its subdomains; the canonical URLs differ.
    sub = "http://cdn.www.example.com/dir/page.html"
    assert canonicalize(sub) != canonicalize(PAGE)
    assert expressions(PAGE)[0] in expressions(sub)


# -- hosts and URLs that are not web URLs -------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "http://",
        "http:///",
        "http://:80/",
        "http://user@/",
        "http://.../",
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "data:text/html,hello",
        "file:///etc/passwd",
        "urn:isbn:0451450523",
        "#fragment-only",
        None,
        42,
    ],
)
def test_not_a_web_url(url: object) -> None:
    assert parse(url) is None  # type: ignore[arg-type]
    assert canonicalize(url) is None  # type: ignore[arg-type]
    assert expressions(url) == []  # type: ignore[arg-type]


def test_other_hierarchical_schemes_keep_their_scheme() -> None:
    assert canonicalize("FTP://Files.Example.org/pub/") == "ftp://files.example.org/pub/"
    assert canonicalize("foo://Example.org/a\\b") == "foo://example.org/a\\b"


def test_parse_fields() -> None:
    assert parse("HTTP://User@WWW.Example.COM:8080/a/../b/c.html?x=%41#frag") == Canonical(
        "http", "www.example.com", "/b/c.html", "x=A", False
    )
    assert parse("http://192.0.2.1") == Canonical("http", "192.0.2.1", "/", None, True)
    assert parse("http://[2001:db8::1]/?") == Canonical("http", "[2001:db8::1]", "/", "", True)
    c = parse("http://www.example.com/q?a?b")
    assert c is not None
    assert (c.path, c.query, c.url) == ("/q", "a?b", "http://www.example.com/q?a?b")


# -- bugs found by these tests (regressions) ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # An escaped "?" stays in its path segment, as browsers and servers read it (issue
        # 15.2: "x%3F/../page.html" is page.html there), and reads back the same.
        ("http://www.example.com/page.html%3Fid=1", "http://www.example.com/page.html%3Fid=1"),
        ("http://www.example.com/a%3Fb?c", "http://www.example.com/a%3Fb?c"),
        ("http://www.example.com/dir/x%3F/../page.html", "http://www.example.com/dir/page.html"),
        (
            "http://www.example.com/dir/x%253F/%2e%2e/page.html",
            "http://www.example.com/dir/page.html",
        ),
        ("http://www.example.com/dir/x%3F/..", "http://www.example.com/dir/"),
        ("http://www.example.com/x%3Fy/../q?a%3Fb", "http://www.example.com/q?a?b"),
        # A special scheme followed by a number is a numeric host, as browsers read it.
        ("http:3405803783/path", "http://203.0.113.7/path"),
        ("https:0xC0000207/a", "https://192.0.2.7/a"),
        ("listed.example:8080/a", "http://listed.example/a"),
        # NAT64's well-known prefix reaches the IPv4 address in its last 32 bits.
        ("http://[64:ff9b::192.0.2.7]/a", "http://192.0.2.7/a"),
        ("http://[64:ff9b::c000:207]/a", "http://192.0.2.7/a"),
        ("http://[64:ff9b:1::c000:207]/a", "http://[64:ff9b:1::c000:207]/a"),  # local-use
        # An escaped backslash is a slash, like a raw one (it read back as one before).
        ("http://www.example.com/dir%5Cpage.html", PAGE),
        ("foo://example.org/a%5Cb", "foo://example.org/a\\b"),  # not a special scheme
        # Characters that end a host stay escaped in it, so the host reads back the same.
        ("http://a%2Fb.example.com/", "http://a%2Fb.example.com/"),
        ("http://a%40b.example.com/", "http://a%40b.example.com/"),
        ("http://a%3Ab.example.com/", "http://a%3Ab.example.com/"),
        ("http://a%3Fb.example.com/", "http://a%3Fb.example.com/"),
        ("http://a%5Cb.example.com/", "http://a%5Cb.example.com/"),
        ("http://%5Ba%5Db.example.com/", "http://%5Ba%5Db.example.com/"),
        ("http://a\uff0fb.example.com/", "http://a%2Fb.example.com/"),  # full-width solidus
        ("http://\u2100.example.com/", "http://a%2Fc.example.com/"),  # U+2100 maps to "a/c"
        # A "%" mapped from a full-width percent sign is not unescaped again.
        (
            "http://a\uff05\uff14\uff11.example.com/",
            "http://a%EF%BC%85%EF%BC%94%EF%BC%91.example.com/",
        ),
        # A long all-digit host is no IPv4 address, and never raises.
        ("http://" + "1" * 5000 + "/", "http://" + "1" * 5000 + "/"),
        ("http://" + "0" * 5000 + "1/", "http://0.0.0.1/"),
    ],
)
def test_regression(url: str, expected: str) -> None:
    assert canonicalize(url) == expected
    assert parse(expected) == parse(url)


def test_escaped_query_mark_stays_in_the_path() -> None:
    found = expressions("http://www.example.com/page.html%3Fid=1")
    assert found[0] == "www.example.com/page.html%3Fid=1"
    assert "www.example.com/page.html" not in found  # the matcher checks that reading too


def test_canonical_host_text_and_bytes() -> None:
    assert canonical_host("WWW.Example.COM.") == ("www.example.com", False)
    assert canonical_host("b\u00fccher.test") == ("xn--bcher-kva.test", False)
    assert canonical_host("b\u00fccher\u20ac.test") is not None  # never raises
    assert canonical_host(b"b\xc3\xbccher.test") == ("xn--bcher-kva.test", False)
    assert canonical_host(b"\xff.test") == ("%FF.test", False)
    assert canonical_host("0x7f.1") == ("127.0.0.1", True)
    assert canonical_host("[2001:DB8::1]") == ("[2001:db8::1]", True)
    assert canonical_host("") is None
    assert canonical_host("...") is None
    assert canonical_host(None) is None  # type: ignore[arg-type]


def test_unescape_text_and_bytes() -> None:
    assert unescape("%2541%zz%4") == "A%zz%4"
    assert unescape(b"%25%34%31\xff") == b"A\xff"
    assert unescape("%C3%BC") == "\xc3\xbc"  # bytes held in a str, one a character


# -- 3. properties -----------------------------------------------------------------------

_label = st.one_of(
    st.text(alphabet="abcXYZ0179-_", min_size=1, max_size=6),
    st.sampled_from(
        [
            "www",
            "example",
            "com",
            "test",
            "0x7f",
            "0X1",
            "017",
            "08",
            "4294967295",
            "4294967296",
            "%2e",
            "%2E%2E",
            "%25",
            "%41",
            "%",
            "\u00fc",
            "B\u00dcCHER",
            "xn--bcher-kva",
            "\uff21\uff22",
            "\u3002",
            "\uff05",
            "\u2100",
            "\u00ad",
            "%C3%BC",
            "%FF",
            " ",
            "",
        ]
    ),
)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=6).map(".".join),
    st.sampled_from(
        [
            "[2001:db8::1]",
            "[::ffff:192.0.2.1]",
            "[2001:DB8::1%25eth0]",
            "[zzz]",
            "[::1",
            "192.0.2.1",
            "3221225985",
            "0xc0.0.02.1",
            "%5B::1%5D",
            "a%2Fb",
            "a%40b",
            "a%3Ab",
        ]
    ),
)
_url_like = st.builds(
    lambda scheme, user, host, port, path, query, frag: (
        f"{scheme}{user}{host}{port}{path}{query}{frag}"
    ),
    st.sampled_from(
        [
            *("", "http://", "https://", "HTTP://", "http:", "http:/", "http:\\\\", "//"),
            *("ftp://", "foo://", "mailto:", " http://", "\thttp://"),
        ]
    ),
    st.sampled_from(["", "user:pass@", "u@", "a@b@", "%40@"]),
    _host,
    st.sampled_from(["", ":80", ":8080", ":", ":x", ":0443"]),
    st.text(alphabet="/\\.%2eEfF5Cab?#;@: \t\u00fc", max_size=24),
    st.one_of(st.just(""), st.text(alphabet="?&=/%25aF.#\\ ", max_size=12).map("?".__add__)),
    st.sampled_from(["", "#", "#frag", "#a/../b"]),
)
_any_input = st.one_of(_url_like, st.text(), st.binary(), _url_like.map(str.encode))


@PROPERTY
@given(_any_input)
@example("http://" + "9" * 5000)
@example("http://\uff05\uff12\uff15.example.com/")
def test_total(url: str | bytes) -> None:
    c = parse(url)
    assert c is None or isinstance(c, Canonical)
    assert canonicalize(url) == (None if c is None else c.url)
    assert isinstance(expressions(url), list)
    assert isinstance(unescape(url), type(url))
    h = canonical_host(url)
    assert h is None or isinstance(h, tuple)


@PROPERTY
@given(_any_input)
@example("http://www.example.com/a%5Cb")
@example("http://a%40b.example.com/")
@example("http://a\uff05\uff14\uff11.example.com/")
def test_idempotent(url: str | bytes) -> None:
    c = canonicalize(url)
    assume(c is not None)
    assert canonicalize(c) == c
    # Stronger: the canonical URL reads back as the same parts, hence the same expressions.
    assert parse(c) == parse(url)


_FORBIDDEN_IN_CANONICAL = re.compile(r"[\x00-\x20\x7f#]|[^\x00-\x7f]")


@PROPERTY
@given(_any_input)
def test_canonical_form_is_clean(url: str | bytes) -> None:
    c = parse(url)
    assume(c is not None)
    assert _FORBIDDEN_IN_CANONICAL.search(c.url) is None
    assert c.path.startswith("/")
    assert "?" not in c.path
    if c.scheme in ("http", "https"):
        assert "\\" not in c.path
    for field in (c.host, c.path, c.query or ""):
        # every "%" in the output is an escape written by us: "%" plus two upper-case hex
        assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", field)
    exprs = expressions(url)
    assert 1 <= len(exprs) <= MAX_SB_HOSTS * (MAX_SB_PREFIXES + 2)
    assert len(set(exprs)) == len(exprs)
    query = "" if c.query is None else "?" + c.query
    assert exprs[0] == c.host + c.path + query
    for e in exprs:
        assert e.isascii()
        assert not any(ch in string.whitespace for ch in e)
        assert "#" not in e


@PROPERTY
@given(_any_input)
def test_expressions_are_suffixes_times_prefixes(url: str | bytes) -> None:
    c = parse(url)
    assume(c is not None)
    hosts = host_suffixes(c.host, c.is_ip)
    paths = path_prefixes(c.path, c.query)
    assert len(hosts) <= MAX_SB_HOSTS
    assert len(paths) <= MAX_SB_PREFIXES + 2
    assert expressions(url) == [h + p for h in hosts for p in paths]
    all_hosts = host_suffixes(c.host, c.is_ip, limit=None)
    all_paths = path_prefixes(c.path, c.query, limit=None)
    assert set(hosts) <= set(all_hosts)
    assert set(paths) <= set(all_paths)
    for h in all_hosts:
        assert c.host == h or c.host.endswith("." + h)
    for p in all_paths[1 if c.query is not None else 0 :]:
        assert p == c.path or (p.endswith("/") and c.path.startswith(p))


def _naive_unescape(s: str) -> str:
    """The spec's words: unescape the whole string, again, until it no longer changes."""
    while True:
        t = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), s)
        if t == s:
            return s
        s = t


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="%25aAfFx0", max_size=24))
@example("%252525252541")
@example("%%%2541")
@example("%2%2541")
def test_unescape_is_repeated_unescape(s: str) -> None:
    assert unescape(s) == _naive_unescape(s)
    assert unescape(s.encode("latin-1")) == _naive_unescape(s).encode("latin-1")


@PROPERTY
@given(st.text(alphabet="%250AaFf\u00fc.x", max_size=40))
def test_unescape_leaves_no_escape(s: str) -> None:
    u = unescape(s)
    assert re.search(r"%[0-9A-Fa-f]{2}", u) is None
    assert unescape(u) == u


@PROPERTY
@given(st.text(alphabet="abcXY019._-", min_size=1, max_size=30))
@example("1.2.3.4")
@example("0x7f.1")
@example("example.com.")
def test_canonical_host_agrees_with_parse(host: str) -> None:
    # The matcher reads simple hosts with canonical_host alone: it must agree with parse.
    c = parse(f"http://{host}/")
    expected = None if c is None else (c.host, c.is_ip)
    assert canonical_host(host.lower()) == expected
    assert canonical_host(host) == expected


# -- 4. bounded work: deep nesting and long input stay linear ------------------------------


def test_deeply_nested_escapes() -> None:
    assert unescape("%25" * 20000 + "41") == "%" * 19999 + "A"
    assert unescape("%" + "25" * 20000 + "41") == "A"
    assert unescape("%" + "25" * 20000) == "%"
    assert unescape("%25" * 20000) == "%" * 20000
    assert unescape(("%25" * 20000 + "41").encode()) == b"%" * 19999 + b"A"
    url = "http://www.example.com/" + "%25" * 20000 + "41"
    assert canonicalize(url) == "http://www.example.com/" + "%25" * 19999 + "A"
    assert canonicalize("http://www.example.com/%" + "25" * 20000 + "41") == (
        "http://www.example.com/A"
    )


KIB64 = 64 * 1024


@pytest.mark.parametrize(
    "url",
    [
        "http://www.example.com/" + "a" * KIB64,
        "http://www.example.com/" + "a/" * (KIB64 // 2),
        "http://www.example.com/" + "../" * (KIB64 // 3),
        "http://www.example.com/" + "%2e%2e/" * (KIB64 // 7),
        "http://www.example.com/" + "/" * KIB64,
        "http://www.example.com/?" + "%25" * (KIB64 // 3),
        "http://" + "a." * (KIB64 // 2) + "example.com/",
        "http://" + "." * KIB64 + "example.com/",
        "http://" + "1." * (KIB64 // 2) + "1/",
        "http://" + "1" * KIB64 + "/",
        "http://0x" + "0" * KIB64 + "1/",
        "http://" + "0" * KIB64 + "/",
        "http://" + "%41" * (KIB64 // 3) + "/",
        "http://" + "\u00fc" * (KIB64 // 2) + ".test/",
        "http://[" + "0:" * (KIB64 // 2) + "]/",
        "http://" + "@" * KIB64 + "www.example.com/",
        "http://www.example.com:" + "8" * KIB64 + "/",
        "\t" * KIB64 + "http://www.example.com/",
        "http://www.example.com/#" + "#" * KIB64,
    ],
    ids=lambda u: repr(u[:30]),
)
def test_long_url_is_handled(url: str) -> None:
    c = parse(url)
    assert c is None or _FORBIDDEN_IN_CANONICAL.search(c.url) is None
    exprs = expressions(url)
    assert len(exprs) <= 30
    if c is not None:
        assert canonicalize(c.url) == c.url


def test_long_url_results() -> None:
    assert canonicalize("http://www.example.com/" + "a/" * (KIB64 // 2)) == (
        "http://www.example.com/" + "a/" * (KIB64 // 2)
    )
    assert canonicalize("http://www.example.com/" + "../" * (KIB64 // 3) + "x") == (
        "http://www.example.com/x"
    )
    assert canonicalize("http://" + "." * KIB64 + "example.com/") == "http://example.com/"
    assert canonicalize("http://0x" + "0" * KIB64 + "1/") == "http://0.0.0.1/"
    long_host = "a." * (KIB64 // 2) + "example.com"
    assert len(expressions("http://" + long_host + "/")) == MAX_SB_HOSTS


def test_undecodable_request_bytes_as_mitmproxy_carries_them() -> None:
    # mitmproxy decodes a request path with surrogateescape: raw 0xFF arrives as U+DCFF.
    raw = b"http://listed.test/\xff.html".decode("utf-8", "surrogateescape")
    assert canonicalize(raw) == "http://listed.test/%FF.html"
    assert canonicalize(raw) == canonicalize("http://listed.test/%ff.html")


@given(
    st.lists(st.text("ab-", min_size=1, max_size=70), min_size=1, max_size=400),
)
@settings(max_examples=200, deadline=None)
def test_dns_suffixes_are_every_suffix_a_dns_name_can_be(labels: list[str]) -> None:
    """Every suffix of at most 253 characters (the longest DNS name: no listed host is
    longer), in the unbounded list's order, and never more than that to build or hash."""
    host = ".".join(labels)
    everything = host_suffixes(host, False, limit=None)
    bounded = dns_suffixes(host, False)
    assert bounded == [h for h in everything if len(h) <= MAX_DNS_NAME]
    assert sum(map(len, bounded)) <= MAX_DNS_NAME * (MAX_DNS_NAME // 2 + 1)


def test_a_host_of_thousands_of_labels_costs_what_a_dns_name_does() -> None:
    """A host of 4,000 labels (8 KiB) made 4,000 suffixes of up to 8 KiB, hashed each: 85 ms
    a lookup, quadratic in the labels (issue 21). Now the work is that of a DNS name."""
    host = ".".join(["a"] * 4000) + ".listed.example"
    bounded = dns_suffixes(host, False)
    assert len(bounded) <= 128 and bounded[-1] == "listed.example"
    assert sum(map(len, bounded)) <= MAX_DNS_NAME * (MAX_DNS_NAME // 2 + 1)


# -- 5. the edges `make mutate` found untested ---------------------------------------------

_A63, _B61 = "a" * 63, "b" * 61
#: A DNS name of the longest length (253 characters), and one character longer.
_H253 = f"{_A63}.{_A63}.{_A63}.{_B61}"
_H254 = "c" + _H253

# dns_suffixes: the host itself, then every suffix of two labels or more, longest first;
# nothing longer than MAX_DNS_NAME. In the reference style: input, then expected output.
DNS_SUFFIX_VECTORS = [
    ("a.b.c", ["a.b.c", "b.c"]),  # a suffix starting at the second character
    ("b.c", ["b.c"]),
    ("c", ["c"]),
    (".a.b", [".a.b", "a.b"]),  # the first dot at index 0 (not a canonical host: the
    (".a.b.c", [".a.b.c", "a.b.c", "b.c"]),  # contract is host_suffixes' for any string)
    ("a..b", ["a..b", ".b"]),
    (_H253, [_H253, f"{_A63}.{_A63}.{_B61}", f"{_A63}.{_B61}"]),  # exactly 253: kept
    (_H254, [f"{_A63}.{_A63}.{_B61}", f"{_A63}.{_B61}"]),  # 254: the host itself is not
    ("x." + _H253, [_H253, f"{_A63}.{_A63}.{_B61}", f"{_A63}.{_B61}"]),  # a suffix of 253
    ("x." + _H254, [f"{_A63}.{_A63}.{_B61}", f"{_A63}.{_B61}"]),  # ... and of 254
]


@pytest.mark.parametrize(("host", "expected"), DNS_SUFFIX_VECTORS, ids=lambda v: repr(v)[:24])
def test_dns_suffixes_vector(host: str, expected: list[str]) -> None:
    assert len(_H253) == MAX_DNS_NAME
    assert dns_suffixes(host, False) == expected
    assert expected == [h for h in host_suffixes(host, False, limit=None) if len(h) <= 253]
    assert dns_suffixes(host, True) == [host]  # an IP address is its only "suffix"


@settings(max_examples=300, deadline=None)
@given(
    st.integers(MAX_DNS_NAME - 6, MAX_DNS_NAME + 6).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=8))
    )
)
def test_dns_suffixes_at_the_length_of_a_dns_name(shape: tuple[int, set[int]]) -> None:
    """Hosts of 247 to 259 characters with dots anywhere (at the ends and side by side
    too): the hosts and suffixes either side of 253 are where a bound is off by one."""
    length, dots = shape
    host = "".join("." if i in dots else "x" for i in range(length))
    everything = host_suffixes(host, False, limit=None)
    assert dns_suffixes(host, False) == [h for h in everything if len(h) <= MAX_DNS_NAME]


# The zone id of an IPv6 literal ends the address at its first "%": whatever follows never
# becomes part of the host (ipaddress would read "addr%zone" with a scope and keep it).
IPV6_ZONE_VECTORS = [
    ("http://[2001:db8::1%25eth0]/a", "http://[2001:db8::1]/a"),
    ("http://[2001:db8::1%25eth0%25x]/a", "http://[2001:db8::1]/a"),
    ("http://[2001:DB8::1%2525eth0]/a", "http://[2001:db8::1]/a"),
    ("http://[::ffff:192.0.2.1%25eth0%25x]/a", "http://192.0.2.1/a"),
    ("http://[64:ff9b::192.0.2.1%25a%25b]/a", "http://192.0.2.1/a"),
]


@pytest.mark.parametrize(("url", "expected"), IPV6_ZONE_VECTORS)
def test_ipv6_zone_id_vector(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


# Deep nesting (over three passes) is finished by the linear stack reduction; a "%" that
# starts no escape must not stop it.
DEEP_UNESCAPE_VECTORS = [
    ("%25252541", "A"),  # four passes
    ("%x%25252541", "%xA"),
    ("%%25252541", "%A"),
    ("%2%25252541", "*"),  # the "A" decoded last completes "%2A"
    ("%25252541%zz%4", "A%zz%4"),
    ("%25252525%zz", "%%zz"),
    ("%252525%32%35%34%31", "A"),
]


@pytest.mark.parametrize(("s", "expected"), DEEP_UNESCAPE_VECTORS)
def test_deep_unescape_vector(s: str, expected: str) -> None:
    assert unescape(s) == expected == _naive_unescape(s)
    assert unescape(s.encode("latin-1")) == expected.encode("latin-1")
    assert canonicalize(f"http://www.example.com/{s}") == (
        "http://www.example.com/" + expected.replace("%", "%25")
    )


def test_the_escape_tables_write_exactly_the_bytes_their_pattern_names() -> None:
    """The tables are built once, at import: build them again and compare, and pin what
    the canonical URL escapes (controls, space, DEL and above, "#", "%"; in a path "?" too;
    in a host also the characters that would end it)."""
    controls = {*range(0x21), *range(0x7F, 0x100)}
    expected = {
        _NEEDS_ESCAPE: controls | {ord("#"), ord("%")},
        _PATH_NEEDS_ESCAPE: controls | {ord("#"), ord("%"), ord("?")},
        _HOST_NEEDS_ESCAPE: controls | {ord(c) for c in "#%/:?@[\\]"},
    }
    for pattern, escaped in expected.items():
        table = _escapes(pattern)
        assert table == {b: f"%{b:02X}" for b in sorted(escaped)}
        assert table == _ESCAPES[pattern]
