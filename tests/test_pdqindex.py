"""The PDQ multi-index is exact: it finds what a scan of every hash finds, no more, no less.

Pigeonhole makes it exact only if the chunks, radii and tables are right, so these tests
plant listed hashes at every distance from a query (0..31 found, 32..40 not), with the
flips placed where the argument is tightest (every table at its radius + 1 but one, and
the bits no table indexes), on the chunk sizes a 10,000,000-hash list uses as well as the
small ones, on skewed lists whose hot buckets are left to the scanned set, and through the
numpy path used without the C extension. ``bench/hashes.py`` runs the same plant at
10,000,000 hashes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.hashes import pdqindex
from blocklist_addon.hashes.pdqindex import PdqIndex, choose_bits, layout, radii

SIZE = 32


def scan(rows: np.ndarray, queries: list[bytes], threshold: int) -> tuple[int, int] | None:
    """The reference: every listed hash's distance to every query, closest first, ties to
    the lowest position."""
    best: tuple[int, int] | None = None
    for query in queries:
        q = np.frombuffer(query, dtype=np.uint8)
        distances = np.bitwise_count(rows ^ q).sum(axis=1)
        position = int(np.argmin(distances))
        d = int(distances[position])
        if d <= threshold and (best is None or (d, position) < (best[1], best[0])):
            best = (position, d)
    return best


def random_list(count: int, rng: random.Random) -> bytes:
    """``count`` distinct random hashes, sorted as a snapshot stores them."""
    return b"".join(sorted({rng.randbytes(SIZE) for _ in range(count)}))


def flip(value: bytes, bits: list[int]) -> bytes:
    number = int.from_bytes(value)
    for bit in bits:
        number ^= 1 << (255 - bit)  # bit 0 is the first bit of the hash
    return number.to_bytes(SIZE)


def tight_flips(bits: int, distance: int, threshold: int, rng: random.Random) -> list[int]:
    """``distance`` distinct bit positions placed to defeat a wrong pigeonhole: first some
    of the bits no table indexes, then each table's chunk filled to its radius + 1 (where
    that table cannot find it), the tables taken in a random order, so that within 31 one
    table is left at its radius and only it can find the hash."""
    chunks = layout(bits)
    indexed = set()
    per_chunk = []
    for first in chunks:  # the chunk's first bit, from the top
        per_chunk.append(list(range(first, first + bits)))
        indexed.update(per_chunk[-1])
    flips = [b for b in range(256) if b not in indexed and rng.random() < 0.5]
    rng.shuffle(flips)
    flips = flips[:distance]
    plan = radii(len(chunks), threshold) + [-1] * (len(chunks) - len(radii(len(chunks), threshold)))
    order = list(range(len(chunks)))
    rng.shuffle(order)
    for t in order:
        room = min(plan[t] + 1 if plan[t] >= 0 else bits, bits)
        take = min(room, distance - len(flips))
        flips += rng.sample(per_chunk[t], take)
    # Whatever is left (distances past what the tables can absorb) anywhere else.
    rest = [b for b in range(256) if b not in flips]
    flips += rng.sample(rest, distance - len(flips))
    return flips


@pytest.mark.parametrize("bits", [None, 23, 6])
def test_planted_at_every_distance(bits: int | None) -> None:
    """2,460 queries, each with a listed hash planted at a distance from 0 to 40 (60 of
    each), with the flips placed the tightest way: every one within 31 is found at its
    distance, none beyond. ``bits`` None is the size chosen for the list; 23 is what a
    10,000,000-hash list uses (11 tables: 10 searched within 2 bits, 1 within 1, 3 bits
    in none; chunks across the 64-bit words)."""
    rng = random.Random(22)
    listed = bytearray(random_list(20_000, rng))
    count = len(listed) // SIZE
    chunk_bits = bits or choose_bits(count)
    queries, planted = [], []
    for i, position in enumerate(rng.sample(range(count), 41 * 60)):
        distance = i % 41
        query = rng.randbytes(SIZE)
        listed[position * SIZE : (position + 1) * SIZE] = flip(
            query, tight_flips(chunk_bits, distance, 31, rng)
        )
        queries.append(query)
        planted.append((position, distance))
    # Re-sorting moves positions; find each planted hash by value afterwards.
    values = [bytes(listed[p * SIZE : (p + 1) * SIZE]) for p, _ in planted]
    data = b"".join(sorted({bytes(listed[i : i + SIZE]) for i in range(0, len(listed), SIZE)}))
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    where = {bytes(row): i for i, row in enumerate(rows)}
    index = PdqIndex(data, bits=bits)
    found = missed = 0
    for query, value, (_, distance) in zip(queries, values, planted, strict=True):
        result = index.nearest([query], 31)
        if distance <= 31:
            # Another planted hash may be nearer still; the scan says which one is right.
            assert result is not None and result[1] <= distance
            assert result == scan(rows, [query], 31)
            found += result == (where[value], distance)
        else:
            assert result == scan(rows, [query], 31)
            missed += result is None
    assert found >= 31 * 60 * 0.99
    assert missed >= 9 * 60 * 0.99


def test_eight_orientations_at_once_match_the_scan() -> None:
    """A frame's 8 hashes are looked up together: the closest over all of them, ties to the
    lowest position, exactly as a scan answers."""
    rng = random.Random(8)
    data = random_list(5_000, rng)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    index = PdqIndex(data)
    for _ in range(200):
        queries = [
            flip(bytes(rows[rng.randrange(len(rows))]), rng.sample(range(256), rng.randrange(45)))
            for _ in range(8)
        ]
        assert index.nearest(queries, 31) == scan(rows, queries, 31)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    threshold=st.integers(0, 80),
    count=st.integers(1, 3_000),
)
def test_any_threshold_matches_the_scan(seed: int, threshold: int, count: int) -> None:
    """Thresholds other than 31 (0 for low-quality frames, and whatever the option says, up
    to where a scan answers instead) give the scan's answer."""
    rng = random.Random(seed)
    data = random_list(count, rng)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    index = PdqIndex(data)
    for _ in range(10):
        base = bytes(rows[rng.randrange(len(rows))])
        query = flip(base, rng.sample(range(256), rng.randrange(threshold + 5)))
        assert index.nearest([query], threshold) == scan(rows, [query], threshold)


def skewed_list(count: int, rng: random.Random) -> bytes:
    """Clusters of near-identical images (a few hundred each, within 20 bits of their
    centre), one chunk value shared by thousands (a plain background), and random hashes:
    what real lists look like to the tables."""
    values = set()
    for _ in range(20):
        centre = rng.randbytes(SIZE)
        for _ in range(rng.randrange(50, 500)):
            values.add(flip(centre, rng.sample(range(256), rng.randrange(21))))
    prefix = rng.randbytes(3)
    for _ in range(3_000):
        values.add(prefix + rng.randbytes(SIZE - 3))
    while len(values) < count:
        values.add(rng.randbytes(SIZE))
    return b"".join(sorted(values))


def test_skewed_list_hot_buckets_scanned_and_exact() -> None:
    """Buckets far above the mean are left out of the tables and compared one by one (here
    with a low limit, to have many), clusters stay in them by default: the answers are the
    scan's either way, for queries inside the clusters, near the shared prefix and
    elsewhere."""
    rng = random.Random(5)
    data = skewed_list(30_000, rng)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    default = PdqIndex(data)
    strict = PdqIndex(data, hot_limit=64)
    assert 0 < strict.hot < len(rows) // 2
    # By default only the shared prefix's bucket is hot (its 3,000 and any random hash
    # that falls in it): the clusters stay in their tables.
    leading = pdqindex.chunks_of(rows, 0, default.bits)
    prefix_bucket = np.bincount(leading).argmax()
    assert default.hot == int((leading == prefix_bucket).sum()) >= 3_000
    assert strict.largest_bucket() <= 64
    assert default.largest_bucket() > 64  # the clusters and the shared prefix stay in tables
    for _ in range(400):
        base = bytes(rows[rng.randrange(len(rows))])
        queries = [flip(base, rng.sample(range(256), rng.randrange(40))) for _ in range(2)]
        expected = scan(rows, queries, 31)
        assert default.nearest(queries, 31) == expected
        assert strict.nearest(queries, 31) == expected


def test_a_hostile_list_is_answered_by_one_scan() -> None:
    """Every hash shares table 0's chunk and differs only in a few bits: every probe of that
    bucket would verify the whole list again and again; the lookup scans once instead (the
    answer is the scan's, found through the tables or not)."""
    rng = random.Random(12)
    prefix = rng.randbytes(4)
    data = b"".join(sorted({prefix + rng.randbytes(SIZE - 4) for _ in range(4_000)}))
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    index = PdqIndex(data, hot_limit=10**9)  # nothing left out: the cap alone
    for _ in range(50):
        query = flip(bytes(rows[rng.randrange(len(rows))]), rng.sample(range(256), 20))
        assert index.nearest([query], 31) == scan(rows, [query], 31)
    everything_hot = PdqIndex(data, hot_limit=0)  # no table holds a hash: all compared
    assert everything_hot.hot == len(rows)
    assert everything_hot.largest_bucket() == 0
    for _ in range(20):
        query = flip(bytes(rows[rng.randrange(len(rows))]), rng.sample(range(256), 25))
        assert everything_hot.nearest([query], 31) == scan(rows, [query], 31)


def test_numpy_path_matches_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C extension (a checkout used uninstalled) the numpy lookup builds and
    answers the same, hot set included."""
    if pdqindex._mih is None:
        pytest.fail("the C extension is not built: pip install -e . builds it")
    rng = random.Random(9)
    data = skewed_list(8_000, rng)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    with_c = PdqIndex(data)
    monkeypatch.setattr(pdqindex, "_mih", None)
    without = PdqIndex(data)
    for name, array in with_c.arrays().items():
        assert np.array_equal(array, without.arrays()[name]), name
    for threshold in (0, 31, 70):
        for _ in range(100):
            base = bytes(rows[rng.randrange(len(rows))])
            queries = [flip(base, rng.sample(range(256), rng.randrange(40))) for _ in range(3)]
            expected = scan(rows, queries, threshold)
            assert without.nearest(queries, threshold) == expected
            assert with_c.nearest(queries, threshold) == expected


def test_corrupt_tables_raise_never_crash() -> None:
    """Tables that point outside the hashes or their own bounds (a bug, or a damaged file
    that slipped past its checks) make a lookup raise ValueError, never read out of
    bounds: a directory of ones (no bucket ends), entries past the list, a table placed
    past the blob."""
    rng = random.Random(3)
    data = random_list(2_000, rng)
    arrays = dict(PdqIndex(data).arrays())
    meta = arrays["meta"]
    words_at, nwords, entries_at = (int(x) for x in meta[1, [1, 2, 4]])
    directory = arrays["blob"].copy()
    directory[words_at : words_at + 8 * nwords] = 0xFF
    entries = arrays["blob"].copy()
    entries[entries_at : entries_at + 8 * nwords] = 0xFF
    outside = meta.copy()
    outside[2, 1] = len(arrays["blob"])
    for damaged in ({"blob": directory}, {"blob": entries}, {"meta": outside}):
        index = PdqIndex.from_arrays(data, arrays | damaged)
        with pytest.raises(ValueError, match=r"corrupt|out of range"):
            for _ in range(200):
                index.nearest([rng.randbytes(SIZE)], 31)
    with pytest.raises(ValueError):
        PdqIndex.from_arrays(
            data[:-SIZE] + bytes(SIZE),
            arrays
            | {
                "hot": np.array([2_000], dtype=np.uint32),
                "hot_hashes": np.zeros(SIZE, dtype=np.uint8),
            },
        )  # a hot position past the list
    with pytest.raises(ValueError):
        PdqIndex.from_arrays(data, arrays | {"meta": meta[:-1]})  # a table missing


def test_the_tables_are_compact() -> None:
    """Bytes a hash of the tables: the leading chunk costs no entries (the hashes are
    sorted by it), every other table an entry of ``width`` bits a hash (a group of two
    neighbours) and its directory about 2 bits a hash, and an unsorted list stores table
    0 like the others."""
    rng = random.Random(4)
    data = random_list(50_000, rng)
    index = PdqIndex(data)
    tables = len(layout(index.bits))
    assert index.width == (50_000 - 1 >> pdqindex.GROUP_SHIFT).bit_length() == 15
    entries = (tables - 1) * index.width / 8
    assert entries < index.nbytes / 50_000 < entries + tables * 0.45
    assert int(index.arrays()["meta"][0, 4]) == pdqindex.NO_ENTRIES
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    shuffled = rows[::-1].copy().tobytes()
    reverse = PdqIndex(shuffled)
    assert int(reverse.arrays()["meta"][0, 4]) != pdqindex.NO_ENTRIES
    assert reverse.nbytes > index.nbytes
    for _ in range(100):
        position = rng.randrange(len(rows))
        query = flip(bytes(rows[position]), rng.sample(range(256), 25))
        assert reverse.nearest([query], 31) == (len(rows) - 1 - position, 25)


def test_within_finds_every_pair() -> None:
    """The range search (videos' matcher) finds every (query, listed hash) within the
    threshold once, as a scan does, in the C loop and in numpy."""
    rng = random.Random(6)
    data = skewed_list(6_000, rng)
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, SIZE)
    index = PdqIndex(data)
    queries = [
        flip(bytes(rows[rng.randrange(len(rows))]), rng.sample(range(256), rng.randrange(30)))
        for _ in range(40)
    ]
    expected = [
        (q, p, int(d))
        for q, query in enumerate(queries)
        for p, d in enumerate(np.bitwise_count(rows ^ np.frombuffer(query, np.uint8)).sum(axis=1))
        if d <= 31
    ]
    asked, positions, distances = index.within(queries, 31)
    assert (
        list(zip(asked.tolist(), positions.tolist(), distances.tolist(), strict=True)) == expected
    )
    assert len(expected) > 40  # the clusters give queries several neighbours


def test_empty_and_tiny_lists() -> None:
    assert PdqIndex(b"").nearest([bytes(SIZE)], 31) is None
    one = PdqIndex(b"\xff" * SIZE)
    assert one.nearest([b"\xff" * 28 + bytes(4)], 31) is None  # 32 bits away
    assert one.nearest([b"\xff" * 29 + bytes(3)], 31) == (0, 24)
    assert one.nearest([bytes(SIZE)], 31) is None
