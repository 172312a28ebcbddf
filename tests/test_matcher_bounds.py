"""The work of one ``Blocklist.match`` is linear in the URL (issue 21, item 4): lookups
counted, never timed, over URLs built from the hostile shapes' fragments and random ones."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.canonical import _PLAIN_HOST, MAX_DNS_NAME, _canonical_host, parse
from blocklist_addon.urls.embedded import MARKER_WINDOW
from blocklist_addon.urls.matcher import WALK_FLOOR, Blocklist, compile_entry, expression_of
from blocklist_addon.urls.snapshot import Snapshot, expression_digest, host_key
from testlab.adversarial import ADVERSARIAL, CountingBlocklist

#: Hosts the fragments carry (pages they never name, so nothing ends a match early), a whole
#: host and a directory, so that the directory walks happen too. No host is a suffix of
#: another: a URL's host has at most one listed suffix here.
LIST = [
    "listed.test/x.html",
    "a.test/none.html",
    "h1.test/y",
    "h.test/none",
    "whole.test/",
    "a.test/d/",
]

#: The repeating units of testlab.adversarial's shapes, and pieces that join them.
FRAGMENTS = [
    "http://",
    "http://h.test/",
    "http://whole.test/",
    "www.h.test/",
    "a=h.test&",
    "=//",
    "k=v&",
    "%25",
    "%C3%A9%FF",
    "www.a/../",
    "www.h.test/../",
    "a=aHR0cDovL2EudGVzdC8&",
    "/687474703a2f2f612e74",
    "/__http://a.test/*__;JQ!!",
    "__http:",
    "/h.test",
    "/h\u3002test",
    "/aHR0cDovL2EudGVzdC9h",
    "/aH/R0/cD/ov",
    "u=a1aHR0cDovL2EudGVzdC8&",
    "/RU=http%3A%2F%2Fa.test%2Fx",
    "http://a.test%252F@",
    "/plain/http://a.test/x@png",
    "/tag/a.test/page/2",
    "url=ssl:a.test/x&",
    "u=http://a.test/&",
    "a=a.b.c.d.e.f.g.h.i.j.k.test&",
    "a.",
    "a/",
    "a%2F",
    "listed.test/",
    "?",
    "/",
    "&",
    "=",
    ".",
    "www.",
]

PREFIXES = [
    "http://r.example.net/?u=",
    "http://r.example.net/",
    "http://listed.test/",
    "http://a.test/?",
    "http://",
]


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    """A prefix, then fragments each repeated a random number of times (up to ~64 KiB)."""
    parts = draw(
        st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 800)), min_size=1, max_size=5)
    )
    return draw(st.sampled_from(PREFIXES)) + "".join(fragment * k for fragment, k in parts)


URLS = st.one_of(
    hostile_urls(),
    st.builds(
        str.__add__,
        st.sampled_from(PREFIXES),
        st.text(alphabet="ahtw.:/?&=%2F5@#\\x-", max_size=3000),
    ),
    st.text(max_size=500),
)

#: At most this many suffixes of one host are probed: each but the host itself starts after
#: a dot and is at most MAX_DNS_NAME characters of labels and dots.
SUFFIXES = (MAX_DNS_NAME + 1) // 2 + 1


#: How many readings of a text's last candidates may each walk their directories (see below).
READINGS = 3


def lookups_bound(n: int) -> tuple[int, int]:
    """The most host probes and expression digests a URL of ``n`` bytes may cost.

    Host probes: a probe is a suffix of a candidate's host, so one a dot of the text (a dot
    takes a label character before it: half a probe a byte for one reading of the text). A
    candidate cut by the window or the length cap inside its host is dropped
    (tests/test_embedded.py), so only the hosts of the last MARKER_WINDOW candidates, which
    end at the text's end, may run across other values: the constant term, MARKER_WINDOW + 1
    hosts of SUFFIXES probes. The readings of the text (escapes, base64, resolved dot
    segments) overlap little in practice; the fragments' worst is 0.14 a byte ("www").

    Digests: a candidate on a listed host hashes at most 6 exact expressions and one digest
    per directory of its path down to its host's deepest directory entry, WALK_FLOOR at
    least (the snapshot's depths; LIST's are shallower), so a long path costs no more
    than a short one: what is left grows with the candidates on listed hosts, each of which
    holds a listed host's text and most a marker (measured: 0.14 a byte at most, on runs of
    "http://" or "a/" after a listed host; the last MARKER_WINDOW + 1 candidates may each
    walk their WALK_FLOOR directories, in each of READINGS readings of the text's tail: as
    written, cut at imgproxy's "@<ext>" (``/plain/<URL>@png`` gives both) and with its dot
    segments resolved; "/plain/http://a.test/x@png" repeated reaches 334 digests, from 241
    bytes on)."""
    hosts = n // 2 + (MARKER_WINDOW + 1) * SUFFIXES
    digests = n // 4 + (6 + WALK_FLOOR) * READINGS * (MARKER_WINDOW + 1)
    return hosts, digests


def unknown_depth_bound(n: int) -> int:
    """The digests of a list whose depths are unknown (a snapshot written without them):
    one per directory, and up to MARKER_WINDOW + 1 candidates of one text can run through
    the same marker-free directories before the length cap ends them ("directory clusters":
    3.9 a byte), so (MARKER_WINDOW + 1) / 2 a byte, plus the exact expressions of the last
    few candidates."""
    return (MARKER_WINDOW + 1) * n // 2 + 6 * (MARKER_WINDOW + 1) + 64


def without_depths(entries: list[str]) -> CountingBlocklist:
    """The list as a snapshot written before depths were recorded (no fifth item)."""
    compiled = [compile_entry(e) for e in entries]
    return CountingBlocklist(
        Snapshot.build(
            (expression_digest(expression_of(c)), host_key(c.host), "default", None)
            for c in compiled
            if c is not None
        )
    )


BLOCKLIST = CountingBlocklist.from_entries(LIST)
#: The pure-Python reference: the compiled lookups must make exactly its lookups.
REFERENCE = CountingBlocklist.from_entries(LIST, compiled=False)
UNKNOWN_DEPTHS = without_depths(LIST)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(URLS)
@example("http://r.example.net/?u=www.a/../" + "/plain/http://a.test/x@png" * 8)  # 298 digests
def test_lookups_per_byte_are_bounded(url: str) -> None:
    """Host probes and digests stay linear in the URL's length, and no probe hashes more
    than a DNS name (a host of 4,000 labels once hashed 4,000 suffixes of up to 8 KiB)."""
    BLOCKLIST.reset()
    found = BLOCKLIST.match(url)
    n = len(url.encode("utf-8"))
    hosts, digests = lookups_bound(n)
    assert BLOCKLIST.hosts <= hosts, (BLOCKLIST.hosts, n)
    assert BLOCKLIST.digests <= digests, (BLOCKLIST.digests, n)
    assert BLOCKLIST.host_bytes <= MAX_DNS_NAME * BLOCKLIST.hosts
    REFERENCE.reset()
    assert REFERENCE.match(url) == found
    # The same lookups, but that the compiled walk stops at a hit where the reference
    # has made a listed host's digests already.
    assert (REFERENCE.hosts, REFERENCE.host_bytes) == (BLOCKLIST.hosts, BLOCKLIST.host_bytes)
    if found is None:
        assert REFERENCE.digests == BLOCKLIST.digests
    else:
        assert REFERENCE.digests >= BLOCKLIST.digests


def test_the_adversarial_shapes_are_within_the_bound() -> None:
    """Each of testlab.adversarial's shapes, and their worst figures as measured when the
    bound was set (so that a change that doubles one is seen)."""
    per_byte = {}
    for name, url in ADVERSARIAL.items():
        BLOCKLIST.reset()
        BLOCKLIST.match(url)
        n = len(url.encode("utf-8"))
        hosts, digests = lookups_bound(n)
        assert BLOCKLIST.hosts <= hosts and BLOCKLIST.digests <= digests, name
        per_byte[name] = BLOCKLIST.lookups / n
        REFERENCE.reset()
        REFERENCE.match(url)
        assert (REFERENCE.hosts, REFERENCE.digests) == (BLOCKLIST.hosts, BLOCKLIST.digests), name
    assert max(per_byte, key=per_byte.__getitem__) == "www"  # 0.136: host probes
    assert per_byte["bare values"] < 0.1  # 0.70 before the window stopped cutting hosts
    # One digest a directory, every directory, before the walk stopped at the depths:
    # 0.5 and 3.9 a byte (16,384 and 227,869 digests); 17 and 982 now.
    assert per_byte["deep path"] < 0.001
    assert per_byte["directory clusters"] < 0.02
    assert max(per_byte.values()) < 0.14


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(URLS)
def test_lookups_are_bounded_without_depths(url: str) -> None:
    """A snapshot with no depths (written before they were recorded) walks every
    directory, as matching did then: still linear in the URL, and the same result."""
    UNKNOWN_DEPTHS.reset()
    found = UNKNOWN_DEPTHS.match(url)
    n = len(url.encode("utf-8"))
    assert UNKNOWN_DEPTHS.hosts <= lookups_bound(n)[0]
    assert UNKNOWN_DEPTHS.digests <= unknown_depth_bound(n), (UNKNOWN_DEPTHS.digests, n)
    assert found == BLOCKLIST.match(url)


def test_the_walk_stops_at_the_listed_depth() -> None:
    """The deep shapes on a list without depths cost one digest a directory (the bound
    above), and with depths WALK_FLOOR directories however deep the path."""
    for name in ("deep path", "directory clusters"):
        url = ADVERSARIAL[name]
        UNKNOWN_DEPTHS.reset()
        UNKNOWN_DEPTHS.match(url)
        BLOCKLIST.reset()
        BLOCKLIST.match(url)
        assert UNKNOWN_DEPTHS.digests <= unknown_depth_bound(len(url)), name
        assert UNKNOWN_DEPTHS.digests > 100 * BLOCKLIST.digests, name
    BLOCKLIST.reset()
    BLOCKLIST.match(ADVERSARIAL["deep path"])
    assert BLOCKLIST.digests == 1 + WALK_FLOOR  # the path, then "/" and 15 directories


@settings(max_examples=2000)
@given(st.text(alphabet="ab0x19_-~!$&'()*+,;=.AX%", max_size=24))
def test_the_plain_host_fast_path_agrees_with_the_full_one(host: str) -> None:
    """canonical's fast path for plain hosts (now with RFC 3986's sub-delimiters, which a
    hostile URL's bare values hold by the thousand) gives what the slow steps give."""
    if not _PLAIN_HOST.fullmatch(host):
        return
    # A trailing dot takes the slow path, whose first steps remove it.
    assert _canonical_host(host) == _canonical_host(host + ".") == (host, False)


SNAPSHOT_ENTRIES = [f"h{i}.test/p{i % 7}/" for i in range(300)] + [
    f"{i}.example/" for i in range(50)
]
SNAPSHOT = Blocklist.from_entries(SNAPSHOT_ENTRIES).snapshot


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([expression_of(parse(e)) for e in SNAPSHOT_ENTRIES]),
            st.text(max_size=12),
        ),
        max_size=12,
    ),
    st.lists(st.binary(min_size=7, max_size=9), max_size=4),
)
def test_the_batched_lookups_are_the_single_ones(expressions: list[str], junk: list[bytes]) -> None:
    """find_first and listed_hosts (one call for all of a URL's digests or host suffixes, as
    the matcher and the count above use them) answer what find and has_host answer one by
    one, in order, also for keys of the wrong size."""
    digests = [expression_digest(e) for e in expressions] + junk
    singles = [(at, SNAPSHOT.find(d)) for at, d in enumerate(digests)]
    first = next(((at, index) for at, index in singles if index is not None), None)
    assert SNAPSHOT.find_first(digests) == first
    hosts = [e.split("/", 1)[0] for e in expressions]
    listed = [h for h in hosts if SNAPSHOT.has_host(host_key(h))]
    assert SNAPSHOT.listed_hosts(hosts) == listed
    assert any(SNAPSHOT.find(d) is not None for d in digests) == (first is not None)
