import hashlib
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.snapshot import (
    DIGEST_SIZE,
    FORMAT_VERSION,
    HOST_KEY_SIZE,
    MAGIC,
    Snapshot,
    SnapshotError,
    expression_digest,
    host_key,
)

digests = st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)
host_keys = st.none() | st.binary(min_size=HOST_KEY_SIZE, max_size=HOST_KEY_SIZE)
list_names = st.sampled_from(["iwf", "local", "partner-ü"]) | st.text(max_size=8)
entry_ids = st.none() | st.text(max_size=12)
entry_lists = st.lists(st.tuples(digests, host_keys, list_names, entry_ids), max_size=40)


Entry = tuple[bytes, bytes | None, str, str | None]


def listed(url: str, host: str, name: str = "iwf", entry_id: str | None = None) -> Entry:
    return (expression_digest(url), host_key(host), name, entry_id)


def sample_snapshot() -> Snapshot:
    """Small, but with every section in use: several lists, ids, hostless entries."""
    return Snapshot.build(
        [
            listed("listed.example.com/page.html", "listed.example.com", "iwf", "e1"),
            listed("listed.example.com/dir/", "listed.example.com", "iwf"),
            listed("www.example.net/", "www.example.net", "local", "local-7"),
            listed("bad.test/a?b=c", "bad.test", "local"),
            (expression_digest("hashed.invalid/only"), None, "iwf", None),
        ],
        {"version": "v1", "source": "https://feed.example.org/list"},
    )


SAMPLE = sample_snapshot().to_bytes()
SAMPLE_DIGESTS = [SAMPLE[48 + 8 * i : 56 + 8 * i] for i in range(5)]
#: Pins the serialized form: a change here needs a new FORMAT_VERSION.
GOLDEN_CHECKSUM = "68fd6ce6351e3b3649d4d8e1e6b0c1865eada40481f3d7a30e45df8c45beffe3"


def reseal(data: bytes) -> bytes:
    """The same bytes with a valid checksum: what a crafted snapshot would look like."""
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def assert_lookups_never_fail(snapshot: Snapshot, probes: list[bytes]) -> None:
    for index in range(len(snapshot)):
        name, entry_id = snapshot.entry(index)
        assert isinstance(name, str) and isinstance(entry_id, str)
    for probe in probes:
        found = snapshot.find(probe)
        assert found is None or 0 <= found < len(snapshot)
        assert snapshot.has_host(probe[:HOST_KEY_SIZE]) in (True, False)


def test_digests_are_truncated_sha256() -> None:
    expression = "listed.example.com/page.html"
    assert expression_digest(expression) == hashlib.sha256(expression.encode()).digest()[:8]
    assert host_key("listed.example.com") == hashlib.sha256(b"listed.example.com").digest()[:4]


@settings(deadline=None)
@given(entry_lists, st.lists(digests, max_size=20))
def test_round_trip_preserves_every_lookup(entries: list[Entry], absent: list[bytes]) -> None:
    snapshot = Snapshot.from_bytes(Snapshot.build(entries).to_bytes())
    first: dict[bytes, tuple[bytes | None, str, str | None]] = {}
    for digest, host, name, entry_id in entries:
        first.setdefault(digest, (host, name, entry_id))

    assert len(snapshot) == len(first)
    assert snapshot.hostless == sum(host is None for host, _, _ in first.values())
    for digest, (host, name, entry_id) in first.items():
        index = snapshot.find(digest)
        assert index is not None
        assert snapshot.entry(index) == (name, entry_id or digest.hex())
        if host is not None:
            assert snapshot.has_host(host)
    for digest in absent:
        if digest not in first:
            assert snapshot.find(digest) is None


def test_many_entries_spread_over_buckets() -> None:
    rng = random.Random(7)
    entries = [(rng.randbytes(8), rng.randbytes(4), f"list{i % 3}", None) for i in range(20_000)]
    snapshot = Snapshot.from_bytes(Snapshot.build(entries).to_bytes())
    assert len(snapshot) == len(entries)
    for i, (digest, host, name, _) in enumerate(entries):
        assert snapshot.entry(snapshot.find(digest)) == (name, digest.hex()), i
        assert snapshot.has_host(host)
    present = {digest for digest, *_ in entries}
    absent = [rng.randbytes(8) for _ in range(2_000)]
    assert all(snapshot.find(digest) is None for digest in absent if digest not in present)
    assert sum(snapshot.has_host(rng.randbytes(4)) for _ in range(2_000)) < 5


def test_a_match_spanning_two_digests_is_not_a_match() -> None:
    a, b = bytes.fromhex("0000112233445566"), bytes.fromhex("0000778899aabbcc")
    spanning = a[4:] + b[:4]  # appears in the sorted blob a + b, but not as a digest
    assert Snapshot.build([(a, None, "iwf", None), (b, None, "iwf", None)]).find(spanning) is None
    both = Snapshot.build(
        [(a, None, "iwf", None), (b, None, "iwf", None), (spanning, None, "x", None)]
    )
    assert both.entry(both.find(spanning)) == ("x", spanning.hex())


def test_duplicates_are_kept_once_first_wins() -> None:
    digest = expression_digest("listed.example.com/page.html")
    snapshot = Snapshot.build(
        [
            (digest, host_key("listed.example.com"), "iwf", "first"),
            (digest, None, "local", "second"),
        ]
    )
    assert len(snapshot) == 1
    assert snapshot.hostless == 0
    assert snapshot.entry(snapshot.find(digest)) == ("iwf", "first")
    assert snapshot.meta["lists"] == {"iwf": 1}


def test_entry_id_is_derived_from_the_digest_when_not_given() -> None:
    snapshot = sample_snapshot()
    digest = expression_digest("listed.example.com/dir/")
    assert snapshot.entry(snapshot.find(digest)) == ("iwf", digest.hex())
    page = expression_digest("listed.example.com/page.html")
    assert snapshot.entry(snapshot.find(page)) == ("iwf", "e1")


def test_hostless_entries_are_counted() -> None:
    snapshot = sample_snapshot()
    assert snapshot.hostless == 1
    assert snapshot.find(expression_digest("hashed.invalid/only")) is not None
    assert not snapshot.has_host(host_key("hashed.invalid"))


def test_meta_keeps_what_the_caller_gave_and_adds_counts() -> None:
    given = {"version": "v2", "fetched_at": 1.5, "feeds": [{"name": "iwf"}], "entries": -1}
    snapshot = Snapshot.build([listed("listed.example.com/", "listed.example.com")], given)
    assert snapshot.meta == {**given, "entries": 1, "lists": {"iwf": 1}}
    assert Snapshot.from_bytes(snapshot.to_bytes()).meta == snapshot.meta


def test_empty_snapshot() -> None:
    snapshot = Snapshot.from_bytes(Snapshot.build([]).to_bytes())
    assert len(snapshot) == 0
    assert snapshot.hostless == 0
    assert snapshot.meta == {"entries": 0, "lists": {}}
    assert snapshot.find(expression_digest("listed.example.com/")) is None
    assert not snapshot.has_host(host_key("listed.example.com"))
    with pytest.raises(IndexError):
        snapshot.entry(0)


def test_lookups_with_keys_of_the_wrong_size_find_nothing() -> None:
    snapshot = sample_snapshot()
    digest = expression_digest("listed.example.com/page.html")
    assert snapshot.find(digest[:7]) is None
    assert snapshot.find(digest + b"\0") is None
    assert not snapshot.has_host(host_key("listed.example.com")[:3])
    assert not snapshot.has_host(b"")


def test_entry_index_out_of_range() -> None:
    snapshot = sample_snapshot()
    for index in (-1, len(snapshot)):
        with pytest.raises(IndexError):
            snapshot.entry(index)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ((b"short", None, "iwf", None), ValueError),
        ((bytes(8), b"toolong", "iwf", None), ValueError),
        ((bytes(8), None, None, None), TypeError),
        ((bytes(8), None, "iwf", 7), TypeError),
    ],
)
def test_build_rejects_malformed_entries(entry: Entry, error: type[Exception]) -> None:
    with pytest.raises(error):
        Snapshot.build([entry])


def test_build_rejects_too_many_lists() -> None:
    entries = [(i.to_bytes(8), None, f"list{i}", None) for i in range(256)]
    with pytest.raises(ValueError, match="255"):
        Snapshot.build(entries)
    assert len(Snapshot.build(entries[:255]).meta["lists"]) == 255


def test_serialized_form_holds_no_plaintext() -> None:
    for plaintext in (b"listed.example", b"page.html", b"example.com", b"example.net", b"bad.test"):
        assert plaintext not in SAMPLE
    assert b"hashed" not in SAMPLE


def test_checksum_is_stable_for_equal_content() -> None:
    entries = [
        listed("listed.example.com/page.html", "listed.example.com", "iwf", "e1"),
        listed("www.example.net/", "www.example.net", "local"),
    ]
    one = Snapshot.build(entries, {"version": "v1", "source": "feed"})
    other = Snapshot.build(reversed(entries), {"source": "feed", "version": "v1"})
    assert one.checksum == other.checksum
    assert one.to_bytes() == other.to_bytes()
    assert one.checksum == hashlib.sha256(one.to_bytes()[:-32]).hexdigest()
    assert Snapshot.from_bytes(one.to_bytes()).checksum == one.checksum


def test_checksum_differs_for_different_content() -> None:
    base = [listed("listed.example.com/page.html", "listed.example.com", "iwf", "e1")]
    variants = [
        Snapshot.build(base, {"version": "v1"}),
        Snapshot.build(base, {"version": "v2"}),
        Snapshot.build([listed("listed.example.com/other.html", "listed.example.com")]),
        Snapshot.build([listed("listed.example.com/page.html", "listed.example.com", "local")]),
        Snapshot.build([listed("listed.example.com/page.html", "listed.example.com", "iwf", "e2")]),
        Snapshot.build([(expression_digest("listed.example.com/page.html"), None, "iwf", "e1")]),
    ]
    assert len({snapshot.checksum for snapshot in variants}) == len(variants)


def test_format_is_stable() -> None:
    """A change here means a new FORMAT_VERSION: stored versions must stay readable."""
    assert SAMPLE[:8] == MAGIC
    assert struct.unpack_from("<I", SAMPLE, 8) == (FORMAT_VERSION,)
    assert sample_snapshot().checksum == GOLDEN_CHECKSUM


def test_accepts_any_bytes_like() -> None:
    for form in (bytearray(SAMPLE), memoryview(SAMPLE)):
        assert Snapshot.from_bytes(form).to_bytes() == SAMPLE


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: b"", "truncated"),
        (lambda data: data[:50], "truncated"),
        (lambda data: data[:-1], "truncated"),
        (lambda data: data + b"\0", "after its end"),
        (lambda data: b"GIF89a" + data[6:], "bad magic"),
        (lambda data: data[:8] + struct.pack("<I", FORMAT_VERSION + 1) + data[12:], "version 2"),
        (lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:], "checksum"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 0x80]), "checksum"),
    ],
)
def test_damaged_snapshots_are_refused_with_a_reason(
    mangle: Callable[[bytes], bytes], reason: str
) -> None:
    with pytest.raises(SnapshotError, match=reason) as info:
        Snapshot.from_bytes(mangle(SAMPLE))
    assert "\n" not in str(info.value)


@settings(deadline=None)
@given(st.integers(0, len(SAMPLE) * 8 - 1))
def test_any_flipped_bit_is_caught(bit: int) -> None:
    data = bytearray(SAMPLE)
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(data)


@settings(deadline=None)
@given(st.integers(0, len(SAMPLE) - 1))
def test_any_truncation_is_caught(size: int) -> None:
    with pytest.raises(SnapshotError):
        Snapshot.from_bytes(SAMPLE[:size])


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=4))
def test_mutations_are_refused_or_harmless(changes: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE)
    for position, value in changes:
        data[position] = value
    if data == SAMPLE:
        assert Snapshot.from_bytes(data).to_bytes() == SAMPLE
    else:
        with pytest.raises(SnapshotError):
            Snapshot.from_bytes(data)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(SAMPLE) - 33), st.integers(0, 255)), max_size=6),
    st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 16)) | st.none(),
    st.lists(st.binary(min_size=8, max_size=8), max_size=8),
)
def test_crafted_snapshots_with_a_valid_checksum_never_break_lookups(
    changes: list[tuple[int, int]], moved: tuple[int, int, int] | None, probes: list[bytes]
) -> None:
    """The checksum is not a signature: whatever passes it must still be safe to use."""
    data = bytearray(SAMPLE)
    if moved is not None:  # shift a boundary between two sections
        grow, shrink, delta = moved
        lengths = list(struct.unpack_from("<8I", data, 12))
        lengths[grow] += delta
        lengths[shrink] = max(0, lengths[shrink] - delta)
        struct.pack_into("<8I", data, 12, *lengths)
    for position, value in changes:
        data[position] = value
    try:
        snapshot = Snapshot.from_bytes(reseal(bytes(data)))
    except SnapshotError:
        return
    assert_lookups_never_fail(snapshot, [*probes, *SAMPLE_DIGESTS])
