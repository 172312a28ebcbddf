"""The directory walk stops at a host's deepest directory entry (issue 21, item 4): the
snapshot records one depth byte per host key, and matching with depths is matching without
them (every directory walked, as snapshots written before them are read)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.matcher import (
    WALK_FLOOR,
    Blocklist,
    compile_entry,
    directory_depth,
    expression_of,
)
from blocklist_addon.urls.snapshot import (
    UNKNOWN_DEPTH,
    Snapshot,
    SnapshotError,
    expression_digest,
    frame,
    host_key,
)


def without_depths(entries: list[str]) -> Blocklist:
    """The list as the sync wrote it before depths: four items an entry."""
    compiled = [compile_entry(e) for e in entries]
    return Blocklist(
        Snapshot.build(
            (expression_digest(expression_of(c)), host_key(c.host), "default", None)
            for c in compiled
            if c is not None
        )
    )


def test_directory_depth() -> None:
    depths = {
        "listed.test/": 1,
        "listed.test/a/": 2,
        "listed.test/a/b/c/": 4,
        "listed.test/a/page.html": 0,
        "listed.test/a/?q=1": 0,  # an exact query: the walk never meets it
        "listed.test/a/b": 0,
    }
    for entry, depth in depths.items():
        c = compile_entry(entry)
        assert c is not None
        assert directory_depth(c) == depth, entry


def test_the_snapshot_keeps_the_deepest_directory_of_each_host() -> None:
    bl = Blocklist.from_entries(
        [
            "a.test/x/y/",
            "a.test/x/",
            "a.test/page.html",
            "b.test/page.html",
            "c.test/" + "d/" * 300,
            "www.a.test/",
        ]
    )
    depth = bl.snapshot.host_depth
    assert (depth("a.test"), depth("b.test"), depth("www.a.test")) == (3, 0, 1)
    assert depth("c.test") == UNKNOWN_DEPTH  # deeper than a byte holds: every directory
    assert depth("unlisted.test") == UNKNOWN_DEPTH
    # Without depths (an older snapshot), every host reads as unknown.
    old = without_depths(["a.test/x/y/", "b.test/page.html"]).snapshot
    assert "depths" not in json.loads(old.to_bytes()[-32 - _metadata_size(old) : -32])
    assert old.host_depth("a.test") == old.host_depth("b.test") == UNKNOWN_DEPTH


def _metadata_size(snapshot: Snapshot) -> int:
    data = snapshot.to_bytes()
    return int.from_bytes(data[12 + 7 * 4 : 12 + 8 * 4], "little")


def test_a_host_with_an_unknown_depth_in_one_entry_walks_every_directory() -> None:
    entries = [
        (expression_digest("a.test/x/"), host_key("a.test"), "l", None, 2),
        (expression_digest("a.test/y/z/"), host_key("a.test"), "l", None, None),
        (expression_digest("b.test/x/"), host_key("b.test"), "l", None, 2),
    ]
    snapshot = Snapshot.build(entries)
    assert snapshot.host_depth("a.test") == UNKNOWN_DEPTH
    assert snapshot.host_depth("b.test") == 2
    with pytest.raises(ValueError, match="directory depth"):
        Snapshot.build([(expression_digest("a.test/"), host_key("a.test"), "l", None, -1)])


def test_bad_depths_are_refused() -> None:
    good = Blocklist.from_entries(["a.test/x/", "b.test/"]).snapshot.to_bytes()
    lengths = [int.from_bytes(good[12 + 4 * i : 16 + 4 * i], "little") for i in range(8)]
    start = 48 + sum(lengths[:7])
    document = json.loads(good[start : start + lengths[7]])
    header = __import__("struct").Struct("<8sI8I4x")
    sections = []
    at = 48
    for length in lengths:
        sections.append(good[at : at + length])
        at += length
    for depths, reason in [
        (base64.b64encode(b"\x01").decode(), "host depths do not match the hosts"),
        ("not base64!", "bad host depths"),
        (7, "bad host depths"),
    ]:
        sections[7] = json.dumps(document | {"depths": depths}).encode()
        with pytest.raises(SnapshotError, match=reason):
            Snapshot.from_bytes(frame(header, good[:8], 1, sections))
    sections[7] = json.dumps(document).encode()
    assert Snapshot.from_bytes(frame(header, good[:8], 1, sections)).host_depth("a.test") == 2


def test_a_directory_deeper_than_the_floor_matches_below_it() -> None:
    deep = "listed.test/" + "".join(f"d{i}/" for i in range(40))
    bl = Blocklist.from_entries([deep, "listed.test/page.html"])
    assert bl.snapshot.host_depth("listed.test") == 41
    below = "http://listed.test/" + "".join(f"d{i}/" for i in range(40)) + "e/f/g.html"
    found = bl.match(below)
    assert found is not None and found.digest == expression_digest(deep).hex()
    assert bl.match("http://listed.test/" + "".join(f"d{i}/" for i in range(39))) is None
    # and through a redirector, as the embedded search finds it
    found = bl.match("http://r.example.net/?u=" + below)
    assert found is not None and found.embedded


@st.composite
def deep_lists(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Directory, page and query entries of random depths (some past WALK_FLOOR) on a few
    hosts, and request URLs around them: below, above, beside, with %3F and trailing /."""
    segment = st.sampled_from(["a", "b", "a%3Fb", "c.html"])
    paths = st.lists(segment, max_size=WALK_FLOOR + 8).map("/".join)
    hosts = st.sampled_from(["listed.test", "www.listed.test", "other.test"])
    entries = draw(
        st.lists(
            st.tuples(hosts, paths, st.sampled_from(["/", "", "?q=1"])).map(
                lambda t: f"{t[0]}/{t[1]}{t[2]}"
            ),
            min_size=1,
            max_size=6,
        )
    )
    urls = draw(
        st.lists(
            st.tuples(hosts, paths, st.sampled_from(["/", "", "?q=1", "/x.html", "%3F/"])).map(
                lambda t: f"http://{t[0]}/{t[1]}{t[2]}"
            ),
            min_size=1,
            max_size=8,
        )
    )
    return entries, urls


@settings(max_examples=300, deadline=None)
@given(deep_lists())
def test_matching_with_depths_is_matching_without(case: tuple[list[str], list[str]]) -> None:
    """The walk's stop changes the work, never the answer."""
    entries, urls = case
    with_depths = Blocklist.from_entries(entries)
    every_directory = without_depths(entries)
    for url in urls:
        assert with_depths.match(url) == every_directory.match(url), url
