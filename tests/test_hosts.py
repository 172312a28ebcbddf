"""Internationalised hosts (blocklist_addon.urls.hosts): an entry matches whichever way its
host is written, Unicode or punycode, directly, inside a redirector and for CONNECT/SNI; a
host browsers refuse is read label by label and never widens a match; the work is linear.

Chromium's own answers are in tests/test_hosts_browser.py; this file needs no browser.
Reserved names only (*.test, example.com/.net/.org).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blocklist_addon import Blocklist
from blocklist_addon.urls import hosts
from blocklist_addon.urls.canonical import canonical_host, canonicalize, parse
from blocklist_addon.urls.hosts import (
    MAX_DNS_LABELS,
    MAX_LABEL_BYTES,
    MAX_LENIENT,
    browser_ascii,
    host_to_ascii,
)

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- what a browser sends (Chromium's answers, checked live in test_hosts_browser.py) --------

BROWSER = [
    ("☃.test", "xn--n3h.test"),
    ("a_ü.test", "xn--a_-yka.test"),
    ("-ü.test", "xn----eha.test"),
    ("ü-.test", "xn----dha.test"),
    ("ab--ü.test", "xn--ab---3ra.test"),
    ("½.test", "xn--12-c6t.test"),
    ("Ŀ.test", "xn--l-gda.test"),
    ("😀.example.org", "xn--e28h.example.org"),
    ("faß.test", "xn--fa-hia.test"),  # non-transitional: ß is kept
    ("B\u00dcCHER\u3002TEST", "xn--bcher-kva.test"),
    ("a\u3000b.\u00fc", "a%20b.xn--tda"),  # Chromium escapes the space it maps to
]


@pytest.mark.parametrize(("host", "sent"), BROWSER)
def test_a_host_is_what_a_browser_sends(host: str, sent: str) -> None:
    assert canonical_host(host) == (sent, False)
    assert canonical_host(sent) == (sent, False)
    assert canonical_host(host.encode()) == (sent, False)  # as bytes, and escaped
    assert canonical_host(quote(host, safe=".")) == (sent, False)


# -- hosts browsers refuse: label by label, never wider --------------------------------------

REFUSED = [
    # a leading combining mark: the A-label IDNA 2003 clients (and mitmproxy) send
    ("\u0301a.test", "xn--a-wbb.test"),
    # a joiner where the joiner rules forbid it: transitional clients drop it
    ("a\u200db.test", "ab.test"),
    # Bidi: a left-to-right letter and a right-to-left one in a label; the other label as
    # a browser writes it
    ("a\u05d0.\u00fc", "xn--a-0hc.xn--tda"),
    # a code point UTS 46 disallows: the A-label of its text, as it is written
    ("\ufffd.test", "xn--zn7c.test"),
    # punycode that does not decode, next to a Unicode label
    ("\u00fc.xn--a", "xn--tda.xn--a"),
]


@pytest.mark.parametrize(("host", "expected"), REFUSED)
def test_a_host_browsers_refuse_is_read_label_by_label(host: str, expected: str) -> None:
    assert browser_ascii(host) is None
    assert canonical_host(host) == (expected, False)
    assert canonical_host(expected) == (expected, False)  # reads back as itself


def test_a_label_no_dns_name_can_hold_keeps_its_text() -> None:
    """Over MAX_LABEL_BYTES (ignorable code points aside) no A-label fits in 63 octets: the
    label is not encoded (ada's punycode is quadratic in it), its escaped bytes stand."""
    long = "\u00fc" * 600
    found = canonical_host(f"{long}.listed.test")
    assert found is not None
    assert found[0] == "%C3%BC" * 600 + ".listed.test"
    assert canonical_host(found[0]) == found


def test_ignorable_code_points_do_not_make_a_label_long() -> None:
    """Soft hyphens, zero-width spaces and variation selectors map to nothing: a label
    padded with thousands of them is still the short label a browser sends."""
    padded = "list" + "\u00ad\u200b" * 700 + "ed\U000e0100" * 2
    assert len(padded.encode()) > MAX_LABEL_BYTES
    assert canonical_host(f"{padded}.example.test") == ("listeded.example.test", False)


# -- an entry matches whichever way its host is written ---------------------------------------

#: A Unicode whole-host entry: a modifier letter (an apostrophe to the eye) and a diaeresis.
OKINA = "\u02bbokina-\u00fc.test"
OKINA_ASCII = "xn--okina--8ya386a.test"

ENTRIES = [
    "http://☃.test/snow.html",  # Unicode page entry
    "http://xn--a_-yka.test/page.html",  # punycode page entry (a_ü.test)
    "http://xn--e28h.example.org/",  # punycode whole host (😀.example.org)
    f"{OKINA}/",  # Unicode whole host, no scheme
]


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist.from_entries(ENTRIES)


def wrapped(url: str) -> Iterator[str]:
    """``url`` as it is, and inside redirectors: raw, escaped, and escaped twice."""
    yield url
    yield f"http://redir.example.net/?u={url}"
    yield f"http://redir.example.net/?u={quote(url, safe='')}"
    yield f"http://redir.example.net/?u={quote(quote(url, safe=''), safe='')}"
    yield f"http://redir.example.net/out/{url}"


LISTED = [
    "http://xn--n3h.test/snow.html",
    "http://XN--N3H.TEST/snow.html",
    "http://☃.test/snow.html",
    "http://%E2%98%83.test/snow.html",
    "http://\u2603\u3002test/snow.html",
    "http://a_ü.test/page.html",
    "http://A_Ü.test/page.html",
    "http://xn--a_-yka.test/page.html",
    "http://😀.example.org/anything",
    "https://www.😀.example.org/",
    "http://xn--e28h.example.org/x",
    f"http://{OKINA}/a/b",
    f"http://{OKINA_ASCII}/c",
]

NEAR_MISSES = [
    "http://xn--n3h.test/other.html",  # a sibling page
    "http://☃☃.test/snow.html",  # another host
    "http://xn--n3ha.test/snow.html",
    "http://a_u.test/page.html",  # the letter without its diaeresis
    "http://a-ü.test/page.html",
    "http://😁.example.org/",
    "http://okina-ü.test/",
]


@pytest.mark.parametrize("url", LISTED)
def test_an_entry_matches_its_host_written_either_way(blocklist: Blocklist, url: str) -> None:
    direct = blocklist.match(url)
    assert direct is not None, url
    for spelling in wrapped(url):
        found = blocklist.match(spelling)
        assert found is not None, spelling
        assert (found.entry_id, found.digest) == (direct.entry_id, direct.digest), spelling


@pytest.mark.parametrize("url", NEAR_MISSES)
def test_a_near_miss_is_not_blocked(blocklist: Blocklist, url: str) -> None:
    for spelling in wrapped(url):
        assert blocklist.match(spelling) is None, spelling


@pytest.mark.parametrize(
    "host",
    [
        "xn--e28h.example.org",  # SNI: always ASCII
        "😀.example.org",  # CONNECT host as mitmproxy decodes it
        "sub.xn--e28h.example.org",
        "XN--E28H.EXAMPLE.ORG.",
        OKINA_ASCII,
        OKINA,
    ],
)
def test_connect_and_sni_hosts_see_whole_listed_hosts(blocklist: Blocklist, host: str) -> None:
    listing = blocklist.host_listing(host)
    assert listing.listed and listing.whole is not None


@pytest.mark.parametrize("host", ["xn--n3h.test", "☃.test", "xn--a_-yka.test", "a_ü.test"])
def test_connect_hosts_of_listed_pages_are_listed_but_not_whole(
    blocklist: Blocklist, host: str
) -> None:
    listing = blocklist.host_listing(host)
    assert listing.listed and listing.whole is None


@pytest.mark.parametrize("host", ["xn--n3ha.test", "☃☃.test", "😁.example.org", "okina-ü.test"])
def test_other_hosts_are_not_listed(blocklist: Blocklist, host: str) -> None:
    assert not blocklist.host_listing(host).listed


# -- properties ----------------------------------------------------------------------------

_char = st.one_of(
    st.sampled_from("abcXYZ019-_.\u3002\uff0e\uff61 *%"),
    st.sampled_from("üßςΣĿ½☃😀אع中\u0301\u200c\u200d\u00ad\ufe0f\u094d\ufffd\x00"),
    st.characters(codec="utf-8"),
)
_text = st.one_of(
    st.text(_char, max_size=24),
    st.tuples(st.sampled_from(["xn--", "XN--", ""]), st.text(_char, max_size=8)).map("".join),
)
_LABEL_DOTS = re.compile("[.\u3002\uff0e\uff61]")


@PROPERTY
@given(_text)
@example("\u0301a.\u05d0b.\u00fc")
@example("a\u200db" * 9)
@example(".".join(["\u0301x"] * (MAX_LENIENT + 1)))
def test_host_to_ascii_is_total_and_reads_back_as_itself(text: str) -> None:
    """Never raises; the browser's answer wherever it has one; and the canonical host of
    the result is the canonical host of the text (an entry and the request a client makes
    from it agree)."""
    out = host_to_ascii(text)
    assert isinstance(out, str)
    answer = browser_ascii(text)
    if answer is not None:
        assert out == answer
        assert out.isascii()
    found = canonical_host(text)
    if found is not None:
        assert canonical_host(found[0]) == found
        assert canonical_host(found[0].encode()) == found


@PROPERTY
@given(st.lists(_text.filter(lambda t: not _LABEL_DOTS.search(t)), min_size=1, max_size=5))
def test_a_host_browsers_accept_is_its_labels_read_alone(labels: list[str]) -> None:
    """Where browsers accept a host, each of its labels alone is what the host gives it:
    the label-by-label reading of refused hosts never departs from the browser's."""
    text = ".".join(labels)
    answer = browser_ascii(text)
    if answer is None:
        return
    assert answer.split(".") == [host_to_ascii(label) for label in labels]


class Counted:
    """The real ada call, counting what it is handed (bytes, calls)."""

    def __init__(self) -> None:
        self.calls = 0
        self.largest = 0
        self.total = 0
        self.real = hosts.idna_to_ascii

    def __call__(self, text: str) -> bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        self.calls += 1
        self.total += size
        self.largest = max(self.largest, size)
        return self.real(text)


KIB64 = 64 * 1024


@pytest.mark.parametrize(
    "host",
    [
        "".join(chr(0x4E00 + i) for i in range(KIB64 // 3)),  # one label, distinct CJK
        ".".join(
            "".join(chr(0x4E00 + i * 300 + j) for j in range(300)) for i in range(KIB64 // 900)
        ),  # many 900-byte labels of distinct CJK
        ".".join("\u0301" + chr(0x4E00 + i) * 20 for i in range(KIB64 // 62)),  # refused
        "\u00fc." * (KIB64 // 3) + "test",  # many short labels
        "\u00ad" * (KIB64 // 2),  # nothing but ignorables
    ],
    ids=["one-label", "900-byte-labels", "refused-labels", "short-labels", "ignorables"],
)
def test_work_is_linear_in_the_host(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """ada is never handed more than a label of MAX_LABEL_BYTES or a host it takes, nor
    more than a few times the host's bytes in all; at most MAX_LENIENT labels are encoded
    in Python (a bound on operations, not on time)."""
    counted = Counted()
    monkeypatch.setattr(hosts, "idna_to_ascii", counted)
    encoded: list[int] = []
    real_punycode = hosts._punycode

    def punycode(label: str, limit: int) -> str | None:
        encoded.append(len(label))
        return real_punycode(label, limit)

    monkeypatch.setattr(hosts, "_punycode", punycode)
    out = host_to_ascii(host)
    size = len(host.encode())
    assert isinstance(out, str)
    assert counted.largest <= MAX_LABEL_BYTES
    assert counted.total <= 3 * size + 8 * counted.calls
    assert len(encoded) <= MAX_LENIENT
    assert all(n <= hosts.MAX_DNS_LABEL for n in encoded)


def test_the_canonical_url_of_an_idn_is_ascii() -> None:
    assert canonicalize("http://☃.test/snow.html") == "http://xn--n3h.test/snow.html"
    c = parse("HTTP://User@☃\uff0eTEST:8080/a/../snow.html?x#frag")
    assert c is not None and c.url == "http://xn--n3h.test/snow.html?x"


def test_only_the_labels_a_dns_name_can_hold_are_read() -> None:
    """A host of thousands of labels: the last MAX_DNS_LABELS are read (a listed host under
    them is found), those further left keep their text, and the result reads back the same."""
    host = "\u00fc\u05d0." * 3000 + "\u2603.\u00fc." * 100 + "listed.test"
    found = canonical_host(host)
    assert found is not None
    labels = found[0].split(".")
    assert labels[-3:] == ["xn--tda", "listed", "test"]
    assert labels[-MAX_DNS_LABELS] == "xn--tda"  # the last label read ...
    assert labels[-MAX_DNS_LABELS - 1] == "%E2%98%83"  # ... and the first kept as text
    assert labels[0] == "%C3%BC%D7%90"  # refused, and left of the window: its bytes
    assert canonical_host(found[0]) == found
    blocklist = Blocklist.from_entries(["http://\u00fc.listed.test/page.html", "whole.test/"])
    assert blocklist.match(f"http://{host}/page.html") is not None  # under ü.listed.test
    assert blocklist.match(f"http://{host}/other.html") is None
    assert blocklist.match(f"http://{host.replace('listed', 'whole')}/x") is not None
    assert blocklist.match(f"http://{host.replace('.listed', '')}/page.html") is None


@PROPERTY
@given(st.binary(max_size=64))
def test_escaping_by_table_is_escaping_by_pattern(data: bytes) -> None:
    """canonical._escape writes bytes as %XX through a translate table (C speed); it must
    escape exactly what each pattern matches, as the per-byte substitution did."""
    from blocklist_addon.urls import canonical

    s = data.decode("latin-1")
    for pattern in (
        canonical._NEEDS_ESCAPE,
        canonical._PATH_NEEDS_ESCAPE,
        canonical._HOST_NEEDS_ESCAPE,
    ):
        expected = pattern.sub(lambda m: f"%{ord(m.group()):02X}", s)
        assert canonical._escape(s, pattern) == expected
