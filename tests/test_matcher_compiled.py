"""The compiled lookups (``blocklist_addon/urls/_lookup.c``) against the pure-Python
matcher they replace on the hot path (issue 21, item 5): the same SHA-256 as hashlib, the
same listed suffixes as ``Snapshot.listed_hosts``, the same match for every generated URL."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls import _lookup
from blocklist_addon.urls.canonical import _PLAIN_HOST, dns_suffixes
from blocklist_addon.urls.matcher import _SIMPLE_AUTHORITY, WALK_FLOOR, Blocklist
from blocklist_addon.urls.snapshot import Snapshot, expression_digest, host_key

#: Pages, directories (one deeper than WALK_FLOOR), exact queries, whole hosts, an escaped
#: "?" and a subdomain, on hosts that share suffixes.
ENTRIES = [
    "listed.test/a/page.html",
    "listed.test/a/b/",
    "listed.test/q.php?id=1",
    "listed.test/" + "d/" * (WALK_FLOOR + 3),
    "www.listed.test/c%3Fd/e.html",
    "whole.test/",
    "sub.whole.test/x/",
    "example.com/a/b/c/d/",
    "192.0.2.7/img/a.jpg",
]
COMPILED = Blocklist.from_entries(ENTRIES)
REFERENCE = Blocklist.from_entries(ENTRIES, compiled=False)


def test_the_extension_is_built_and_used() -> None:
    """CI builds it (setup.py): without it the proxy would run the reference, 1.5x slower."""
    assert COMPILED._compiled is not None
    assert REFERENCE._compiled is None


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(0, 130), st.booleans())
def test_sha256_is_hashlibs(data: bytes, step: int, accelerated: bool) -> None:
    """Both compression functions (the SHA extensions when this CPU has them, and portable
    C), fed in pieces of any size across the 64-byte blocks."""
    assert _lookup.sha256(data, accelerated, step) == hashlib.sha256(data).digest()


LABELS = st.sampled_from(["listed", "test", "whole", "sub", "www", "a", "x" * 63, "", "example"])
HOSTS = st.one_of(
    st.lists(LABELS, min_size=1, max_size=12).map(".".join),
    st.builds(
        lambda k, tail: "a." * k + tail,
        st.integers(0, 300),
        st.sampled_from(["listed.test", "whole.test"]),
    ),
    st.text(alphabet="ab.-_", max_size=40),
    st.text(max_size=8),  # not ASCII: the reference answers
)


@settings(max_examples=500)
@given(HOSTS, st.booleans())
def test_listed_hosts_are_the_references(host: str, is_ip: bool) -> None:
    listed = COMPILED._compiled.listed_hosts(host, is_ip)
    reference = COMPILED.snapshot.listed_hosts(dns_suffixes(host, is_ip))
    assert listed == (None if not host.isascii() else reference)
    assert COMPILED._listed_hosts(host, is_ip) == reference


def simple_hosts(url: str) -> list[str] | None:
    """What ``Lookup.simple_hosts`` stands for, in the matcher's own regular expressions."""
    m = _SIMPLE_AUTHORITY.match(url)
    if m is None:
        return None
    name = m.group(1).lower()
    if not _PLAIN_HOST.fullmatch(name) or name.endswith(".translate.goog"):
        return None
    return COMPILED.snapshot.listed_hosts(dns_suffixes(name, False))


AUTHORITIES = st.one_of(
    st.text(alphabet="htpsHTPSwfW:/.?#\n0x9aAb-_~!@[]%\u017f\u212a", max_size=24),
    st.builds(
        str.__add__,
        st.sampled_from(
            ["", "http://", "HTTPS:", "https:", "//", "ws:", "wss://", "ftp:", "Http:/"]
        ),
        st.builds(
            str.__add__,
            st.sampled_from(
                [
                    "listed.test",
                    "a.Listed.TEST",
                    "sub.whole.test",
                    "x.translate.goog",
                    "192.0.2.7",
                    "1.2.3.4x",
                    "0x1.test",
                    "a..test",
                    ".test",
                    "test.",
                    "a.b.0x9",
                    "a.9",
                    "a_b.test",
                    "a&b=c.test",
                    "",
                    "é.test",
                ]
            ),
            st.sampled_from(["", "/", ":80/", ":/", ":8x", "?q", "#f", "\n", "\nx", "@x/", ":"]),
        ),
    ),
)


@settings(max_examples=2000)
@given(AUTHORITIES)
def test_the_fast_reading_is_the_regular_expressions(url: str) -> None:
    """The fast reading of a URL's host (scheme, "//", host, port: four readings where the
    regular expression backtracks; "$" before a final newline; the plain-host test) gives
    what the regular expressions give, and None wherever they send the URL to the parser."""
    assert COMPILED._compiled.simple_hosts(url) == simple_hosts(url)


def test_the_fast_reading_of_a_long_host() -> None:
    for url in ["http://" + "a." * 5000 + "listed.test/x", "http://" + "A" * 600 + ".test/"]:
        assert COMPILED._compiled.simple_hosts(url) == simple_hosts(url)
    assert simple_hosts("http://" + "a." * 5000 + "listed.test/x") == ["listed.test"]


SEGMENTS = st.sampled_from(["a", "b", "d", "c%3Fd", "page.html", "e.html", "q.php", "x", ".."])
URL_HOSTS = st.sampled_from(
    [
        "listed.test",
        "www.listed.test",
        "LISTED.test.",
        "whole.test",
        "a.sub.whole.test",
        "example.com",
        "192.0.2.7",
        "3221225991",
        "other.test",
        "xn--n3h.test",
        "☃.test",
    ]
)
QUERIES = st.sampled_from(["", "?", "?id=1", "?id=1&x", "%3Fid=1", "#frag"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    """URLs on and around the listed hosts and paths, also wrapped in a redirector."""
    path = "d/" * draw(st.integers(0, WALK_FLOOR + 5))  # around the deep directory entry
    path += "/".join(draw(st.lists(SEGMENTS, max_size=WALK_FLOOR + 6)))
    slash = draw(st.sampled_from(["", "/"]))
    url = f"http://{draw(URL_HOSTS)}/{path}{slash}{draw(QUERIES)}"
    wrap = draw(st.sampled_from(["", "escaped", "plain", "path"]))
    if wrap == "escaped":
        return "http://r.example.net/out?u=" + quote(url, safe="")
    if wrap == "plain":
        return "http://r.example.net/out?u=" + url
    if wrap == "path":
        return "http://r.example.net/web/2020/" + url
    return url


@settings(max_examples=1500, deadline=None)
@given(st.one_of(urls(), st.text(max_size=80)))
def test_every_match_is_the_references(url: str) -> None:
    assert COMPILED.match(url) == REFERENCE.match(url)


def test_the_listed_urls_match_alike() -> None:
    """The entries themselves, a directory past the floor, and what they do not cover."""
    for url in [
        "http://listed.test/a/page.html",
        "http://listed.test/a/b/c/d.html",
        "http://listed.test/q.php?id=1",
        "http://listed.test/" + "d/" * (WALK_FLOOR + 3) + "deeper/x.html",
        "http://www.listed.test/c%3Fd/e.html",
        "http://www.whole.test/anything",
        "http://3221225991/img/a.jpg",
    ]:
        found = COMPILED.match(url)
        assert found is not None and found == REFERENCE.match(url), url
    for url in [
        "http://listed.test/a/",
        "http://listed.test/q.php?id=2",
        "http://listed.test/" + "d/" * (WALK_FLOOR + 2) + "x.html",
        "http://whole.test.example.org/",
    ]:
        assert COMPILED.match(url) is None and REFERENCE.match(url) is None, url


def test_a_snapshot_without_depths_walks_every_directory() -> None:
    deep = "listed.test/" + "d/" * 300
    old = Snapshot.build([(expression_digest(deep), host_key("listed.test"), "l", None)])
    url = "http://listed.test/" + "d/" * 400 + "x.html"
    assert Blocklist(old).match(url) == Blocklist(old, compiled=False).match(url) is not None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"digest_index": b"\0\0\0"}, "u32"),
        ({"digest_index": b"\0" * 4}, "bucket table"),
        ({"host_index": b"\xff" * 8}, "out of order or out of range"),
        ({"host_shift": 17}, "shift"),
        ({"digest_shift": 0}, "shift"),
    ],
)
def test_tables_that_could_read_outside_the_snapshot_are_refused(
    change: dict[str, object], reason: str
) -> None:
    """Snapshot's loader checks these already; the extension checks again what its reads
    rely on, so that no caller can make it read outside the bytes it holds."""
    s = COMPILED.snapshot
    args: dict[str, object] = {
        "data": s.to_bytes(),
        "digest_index": s._digest_index,
        "digest_shift": s._digest_shift,
        "host_index": s._host_index,
        "host_shift": s._host_shift,
        "depths": s._depths,
        "floor": WALK_FLOOR,
    }
    _lookup.Lookup(**args)
    with pytest.raises(ValueError, match=reason):
        _lookup.Lookup(**(args | change))
