import hashlib
import json
import random
import struct
from collections.abc import Callable
from itertools import accumulate, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls import snapshot as snapshot_module
from blocklist_addon.urls.canonical import dns_suffixes
from blocklist_addon.urls.snapshot import (
    DIGEST_SIZE,
    FORMAT_VERSION,
    HOST_KEY_SIZE,
    MAGIC,
    UNKNOWN_DEPTH,
    Snapshot,
    SnapshotError,
    expression_digest,
    frame,
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
    in_order = sorted(first)  # entries are numbered in sorted-digest order
    for digest, (host, name, entry_id) in first.items():
        index = snapshot.find(digest)
        assert index == in_order.index(digest)
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
    digest = expression_digest("hashed.invalid/only")
    assert snapshot.find(digest) == 2  # the third of the five digests in sorted order
    assert snapshot.entry(snapshot.find(digest)) == ("iwf", digest.hex())
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


# -- what each refusal says (the proxy logs it when it refuses a stored version) ----------

HEADER = struct.Struct("<8sI8I4x")
SECTIONS = (
    "digests",
    "digest_index",
    "hosts",
    "host_index",
    "id_offsets",
    "list_index",
    "id_blob",
    "metadata",
)
#: Where SAMPLE's host keys are: its host index says [96, 108).
HOSTS_AT = (96, 108)


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def crafted(**sections: bytes) -> bytes:
    """SAMPLE with some sections replaced, framed and checksummed as the writer does: what
    a crafted (or miscompiled) snapshot looks like to the loader."""
    lengths = struct.unpack_from("<8I", SAMPLE, 12)
    parts = [SAMPLE[a:b] for a, b in pairwise(accumulate(lengths, initial=48))]
    for name, value in sections.items():
        parts[SECTIONS.index(name)] = value
    return frame(HEADER, MAGIC, FORMAT_VERSION, parts)


def metadata(**fields: object) -> bytes:
    document = {"hostless": 1, "lists": ["iwf", "local"], "meta": {}} | fields
    return json.dumps(document).encode()


def refusal(data: bytes) -> str:
    with pytest.raises(SnapshotError) as info:
        Snapshot.from_bytes(data)
    return str(info.value)


def test_sample_layout() -> None:
    """The offsets the crafted snapshots below rely on."""
    assert crafted() == SAMPLE
    assert SAMPLE[HOSTS_AT[0] : HOSTS_AT[1]] == b"".join(
        sorted(host_key(h) for h in ("listed.example.com", "www.example.net", "bad.test"))
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated snapshot: only 0 bytes"),
        (SAMPLE[:-1], "truncated snapshot: 328 of 329 bytes"),
        (SAMPLE + b"\0\0", "snapshot has 2 bytes after its end"),
        (b"GIF89a" + SAMPLE[6:], "not a blocklist snapshot (bad magic)"),
        (SAMPLE[:8] + u32(2) + SAMPLE[12:], "unsupported snapshot format version 2 (this reads 1)"),
        (SAMPLE[:100] + b"\0" + SAMPLE[101:], "snapshot checksum mismatch: the data is corrupted"),
        # the smallest frame (80 bytes, every section empty) is read, not called truncated
        (frame(HEADER, MAGIC, FORMAT_VERSION, [b""] * 8), "malformed snapshot: bucket index size"),
    ],
)
def test_damaged_snapshots_are_refused_saying_exactly_why(data: bytes, message: str) -> None:
    assert refusal(data) == message


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"digests": SAMPLE[48:88] + b"\0"}, "key section of a partial key"),
        ({"hosts": SAMPLE[96:108] + b"\0"}, "key section of a partial key"),
        ({"digest_index": u32(48, 88) + b"\0"}, "bucket index size"),
        ({"host_index": u32(96, 96, 96, 108)}, "bucket index size"),  # 3 buckets
        ({"host_index": u32(*[96] * 2**17, 108)}, "bucket index size"),  # over 2**16
        ({"host_index": u32(97, 108)}, "bucket index out of order"),  # not its section's start
        ({"host_index": u32(96, 107)}, "bucket index out of order"),  # ... nor its end
        ({"host_index": u32(96, 112, 108)}, "bucket index out of order"),
        ({"id_offsets": u32(0, 7, 7, 7, 9)}, "id offsets do not match the entries"),
        ({"id_offsets": u32(1, 7, 7, 7, 9, 9)}, "id offsets do not match the ids"),
        ({"id_blob": b"local-7e1+"}, "id offsets do not match the ids"),
        ({"id_offsets": b""}, "ids without offsets"),
        ({"list_index": b"\1\0\0\0"}, "list index does not match the entries"),
        ({"list_index": b"\1\0\0\0\2"}, "list index out of range"),
        ({"list_index": b""}, "list names do not match the entries"),
        ({"metadata": b"{"}, "metadata is not JSON"),
        ({"metadata": b"\xff"}, "metadata is not JSON"),
        ({"metadata": b"[]"}, "metadata is not an object"),
        ({"metadata": metadata(hostless=True)}, "bad hostless count"),
        ({"metadata": metadata(hostless=6)}, "bad hostless count"),
        ({"metadata": metadata(hostless=-1)}, "bad hostless count"),
        ({"metadata": metadata(lists=["iwf", 1])}, "bad list names"),
        ({"metadata": metadata(lists="iwf")}, "bad list names"),
        ({"metadata": metadata(lists=[f"l{i}" for i in range(256)])}, "too many list names"),
        ({"metadata": metadata(meta=[])}, "bad meta"),
        # SAMPLE has three host keys, so three depths: "AQID" is 1, 2, 3
        ({"metadata": metadata(depths="AQ==")}, "host depths do not match the hosts"),
        ({"metadata": metadata(depths="AQIDBA==")}, "host depths do not match the hosts"),
        ({"metadata": metadata(depths="AQ ID")}, "bad host depths"),  # strict base64 only
        ({"metadata": metadata(depths="AQID\n")}, "bad host depths"),
        ({"metadata": metadata(depths="AQI")}, "bad host depths"),
        ({"metadata": metadata(depths=7)}, "bad host depths"),
        ({"metadata": metadata(depths=None)}, "bad host depths"),
    ],
)
def test_malformed_sections_are_refused_saying_which(
    sections: dict[str, bytes], message: str
) -> None:
    """Each passes the checksum (a snapshot written wrong, or crafted): the check of the
    section refuses it, and its message names what is wrong."""
    assert refusal(crafted(**sections)) == f"malformed snapshot: {message}"


def test_the_largest_bucket_index_is_accepted() -> None:
    """2**16 buckets, the most the writer makes (past about 500,000 keys)."""
    snapshot = Snapshot.from_bytes(crafted(host_index=u32(*[96] * 2**16, 108)))
    assert len(snapshot) == 5


def test_entries_are_checked_with_exact_reasons() -> None:
    with pytest.raises(ValueError) as info:
        Snapshot.build([("12345678", None, "iwf", None)])  # type: ignore[list-item]
    assert str(info.value) == "expression digest must be 8 bytes: '12345678'"
    with pytest.raises(ValueError) as info:
        Snapshot.build([(b"short", None, "iwf", None)])
    assert str(info.value) == "expression digest must be 8 bytes: b'short'"
    with pytest.raises(ValueError) as info:
        Snapshot.build([(bytes(8), b"toolong", "iwf", None)])
    assert str(info.value) == "host key must be 4 bytes or None: b'toolong'"
    with pytest.raises(TypeError) as info:
        Snapshot.build([(bytes(8), None, None, None)])  # type: ignore[list-item]
    assert str(info.value) == "list name must be a str and entry id a str or None"


def test_metadata_is_strict_json() -> None:
    """NaN is not JSON: a reader other than Python's would refuse the snapshot."""
    with pytest.raises(ValueError, match="JSON compliant"):
        Snapshot.build([], {"ratio": float("nan")})


def test_one_list_needs_no_list_index() -> None:
    """The list index costs a byte an entry, so a single list writes none."""
    one = Snapshot.build([listed("listed.example.com/", "listed.example.com")]).to_bytes()
    assert struct.unpack_from("<8I", one, 12)[SECTIONS.index("list_index")] == 0
    assert struct.unpack_from("<8I", SAMPLE, 12)[SECTIONS.index("list_index")] == 5


def test_a_snapshot_keeps_its_own_bytes() -> None:
    """Loaded from a bytearray, it copies it: the caller changing it later changes nothing."""
    data = bytearray(SAMPLE)
    snapshot = Snapshot.from_bytes(data)
    data[48:56] = bytes(8)
    assert type(snapshot.to_bytes()) is bytes and snapshot.to_bytes() == SAMPLE
    assert snapshot.find(SAMPLE_DIGESTS[0]) == 0


def test_lookups_read_only_their_own_section() -> None:
    """Every 8 bytes of the snapshot as a digest, every 4 as a host key: only the keys of
    the digest (host) section are found, and there only whole ones (a host key may span two,
    which only costs a lookup)."""
    snapshot = sample_snapshot()
    for at in range(len(SAMPLE) - 7):
        aligned = 48 <= at < 88 and at % 8 == 0
        assert snapshot.find(SAMPLE[at : at + 8]) == ((at - 48) // 8 if aligned else None), at
        # and find_first of it alone (the header's magic at 0 is 8-aligned too)
        expected = (0, (at - 48) // 8) if aligned else None
        assert snapshot.find_first([SAMPLE[at : at + 8]]) == expected, at
    for at in range(len(SAMPLE) - 3):
        inside = HOSTS_AT[0] <= at <= HOSTS_AT[1] - 4
        assert snapshot.has_host(SAMPLE[at : at + 4]) is inside, at


def test_a_digest_is_found_past_copies_of_it_spanning_two_others() -> None:
    """The search goes on after a misaligned hit, one byte further, and stops at the first
    aligned one: here one copy spans the first two digests and another the last two, and a
    digest made of one repeated byte overlaps itself one byte on."""
    x = bytes.fromhex("0501090a0b0c0d0e")
    digests = [
        bytes.fromhex("0000000000000005"),  # ends with x[:1] ...
        bytes.fromhex("01090a0b0c0d0e00"),  # ... and this begins with x[1:]
        x,
        bytes.fromhex("05ffffffffff0501"),  # ends with x[:2] ...
        bytes.fromhex("090a0b0c0d0e0000"),  # ... and this begins with x[2:]
    ]
    snapshot = Snapshot.build([(d, None, "iwf", None) for d in digests])
    assert [snapshot.find(d) for d in digests] == [0, 1, 2, 3, 4]
    assert [snapshot.find_first([d]) for d in digests] == [(0, i) for i in range(5)]
    same = bytes([0xAA]) * 8
    snapshot = Snapshot.build([(b"\0" + same[:7], None, "iwf", None), (same, None, "iwf", None)])
    assert snapshot.find(same) == 1
    assert snapshot.find_first([same]) == (0, 1)


def test_the_search_past_a_misaligned_hit_stays_in_its_bucket() -> None:
    """``x`` spans the two digests, and lies 8-aligned in the id blob further on: still not
    listed (read past its bucket, it would be entry 6 of 2)."""
    x = b"abcdefgh"
    first, second = b"\0\0\0\0" + x[:4], x[4:] + b"\0\0\0\0"
    snapshot = Snapshot.build(
        [(first, None, "iwf", "xxxx" + x.decode()), (second, None, "iwf", "y")]
    )
    assert snapshot.to_bytes().index(x, 56) == 96  # 48 + 8 * 6
    assert snapshot.find(x) is None
    assert (snapshot.find(first), snapshot.find(second)) == (0, 1)
    assert snapshot.find_first([x]) is None
    assert snapshot.find_first([x, second, first]) == (1, 1)


def test_entry_index_out_of_range_says_so() -> None:
    snapshot = sample_snapshot()
    for index in (-1, 5):
        with pytest.raises(IndexError) as info:
            snapshot.entry(index)
        assert str(info.value) == "snapshot entry index out of range"


def test_an_id_that_is_not_utf8_is_read_with_replacement() -> None:
    """A crafted id blob must not make a lookup raise."""
    snapshot = Snapshot.from_bytes(crafted(id_blob=b"local-7e\xff"))
    assert snapshot.entry(0) == ("local", "local-7")
    assert snapshot.entry(3) == ("iwf", "e\ufffd")


def test_repr_shows_the_size_and_the_checksum() -> None:
    assert repr(sample_snapshot()) == f"<Snapshot entries=5 checksum={GOLDEN_CHECKSUM[:16]}>"


# -- the lookups the matcher makes: listed_hosts, find_first and host_depth in Python (the
# reference, run with Blocklist(compiled=False) or without the extension), held to the
# compiled ones of _lookup.c where the snapshot has them --------------------------------

#: 64 hosts, so 16 buckets of host keys (and of digests): each host has one directory entry
#: of depth 1 to 64, host i's "h{i}.test/" + "d/" * i.
MANY = [f"h{i}.test" for i in range(64)]
MANY_DIRECTORIES = [f"{host}/" + "d/" * i for i, host in enumerate(MANY)]
#: Hosts whose key is put where a lookup must not read: printable, so it can be an entry id.
PLANTED = "q53.test"
#: A host whose key is four equal bytes (found by a search over names): it overlaps itself
#: one byte on, and spans two keys that end and begin with that byte.
SAME_BYTES = "r442029.test"


def section_at(data: bytes, name: str) -> tuple[int, int]:
    """Where section ``name`` of a snapshot is, as the header says."""
    lengths = struct.unpack_from("<8I", data, 12)
    start = 48 + sum(lengths[: SECTIONS.index(name)])
    return start, start + lengths[SECTIONS.index(name)]


def many_hosts() -> Snapshot:
    return Snapshot.build(
        (expression_digest(directory), host_key(host), "iwf", None, i + 1)
        for i, (host, directory) in enumerate(zip(MANY, MANY_DIRECTORIES, strict=True))
    )


def test_many_hosts_layout() -> None:
    """What the tests below rely on: 16 buckets of each kind, none of them empty."""
    data = many_hosts().to_bytes()
    hosts = section_at(data, "hosts")
    assert hosts == (48 + 64 * 8 + 4 * 17, 48 + 64 * 8 + 4 * 17 + 64 * 4)
    assert section_at(data, "host_index") == (hosts[1], hosts[1] + 4 * 17)
    table = struct.unpack_from("<17I", data, hosts[1])
    assert table[0] == hosts[0] and table[-1] == hosts[1]
    assert all(a < b for a, b in pairwise(table)), table
    assert host_key(PLANTED) == b"EYK3"
    assert host_key(SAME_BYTES) == b"\xf8" * 4


def test_listed_hosts_are_the_listed_ones_of_those_asked_in_order() -> None:
    snapshot = many_hosts()
    asked = ["unlisted.test", *reversed(MANY), "www.h1.test", "h1.test", "", "test", "ü.test"]
    assert snapshot.listed_hosts(asked) == [*reversed(MANY), "h1.test"]
    assert snapshot.listed_hosts(iter(["h7.test", "h7.test"])) == ["h7.test", "h7.test"]
    assert snapshot.listed_hosts([]) == []
    assert sample_snapshot().listed_hosts(["www.example.net", "example.net", "bad.test"]) == [
        "www.example.net",
        "bad.test",
    ]
    # a host that is not ASCII is keyed by its UTF-8
    names = Snapshot.build([listed("bücher.example/", "bücher.example")])
    assert names.listed_hosts(["bücher.example", "bucher.example"]) == ["bücher.example"]


def test_host_depth_is_each_hosts_own() -> None:
    snapshot = many_hosts()
    assert [snapshot.host_depth(host) for host in MANY] == list(range(1, 65))
    assert snapshot.host_depth("unlisted.test") == UNKNOWN_DEPTH
    assert snapshot.host_depth("www.h1.test") == UNKNOWN_DEPTH
    # no depths recorded: every host unknown, listed or not
    assert sample_snapshot().host_depth("listed.example.com") == UNKNOWN_DEPTH


def test_host_depths_are_read_in_host_key_order() -> None:
    """SAMPLE's three host keys given depths 1, 2, 3 by a crafted metadata."""
    snapshot = Snapshot.from_bytes(crafted(metadata=metadata(depths="AQID")))
    in_order = sorted(["listed.example.com", "www.example.net", "bad.test"], key=host_key)
    assert [snapshot.host_depth(host) for host in in_order] == [1, 2, 3]


def test_the_lookups_with_a_keys_second_byte_in_its_bucket() -> None:
    """4096 keys, 1024 buckets: a key's bucket is its first 10 bits, its second byte's
    first two among them (with 16 buckets above, the first byte's first 4 bits alone)."""
    hosts = [f"h{i}.test" for i in range(4096)]
    digests = [expression_digest(f"{host}/") for host in hosts]
    snapshot = Snapshot.build(
        (digest, host_key(host), "iwf", None, i % 200)
        for i, (host, digest) in enumerate(zip(hosts, digests, strict=True))
    )
    data = snapshot.to_bytes()
    for index in ("digest_index", "host_index"):
        start, end = section_at(data, index)
        assert end - start == 4 * 1025
    assert snapshot.listed_hosts([*hosts, "unlisted.test"]) == hosts
    assert [snapshot.host_depth(host) for host in hosts] == [i % 200 for i in range(4096)]
    number = {digest: n for n, digest in enumerate(sorted(digests))}
    assert [snapshot.find_first([d]) for d in digests] == [(0, number[d]) for d in digests]


def test_find_first_gives_the_position_and_entry_of_the_first_listed() -> None:
    snapshot = many_hosts()
    digests = [expression_digest(directory) for directory in MANY_DIRECTORIES]
    in_order = sorted(digests)
    for digest in digests:
        found = snapshot.find_first([digest])
        assert found == (0, in_order.index(digest))
        assert snapshot.entry(found[1]) == ("iwf", digest.hex())  # an int, an entry number
    unlisted = expression_digest("unlisted.test/")
    asked = [unlisted, b"", digests[5][:7], digests[5] + b"\0", digests[9], digests[3]]
    assert snapshot.find_first(asked) == (4, in_order.index(digests[9]))
    assert snapshot.find_first(iter([unlisted, digests[63]])) == (1, in_order.index(digests[63]))
    assert snapshot.find_first([unlisted, digests[0][:7]]) is None
    assert snapshot.find_first([]) is None


def planted(spanning: bool) -> Snapshot:
    """PLANTED unlisted, its key in a digest and, 4-aligned, in an entry id (outside the
    host section, where no lookup may read); with ``spanning``, also across two host keys
    (which ``listed_hosts`` takes for it, as ``has_host`` does, but ``host_depth`` not)."""
    key = host_key(PLANTED)
    rows = [
        (key + bytes(4), host_key("listed.example.com"), "iwf", None, 1),
        *[(expression_digest(f"filler.test/{i}"), None, "iwf", None) for i in range(30)],
    ]
    if spanning:  # "K3EY" "K3\xff\xff": EYK3 at the second key's offset 2
        rows += [
            (expression_digest("a.test/"), key[2:] + key[:2], "iwf", None, 2),
            (expression_digest("b.test/"), key[2:] + b"\xff\xff", "iwf", None, 3),
        ]
    for pad in range(4):  # the id's key 4-aligned in the snapshot
        entry = (expression_digest("www.example.net/"), host_key("www.example.net"), "iwf")
        snapshot = Snapshot.build([*rows, (*entry, "-" * pad + key.decode(), 4)])
        if snapshot.to_bytes().rfind(key) % 4 == 0:
            return snapshot
    raise AssertionError("unreachable")


@pytest.mark.parametrize("spanning", [False, True])
def test_a_host_key_outside_its_bucket_is_not_listed(spanning: bool) -> None:
    snapshot = planted(spanning)
    data = snapshot.to_bytes()
    key = host_key(PLANTED)
    hosts = section_at(data, "hosts")
    assert hosts[1] - hosts[0] == 4 * (4 if spanning else 2)
    at = [i for i in range(len(data)) if data.startswith(key, i)]
    assert len(at) == (3 if spanning else 2), at
    assert 48 <= at[0] < hosts[0] and at[0] % 8 == 0  # a digest's first half
    if spanning:
        assert at[1] == hosts[0] + 2  # "K3EY" "K3\xff\xff" are the first two keys
    ids = section_at(data, "id_blob")
    assert ids[0] <= at[-1] < ids[1] and at[-1] % 4 == 0
    assert snapshot.listed_hosts([PLANTED, "www.example.net"]) == (
        [PLANTED, "www.example.net"] if spanning else ["www.example.net"]
    )
    assert snapshot.has_host(key) is spanning
    assert snapshot.host_depth(PLANTED) == UNKNOWN_DEPTH
    assert (snapshot.host_depth("listed.example.com"), snapshot.host_depth("www.example.net")) == (
        1,
        4,
    )


def same_bytes(listed_too: bool) -> Snapshot:
    """SAME_BYTES (f8 f8 f8 f8) between f8 f8 f7 f8 and f8 f8 f8 f9 (depth 2), or these two
    alone; and its key in a digest."""
    key = host_key(SAME_BYTES)
    before, after = b"\xf8\xf8\xf7\xf8", b"\xf8\xf8\xf8\xf9"
    rows = [
        (key + bytes(4), None, "iwf", None),  # and 8-aligned in a digest, before the hosts
        *[(expression_digest(f"filler.test/{i}"), None, "iwf", None) for i in range(30)],
        (expression_digest("before.test/"), before, "iwf", None, 1),
        (expression_digest("after.test/"), after, "iwf", None, 3),
    ]
    if listed_too:
        rows.append((expression_digest(f"{SAME_BYTES}/"), key, "iwf", None, 2))
    return Snapshot.build(rows)


@pytest.mark.parametrize("listed_too", [False, True])
def test_host_depth_takes_only_a_whole_key_past_copies_spanning_two(listed_too: bool) -> None:
    """SAME_BYTES is found spanning the first two keys, then at its own, then three times
    more, one byte on each; without it, only spanning the other two."""
    snapshot = same_bytes(listed_too)
    key = host_key(SAME_BYTES)
    data = snapshot.to_bytes()
    start, end = section_at(data, "hosts")
    assert start > 256  # (a position past a byte's value: no find(position) can run)
    at = [i - start for i in range(start, end) if data.startswith(key, i)]
    assert at == ([3, 4, 5, 6, 7] if listed_too else [3])
    assert data.find(key) < start and data.find(key) % 4 == 0
    assert snapshot.host_depth(SAME_BYTES) == (2 if listed_too else UNKNOWN_DEPTH)


@pytest.mark.parametrize("floor", [0, 3])
def test_the_compiled_lookups_answer_as_these(floor: int) -> None:
    """``compiled_lookup``: ``_lookup.Lookup`` over the same sections, or None when the
    extension is not built. Its listed suffixes of a host are ``listed_hosts``' of
    ``dns_suffixes``; its directory walk looks up ``host_depth``'s directories (``floor``
    at least, every one when unknown) and finds what ``find_first`` finds among them."""
    directories = ["/" + "d/" * k for k in range(71)]
    hosts = [*MANY[::9], "www.h1.test", "a.b.h2.test", "unlisted.test", PLANTED, SAME_BYTES]
    for snapshot in [many_hosts(), planted(True), same_bytes(True)]:
        lookup = snapshot.compiled_lookup(floor)
        if snapshot_module._lookup is None:
            assert lookup is None
            continue
        assert type(lookup) is snapshot_module._lookup.Lookup
        for host in hosts:
            suffixes = dns_suffixes(host, False)
            assert lookup.listed_hosts(host, False) == snapshot.listed_hosts(suffixes), host
            digests = [expression_digest(host + directory) for directory in directories]
            first = snapshot.find_first(digests)
            walked = lookup.counts()[2]
            found = lookup.find_on_hosts([host], [], directories[-1], [])
            walked = lookup.counts()[2] - walked
            if first is None:
                depth = snapshot.host_depth(host)
                assert found is None
                assert walked == (71 if depth == UNKNOWN_DEPTH else max(depth, floor)), host
            else:
                assert found == (first[1], digests[first[0]]), host
                assert walked == first[0] + 1, host
