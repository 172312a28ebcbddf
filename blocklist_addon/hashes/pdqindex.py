"""The PDQ index: every listed hash within a Hamming distance of a query, exactly, without
reading them all (multi-index hashing, Norouzi, Punjani and Fleet, CVPR 2012).

Each 256-bit hash is cut into ``tables`` disjoint chunks of ``bits`` bits (three a 64-bit
word, 21 bits each at 10,000,000 hashes: 12 chunks). Pigeonhole: if a listed hash is within
``threshold`` of the query, the chunks cannot all differ by more than their radii when the
radii plus one add up to more than the threshold (for 31 over 12 chunks: 8 chunks searched
within 2 bits, 4 within 1). So each table is probed at every chunk value within its radius
(1,944 probes for 31), and each hash found there is verified by its full distance: the
answer is exactly the flat scan's. A threshold too large for probing to pay is answered by
a scan of every hash.

A table is the hashes' positions grouped by that chunk's value, and where each value's
group starts (``dirs``, 2**bits + 1 u32). The hashes themselves are the snapshot's sorted
PDQ section, not a copy. Skew: real lists hold clusters of near-identical images, whose
chunks pile into a few buckets, and degenerate hashes that share chunk values by the
hundred thousand. A cluster's buckets stay in the tables (only a query near it probes
them, and that query has to verify its members anyway); a bucket of more than
``hot_limit`` hashes (1/64 of the list) would make every probe of it cost that much, so
every hash in such a bucket (in any table) is left out of all tables and kept in a hot set
instead, compared with every query one by one (a contiguous copy: a sequential scan).
Exactness holds whatever the data. The cost is capped too: a query whose probes gather
more candidates than half the list is answered by a scan, so no list, however skewed or
hostile, makes a lookup cost much more than the flat scan.

The loops are a small C extension (``_mih.c``, built by pip with the package); without it
(a source checkout not installed) the same lookup runs in numpy, slower.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from functools import cache

import numpy as np

try:
    from blocklist_addon.hashes import _mih
except ImportError:  # pragma: no cover - a checkout used without pip install
    _mih = None

__all__ = ["PdqIndex", "choose_bits"]

SIZE = 32
#: Largest chunk: 2**21 + 1 u32 a table (8 MiB), 12 tables; about 4.8 hashes a bucket at
#: 10,000,000.
MAX_BITS = 21
MIN_BITS = 6
#: No more tables than a threshold of 31 can use (32 chunks searched exactly).
MAX_TABLES = 32
#: A bucket holding more than a HOT_SHARE of the list (and HOT_MIN, and 8 times the mean
#: bucket, which small lists with short chunks come near) is hot: one probe of
#: it would cost a good part of a scan (156,250 hashes at 10,000,000). Anything smaller
#: stays in its table: a random query probes a given bucket with a chance of about 1 in
#: 10,000, so keeping it costs far less than comparing its hashes with every query, and
#: a query near it (near a cluster of near-duplicates, or a shared background) has to
#: verify those hashes anyway.
HOT_SHARE = 64
HOT_MIN = 64
#: Probing is used while its expected candidates stay under this share of a scan.
SCAN_SHARE = 0.25
_EMPTY = np.zeros(0, dtype=np.uint32)


def choose_bits(count: int) -> int:
    """Chunk size for ``count`` hashes: a bucket a quarter the size of the list's log, so a
    bucket holds a few hashes, within MIN_BITS..MAX_BITS (directory memory)."""
    if count < 2:
        return MIN_BITS
    return max(MIN_BITS, min(MAX_BITS, round(math.log2(count)) - 2))


def layout(bits: int) -> list[tuple[int, int]]:
    """(word, shift) of each table's chunk: ``64 // bits`` chunks a big-endian word, from
    the top, so table 0's chunk is the hash's leading bits."""
    per_word = 64 // bits
    tables = min(4 * per_word, MAX_TABLES)
    return [(t // per_word, 64 - bits * (t % per_word + 1)) for t in range(tables)]


@cache
def _masks(bits: int, radius: int) -> np.ndarray:
    """Every xor mask of at most ``radius`` bits among ``bits``."""
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << i for i in c) for c in itertools.combinations(range(bits), k)]
    return np.array(masks, dtype=np.uint32)


def radii(tables: int, threshold: int) -> list[int]:
    """The radius to search each table within: their (radius + 1) add up to threshold + 1,
    as evenly as possible (the fewest probes); fewer tables when the threshold is small."""
    units = threshold + 1
    if units <= tables:
        return [0] * units
    base, extra = divmod(units, tables)
    return [base] * extra + [base - 1] * (tables - extra)


class PdqIndex:
    """Listed PDQ hashes (32 bytes each, sorted), searched by Hamming distance. Immutable
    once built; safe to query from several threads (the C loop releases the GIL)."""

    __slots__ = (
        "_dirs",
        "_hashes",
        "_hot",
        "_hot_hashes",
        "_ids",
        "_layout",
        "_plans",
        "bits",
        "count",
    )

    def __init__(
        self,
        hashes: bytes | memoryview,
        *,
        bits: int | None = None,
        hot_limit: int | None = None,
    ) -> None:
        """Build the tables over ``hashes`` (the snapshot's sorted PDQ section); ``bits``
        and ``hot_limit`` are chosen from their number unless given (tests)."""
        arrays = build(hashes, bits=bits, hot_limit=hot_limit)
        self._attach(hashes, arrays)

    @classmethod
    def from_arrays(cls, hashes: bytes | memoryview, arrays: Mapping[str, np.ndarray]) -> PdqIndex:
        """An index over tables built earlier (``arrays()``), e.g. mapped from a file."""
        index = object.__new__(cls)
        index._attach(hashes, arrays)
        return index

    def _attach(self, hashes: bytes | memoryview, arrays: Mapping[str, np.ndarray]) -> None:
        data = np.frombuffer(hashes, dtype=np.uint8)
        if len(data) % SIZE:
            raise ValueError("PDQ hashes must be 32 bytes each")
        self.count = len(data) // SIZE
        self._hashes = data
        self.bits = int(arrays["bits"][0])
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError("PDQ index: chunk size out of range")
        self._layout = np.array(layout(self.bits), dtype=np.int32)
        self._dirs = arrays["dirs"]
        self._ids = arrays["ids"]
        self._hot = arrays["hot"]
        self._hot_hashes = arrays["hot_hashes"]
        tables = len(self._layout)
        if (
            self._dirs.shape != (tables, (1 << self.bits) + 1)
            or self._ids.ndim != 2
            or len(self._ids) != tables
            or len(self._hot_hashes) != SIZE * len(self._hot)
            or self._ids.shape[1] + len(self._hot) != self.count
        ):
            raise ValueError("PDQ index: tables do not match the hashes")
        if len(self._hot) and int(self._hot.max()) >= self.count:
            raise ValueError("PDQ index: a hot position is out of range")
        self._plans: dict[int, np.ndarray | None] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The tables, to store beside the hashes (``from_arrays`` reads them back)."""
        return {
            "bits": np.array([self.bits], dtype=np.uint32),
            "dirs": self._dirs,
            "ids": self._ids,
            "hot": self._hot,
            "hot_hashes": self._hot_hashes,
        }

    @property
    def hot(self) -> int:
        """Hashes left out of the tables (compared with every query)."""
        return len(self._hot)

    def probes(self, threshold: int) -> int | None:
        """Buckets a query probes at ``threshold``, or None when it is answered by a scan."""
        plan = self._plan(threshold)
        return None if plan is None else len(plan)

    def nearest(self, queries: list[bytes], threshold: int) -> tuple[int, int] | None:
        """(position, distance) of the listed hash closest to any of ``queries`` if it is
        within ``threshold``; ties go to the lowest position, so the answer is stable (and
        the same as a scan's)."""
        if not self.count or not queries or threshold < 0:
            return None
        joined = b"".join(queries)
        if len(joined) != SIZE * len(queries):
            raise ValueError("PDQ hashes must be 32 bytes each")
        plan = self._plan(threshold)
        if _mih is None:
            return self._nearest_numpy(joined, threshold, plan)
        return _mih.nearest(
            self._hashes,
            self._dirs,
            self._ids,
            self.bits,
            self._layout,
            _EMPTY if plan is None else plan,
            self._hot,
            self._hot_hashes,
            joined,
            threshold,
            plan is None,
        )

    def _plan(self, threshold: int) -> np.ndarray | None:
        """(table, xor mask) pairs to probe, u32; None: scan instead."""
        if threshold in self._plans:
            return self._plans[threshold]
        chosen = radii(len(self._layout), threshold)
        probes = sum(sum(math.comb(self.bits, k) for k in range(r + 1)) for r in chosen)
        expected = probes * (1 + self._ids.shape[1] / (1 << self.bits)) + len(self._hot)
        plan = None
        if expected < SCAN_SHARE * self.count:
            plan = np.concatenate(
                [
                    np.stack([np.full(len(m), t, dtype=np.uint32), m], axis=1)
                    for t, r in enumerate(chosen)
                    for m in [_masks(self.bits, r)]
                ]
            )
        self._plans[threshold] = plan
        return plan

    def _nearest_numpy(
        self, joined: bytes, threshold: int, plan: np.ndarray | None
    ) -> tuple[int, int] | None:
        """The same lookup in numpy (no C extension): candidates, then their distances."""
        rows = self._hashes.reshape(-1, SIZE)
        query_rows = np.frombuffer(joined, dtype=np.uint8).reshape(-1, SIZE)
        if plan is None:
            candidates = np.arange(self.count)
            pairs = [(candidates, q) for q in range(len(query_rows))]
        else:
            words = query_rows.view(">u8").reshape(-1, 4)
            mask = np.uint64((1 << self.bits) - 1)
            tables = plan[:, 0].astype(np.int64)
            word = self._layout[tables, 0]
            shift = self._layout[tables, 1].astype(np.uint64)
            stride = (1 << self.bits) + 1
            flat_dirs = self._dirs.reshape(-1)
            flat_ids = self._ids.reshape(-1)
            width = self._ids.shape[1]
            pairs = []
            for q in range(len(query_rows)):
                values = ((words[q, word] >> shift) & mask).astype(np.int64) ^ plan[:, 1]
                lo = flat_dirs[tables * stride + values].astype(np.int64)
                hi = flat_dirs[tables * stride + values + 1].astype(np.int64)
                sizes = hi - lo
                starts = np.repeat(lo + tables * width - (np.cumsum(sizes) - sizes), sizes)
                picked = flat_ids[starts + np.arange(int(sizes.sum()))].astype(np.int64)
                pairs.append((np.concatenate([picked, self._hot.astype(np.int64)]), q))
        best: tuple[int, int] | None = None
        for candidates, q in pairs:
            if not len(candidates):
                continue
            distances = np.bitwise_count(rows[candidates] ^ query_rows[q]).sum(axis=1)
            ok = distances <= threshold
            if ok.any():
                found = sorted(zip(distances[ok].tolist(), candidates[ok].tolist(), strict=True))
                d, p = found[0]
                if best is None or (d, p) < (best[1], best[0]):
                    best = (p, d)
        return best

    def __len__(self) -> int:
        return self.count


def build(
    hashes: bytes | memoryview, *, bits: int | None = None, hot_limit: int | None = None
) -> dict[str, np.ndarray]:
    """The tables over ``hashes`` (see the module docstring)."""
    data = np.frombuffer(hashes, dtype=np.uint8)
    if len(data) % SIZE:
        raise ValueError("PDQ hashes must be 32 bytes each")
    count = len(data) // SIZE
    bits = choose_bits(count) if bits is None else bits
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"PDQ index: chunks of {MIN_BITS} to {MAX_BITS} bits")
    chunks = layout(bits)
    if hot_limit is None:
        mean = -(-count // (1 << bits))
        hot_limit = max(HOT_MIN, count // HOT_SHARE, 8 * mean)
    dirs, ids = _tables(data, chunks, bits, _EMPTY, count)
    hot = np.zeros(count, dtype=bool)
    for t in range(len(chunks)):
        sizes = np.diff(dirs[t])
        for value in np.flatnonzero(sizes > hot_limit):
            hot[ids[t, dirs[t, value] : dirs[t, value + 1]]] = True
    hot_positions = np.flatnonzero(hot).astype(np.uint32)
    if len(hot_positions):
        cold = np.flatnonzero(~hot).astype(np.uint32)
        dirs, ids = _tables(data, chunks, bits, cold, len(cold))
    rows = data.reshape(-1, SIZE)
    return {
        "bits": np.array([bits], dtype=np.uint32),
        "dirs": dirs,
        "ids": ids,
        "hot": hot_positions,
        "hot_hashes": rows[hot_positions].reshape(-1).copy(),
    }


def _tables(
    data: np.ndarray, chunks: list[tuple[int, int]], bits: int, positions: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    dirs = np.empty((len(chunks), (1 << bits) + 1), dtype=np.uint32)
    ids = np.empty((len(chunks), width), dtype=np.uint32)
    for t, (word, shift) in enumerate(chunks):
        if not width:
            dirs[t] = 0  # every hash is in the hot set
            continue
        if _mih is not None:
            _mih.table(data, positions, word, shift, bits, dirs[t], ids[t])
            continue
        rows = data.reshape(-1, SIZE)
        chosen = positions if len(positions) else np.arange(len(rows), dtype=np.uint32)
        words = rows[chosen].view(">u8").reshape(-1, 4)[:, word]
        keys = ((words >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        dirs[t, 0] = 0
        np.cumsum(np.bincount(keys, minlength=1 << bits), out=dirs[t, 1:])
        ids[t] = chosen[np.argsort(keys, kind="stable")]
    return dirs, ids
