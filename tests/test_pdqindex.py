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
    for word, shift in chunks:
        first = 64 * word + (64 - shift - bits)  # the chunk's first bit, from the top
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


@pytest.mark.parametrize("bits", [None, 21, 6])
def test_planted_at_every_distance(bits: int | None) -> None:
    """2,460 queries, each with a listed hash planted at a distance from 0 to 40 (60 of
    each), with the flips placed the tightest way: every one within 31 is found at its
    distance, none beyond. ``bits`` None is the size chosen for the list; 21 is what a
    10,000,000-hash list uses (12 tables: 8 searched within 2 bits, 4 within 1)."""
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
    for index in (default, strict):
        dirs = index.arrays()["dirs"]
        largest = max(int(np.diff(dirs[t]).max()) for t in range(len(dirs)))
        assert largest <= (64 if index is strict else len(rows) // pdqindex.HOT_SHARE)
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
    """Tables that point outside the hashes (a bug, or a damaged file that slipped past its
    checks) make a lookup raise ValueError, never read out of bounds."""
    rng = random.Random(3)
    data = random_list(2_000, rng)
    arrays = dict(PdqIndex(data).arrays())
    for broken in ("dirs", "ids"):
        damaged = {name: array.copy() for name, array in arrays.items()}
        damaged[broken].reshape(-1)[len(damaged[broken].reshape(-1)) // 2 :] = 2**31
        index = PdqIndex.from_arrays(data, damaged)
        with pytest.raises(ValueError, match="corrupt"):
            for _ in range(200):
                index.nearest([rng.randbytes(SIZE)], 31)
    with pytest.raises(ValueError):
        PdqIndex.from_arrays(data[:-SIZE], arrays)  # tables of another list


def test_empty_and_tiny_lists() -> None:
    assert PdqIndex(b"").nearest([bytes(SIZE)], 31) is None
    one = PdqIndex(b"\xff" * SIZE)
    assert one.nearest([b"\xff" * 28 + bytes(4)], 31) is None  # 32 bits away
    assert one.nearest([b"\xff" * 29 + bytes(3)], 31) == (0, 24)
    assert one.nearest([bytes(SIZE)], 31) is None
