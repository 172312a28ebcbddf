"""The sync's compiled feed entries (``sync/compiled.py``) with their directory depths.

A feed's entries are kept in the store between runs as digests, host keys, ids and, since
BLFEED2, one depth byte a record: the deepest directory entry of the record's host in that
feed (never the entry's own, so the kept entries tell no more than the snapshot's per-host
depths do). Blobs the previous release wrote (BLFEED1, no depths) still read, as unknown
depths. Pure tests; ``tests/test_sync_depths.py`` runs the real sync.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.matcher import compile_entry, directory_depth, expression_of
from blocklist_addon.urls.snapshot import (
    UNKNOWN_DEPTH,
    Snapshot,
    expression_digest,
    host_key,
)
from sync import compiled
from sync.feeds import FeedEntry, parse_feed

H1 = bytes([9, 10, 11, 12])
H2 = bytes([1, 2, 3, 4])

#: ``compiled.pack`` of the previous release (BLFEED1) of three entries: one with an id on
#: host H1, one hostless (a sha256 feed's), one with a non-ASCII id on H1.
GOLDEN_V1 = bytes.fromhex(
    "424c46454544310a03000000"
    "0001020304050607" "090a0b0c" "01"
    "ffffffffffffffff" "00000000" "00"
    "08090a0b0c0d0e0f" "090a0b0c" "01"
    "69642d31" "00" "" "00" "c3bc"
)  # fmt: skip

#: The same three entries packed by this release, the first a directory entry of depth 3,
#: the last a page: both records on H1 say 3.
GOLDEN_V2 = bytes.fromhex(
    "424c46454544320a03000000"
    "0001020304050607" "090a0b0c" "01" "03"
    "ffffffffffffffff" "00000000" "00" "ff"
    "08090a0b0c0d0e0f" "090a0b0c" "01" "03"
    "69642d31" "00" "" "00" "c3bc"
)  # fmt: skip

ENTRIES = [
    FeedEntry(bytes(range(8)), H1, "id-1", depth=3),
    FeedEntry(b"\xff" * 8, None, None),
    FeedEntry(bytes(range(8, 16)), H1, "ü", depth=0),
]


def depths(entries: list[FeedEntry]) -> list[int | None]:
    return [e.depth for e in entries]


def test_a_blob_of_the_previous_release_reads_whole_with_unknown_depths() -> None:
    entries = list(compiled.unpack(GOLDEN_V1))
    assert [(e.digest, e.host_key, e.entry_id) for e in entries] == [
        (bytes(range(8)), H1, "id-1"),
        (b"\xff" * 8, None, None),
        (bytes(range(8, 16)), H1, "ü"),
    ]
    assert depths(entries) == [None, None, None]


def test_this_release_writes_blfeed2_with_the_hosts_deepest_directory() -> None:
    blob = compiled.pack(ENTRIES)
    assert blob == GOLDEN_V2
    entries = list(compiled.unpack(blob))
    assert entries == ENTRIES  # digests, host keys, ids
    assert depths(entries) == [3, None, 3]


def test_the_kept_entries_never_tell_an_entrys_own_depth() -> None:
    """Two hosts, each with pages and directories: every record of a host carries the same
    byte, whichever entry is the directory."""
    entries = [
        FeedEntry(expression_digest(f"e{i}"), H1 if i % 2 else H2, None, depth=d)
        for i, d in enumerate([0, 5, 2, 0, 1, 0])
    ]
    assert depths(list(compiled.unpack(compiled.pack(entries)))) == [2, 5, 2, 5, 2, 5]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ([0], [0]),
        ([1], [1]),
        ([254], [254]),
        ([255], [None]),  # the snapshot's "unknown or deeper": walks every directory
        ([10_000], [None]),
        ([None], [None]),  # unknown
        ([7, None], [None, None]),  # one unknown entry makes its host unknown
        ([None, 7], [None, None]),
    ],
)
def test_depth_bytes(given: list[int | None], kept: list[int | None]) -> None:
    entries = [
        FeedEntry(expression_digest(f"d{i}"), H1, None, depth=d) for i, d in enumerate(given)
    ]
    assert depths(list(compiled.unpack(compiled.pack(entries)))) == kept


def test_an_empty_feed_packs_and_reads() -> None:
    assert list(compiled.unpack(compiled.pack([]))) == []


@pytest.mark.parametrize("blob", [GOLDEN_V1, GOLDEN_V2])
def test_damaged_blobs_are_refused(blob: bytes) -> None:
    header = len(compiled.MAGIC) + 4
    for damaged in (
        blob[: header + 5],  # records cut short
        blob[:-3] + blob[-2:],  # an id too few
        blob + b"\0",  # an id too many
        b"BLFEED3\n" + blob[8:],  # a format this release does not know
        blob[:6],
    ):
        with pytest.raises(compiled.CompiledError):
            list(compiled.unpack(damaged))


def feed_entries(lines: list[str]) -> list[FeedEntry]:
    return list(parse_feed(("\n".join(lines) + "\n").encode(), "text").entries)


def test_url_feeds_give_each_entry_its_directory_depth() -> None:
    lines = [
        "http://listed.example.com/gallery/page.html",
        "listed.example.com/dir/",
        "listed.example.com/a/b/c/",
        "whole-site.test/",
        "http://q.example.net/view.php?id=42",
        "q.example.net/dir/?x=1",
        "HTTP://WWW.Listed.Example.COM.:80/x/./y/../",
    ]
    assert depths(feed_entries(lines)) == [0, 2, 4, 1, 0, 0, 2]
    hashed = parse_feed(b"ab" * 32 + b"\n", "sha256")
    assert depths(list(hashed.entries)) == [None]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.example.com", "b.example.net", "c.example.org", "192.0.2.7"]),
            st.lists(st.sampled_from(["x", "y", "%7E", "z z"]), max_size=20),
            st.sampled_from(["/", "/page.html", "/?q=1", "/p?q"]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sets(st.integers(0, 11)),
)
def test_synced_depths_are_the_libraries(
    shapes: list[tuple[str, list[str], str]], suppressed: set[int]
) -> None:
    """Kept and read back, a feed's entries build a snapshot with the host depths
    ``Blocklist.from_entries`` records for them; with some entries left out (suppressed),
    never shallower than theirs."""
    urls = [
        f"http://{host}/" + "".join(f"{s}/" for s in segs) + tail.lstrip("/")
        for host, segs, tail in shapes
    ]
    entries = feed_entries(urls)
    kept = list(compiled.unpack(compiled.pack(entries)))

    def host_depths(rows: list[FeedEntry], skip: frozenset[int] = frozenset()) -> dict[str, int]:
        snapshot = Snapshot.build(
            (e.digest, e.host_key, "l", e.entry_id, e.depth)
            for i, e in enumerate(rows)
            if i not in skip
        )
        return {h: snapshot.host_depth(h) for h, _, _ in shapes}

    library = {}
    for url in urls:
        c = compile_entry(url)
        assert c is not None
        library[c.host] = max(library.get(c.host, 0), directory_depth(c))
        assert expression_digest(expression_of(c)) in {e.digest for e in entries}
    assert host_depths(kept) == host_depths(entries) == library
    assert all(host_key(h) in {e.host_key for e in kept} for h in library)
    within = host_depths(kept, frozenset(suppressed))
    exact = host_depths(entries, frozenset(suppressed))
    for h, depth in within.items():
        if depth != UNKNOWN_DEPTH:
            assert depth >= exact[h]
