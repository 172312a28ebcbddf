"""The PDQ index: every listed hash within a Hamming distance of a query, exactly, without
reading them all (multi-index hashing, Norouzi, Punjani and Fleet, CVPR 2012).

Each 256-bit hash is cut into ``tables`` disjoint chunks of ``bits`` bits (23 bits at
10,000,000 hashes: 11 chunks, the last 3 bits in none). Pigeonhole: if a listed hash is
within ``threshold`` of the query, the chunks cannot all differ by more than their radii
when the radii plus one add up to more than the threshold (for 31 over 11 chunks: 10
searched within 2 bits, one within 1; bits in no chunk only make the argument looser). So
each table is probed at every chunk value within its radius (2,794 probes for 31), and
each hash found there is verified by its full distance: the answer is exactly the flat
scan's. A threshold too large for probing to pay is answered by a scan of every hash.

Memory is what a hash list of 10,000,000 costs on every machine, so the tables are
compact (about 31 bytes a hash at 10,000,000, beside the 32 of the hash itself):

- the hashes are the snapshot's PDQ section, sorted, so table 0 (the leading chunk) is
  implicit: its buckets are runs of positions, and it stores nothing but where they start;
- every other table stores, bucket by bucket, the *group* of each hash (its position
  divided by 2: the 2 neighbours, 64 contiguous bytes, one cache line, are verified
  together), bit-packed in as few bits as the list needs (23 at 10,000,000), a group once
  a bucket;
- where each bucket starts is a unary directory (a bucket's count as that many one bits,
  then a zero: about 2 bits a hash) with the start of every 64th bucket (u32): a lookup
  reads one sample and a word or two.

The tables' bytes, and their writing and reading in numpy, are ``pdqlayout``'s.

Skew: real lists hold clusters of near-identical images, whose chunks pile into a few
buckets, and degenerate hashes that share chunk values by the hundred thousand. A
cluster's buckets stay in the tables (only a query near it probes them, and that query has
to verify its members anyway); a bucket of more than ``hot_limit`` hashes (1/64 of the
list) would make every probe of it cost that much, so every hash in such a bucket (in any
table) is left out of the stored tables (and such a bucket of the implicit table is never
probed) and kept in a hot set instead, compared with every query one by one (a contiguous
copy: a sequential scan). Exactness holds whatever the data. The cost is capped too: a
query whose probes gather more candidates than half the list is answered by a scan, so no
list, however skewed or hostile, makes a lookup cost much more than the flat scan.

The loops are a small C extension (``_mih.c``, built by pip with the package); without it
(a source checkout not installed) the same index is built and searched in numpy, slower.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

from blocklist_addon.hashes.pdqlayout import (
    GROUP_SHIFT,
    MAX_BITS,
    MIN_BITS,
    NO_ENTRIES,
    SIZE,
    choose_bits,
    chunks_of,
    layout,
    ones,
    pack,
    unpack,
    width_for,
)

try:
    from blocklist_addon.hashes import _mih
except ImportError:  # pragma: no cover - a checkout used without pip install
    _mih = None

__all__ = ["PdqIndex", "choose_bits", "layout", "radii"]

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
_U32_MAX = 2**32 - 1
_EMPTY = np.zeros(0, dtype=np.uint32)


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
        "_blob",
        "_decoded",
        "_hashes",
        "_hot",
        "_hot_hashes",
        "_meta",
        "_params",
        "_plans",
        "bits",
        "count",
        "hot_limit",
        "width",
    )

    def __init__(
        self,
        hashes: bytes | memoryview,
        *,
        bits: int | None = None,
        hot_limit: int | None = None,
    ) -> None:
        """Build the tables over ``hashes`` (the snapshot's sorted PDQ section); ``bits``
        and ``hot_limit`` are chosen from their number unless given (tests). Unsorted
        hashes work too (table 0 is then stored like the others)."""
        self._attach(hashes, build(hashes, bits=bits, hot_limit=hot_limit))

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
        params = arrays["params"]
        if params.dtype != np.uint32 or params.shape != (4,):
            raise ValueError("PDQ index: bad parameters")
        self._params = params
        self.bits, group_shift, self.width, self.hot_limit = (int(x) for x in params)
        if not MIN_BITS <= self.bits <= MAX_BITS or group_shift != GROUP_SHIFT:
            raise ValueError("PDQ index: chunk size out of range")
        self._meta = arrays["meta"]
        self._blob = arrays["blob"]
        self._hot = arrays["hot"]
        self._hot_hashes = arrays["hot_hashes"]
        offsets = layout(self.bits)
        if (
            self._meta.dtype != np.uint64
            or self._meta.shape != (len(offsets), 6)
            or self._meta[:, 0].tolist() != offsets
            or len(self._hot_hashes) != SIZE * len(self._hot)
            or len(self._hot) > self.count
        ):
            raise ValueError("PDQ index: tables do not match the hashes")
        if len(self._hot) and int(self._hot.max()) >= self.count:
            raise ValueError("PDQ index: a hot position is out of range")
        self._plans: dict[int, np.ndarray | None] = {}
        self._decoded: list[tuple[np.ndarray, np.ndarray | None]] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The tables, to store beside the hashes (``from_arrays`` reads them back)."""
        return {
            "params": self._params,
            "meta": self._meta,
            "blob": self._blob,
            "hot": self._hot,
            "hot_hashes": self._hot_hashes,
        }

    @property
    def nbytes(self) -> int:
        """Bytes of the tables (beyond the hashes themselves)."""
        return sum(a.nbytes for a in self.arrays().values())

    @property
    def hot(self) -> int:
        """Hashes left out of the tables (compared with every query)."""
        return len(self._hot)

    def probes(self, threshold: int) -> int | None:
        """Buckets a query probes at ``threshold``, or None when it is answered by a scan."""
        plan = self._plan(threshold)
        return None if plan is None else len(plan)

    def largest_bucket(self) -> int:
        """Entries of the most crowded bucket of any stored table (a test's and the
        bench's look at skew; the implicit table's hot buckets are never probed)."""
        largest = 0
        for starts, entries in self._tables():
            sizes = np.diff(starts)
            if entries is None:
                sizes = sizes[sizes <= self.hot_limit]
            largest = max(largest, int(sizes.max(initial=0)))
        return largest

    def nearest(self, queries: list[bytes], threshold: int) -> tuple[int, int] | None:
        """(position, distance) of the listed hash closest to any of ``queries`` if it is
        within ``threshold``; ties go to the lowest position, so the answer is stable (and
        the same as a scan's)."""
        if not self.count or not queries or threshold < 0:
            return None
        joined = self._joined(queries)
        plan = self._plan(threshold)
        if _mih is None:
            found = self._within_numpy(joined, threshold, plan)
            if not len(found[0]):
                return None
            best = np.lexsort((found[1], found[2]))[0]
            return int(found[1][best]), int(found[2][best])
        return self._lookup(joined, threshold, plan, every=False)

    def within(self, queries: list[bytes], threshold: int) -> tuple[np.ndarray, ...]:
        """Every (query number, listed position, distance) within ``threshold``, each pair
        once, sorted by query then position (int64 arrays): a range search, for videos."""
        empty = np.zeros(0, dtype=np.int64)
        if not self.count or not queries or threshold < 0:
            return empty, empty, empty
        joined = self._joined(queries)
        plan = self._plan(threshold)
        if _mih is None:
            asked, positions, distances = self._within_numpy(joined, threshold, plan)
        else:
            triples = np.frombuffer(
                self._lookup(joined, threshold, plan, every=True), dtype=np.uint32
            ).reshape(-1, 3)
            asked, positions, distances = (triples[:, i].astype(np.int64) for i in range(3))
        keys, first = np.unique(asked * self.count + positions, return_index=True)
        return keys // self.count, keys % self.count, distances[first]

    @staticmethod
    def _joined(queries: list[bytes]) -> bytes:
        joined = b"".join(queries)
        if len(joined) != SIZE * len(queries):
            raise ValueError("PDQ hashes must be 32 bytes each")
        return joined

    def _lookup(self, joined: bytes, threshold: int, plan: np.ndarray | None, *, every: bool):
        assert _mih is not None
        return _mih.lookup(
            self._hashes,
            self._blob,
            self._meta,
            self._params,
            _EMPTY if plan is None else plan,
            self._hot,
            self._hot_hashes,
            joined,
            threshold,
            plan is None,
            every,
        )

    def _plan(self, threshold: int) -> np.ndarray | None:
        """(table, xor mask) pairs to probe, u32; None: scan instead."""
        if threshold in self._plans:
            return self._plans[threshold]
        chosen = radii(len(self._meta), threshold)
        probes = sum(sum(math.comb(self.bits, k) for k in range(r + 1)) for r in chosen)
        # A bucket's entries, each a group of neighbours read as one cache line.
        expected = probes * (1 + self.count / (1 << self.bits)) + len(self._hot)
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

    # -- the numpy path (no C extension) ---------------------------------------------------

    def _tables(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each table decoded (``pdqlayout.unpack``), once."""
        if self._decoded is None:
            self._decoded = unpack(self._blob, self._meta, self.bits, self.width)
        return self._decoded

    def _within_numpy(
        self, joined: bytes, threshold: int, plan: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lookup in numpy: candidates, then their distances; (query, position,
        distance) of every pair within ``threshold``, perhaps twice."""
        rows = self._hashes.reshape(-1, SIZE)
        query_rows = np.frombuffer(joined, dtype=np.uint8).reshape(-1, SIZE)
        everything = np.arange(self.count, dtype=np.int64)
        parts = []
        tables = None if plan is None else self._tables()
        for q in range(len(query_rows)):
            if plan is None or tables is None:
                candidates = everything
            else:
                picked = [self._hot.astype(np.int64)]
                for t, (starts, values) in enumerate(tables):
                    masks = plan[plan[:, 0] == t, 1].astype(np.int64)
                    if not len(masks):
                        continue
                    value = chunks_of(query_rows[q : q + 1], int(self._meta[t, 0]), self.bits)
                    buckets = value[0] ^ masks
                    lo, hi = starts[buckets], starts[buckets + 1]
                    if values is None:
                        keep = hi - lo <= self.hot_limit
                        lo, hi = lo[keep], hi[keep]
                    if np.any(hi > (self.count if values is None else len(values))):
                        raise ValueError("PDQ index: the index is corrupt")
                    sizes = hi - lo
                    at = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
                    at = at + np.arange(int(sizes.sum()))
                    if values is None:
                        picked.append(at)
                        continue
                    groups = values[at]
                    spread = (groups[:, None] << GROUP_SHIFT) + np.arange(1 << GROUP_SHIFT)
                    if len(groups) and int(groups.max()) << GROUP_SHIFT >= self.count:
                        raise ValueError("PDQ index: the index is corrupt")
                    picked.append(spread.reshape(-1)[spread.reshape(-1) < self.count])
                candidates = np.concatenate(picked)
                if len(candidates) > self.count // 2:
                    candidates = everything
            distances = np.bitwise_count(rows[candidates] ^ query_rows[q]).sum(axis=1)
            ok = distances <= threshold
            parts.append((np.full(int(ok.sum()), q), candidates[ok], distances[ok]))
        asked, positions, distances = (
            np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(3)
        )
        return asked, positions, distances

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
    offsets = layout(bits)
    if hot_limit is None:
        mean = -(-count // (1 << bits))
        hot_limit = max(HOT_MIN, count // HOT_SHARE, 8 * mean)
    hot_limit = min(max(hot_limit, 0), _U32_MAX)
    rows = data.reshape(-1, SIZE)
    # Sorted by the leading 64 bits (as a snapshot's section is): table 0 is implicit.
    leading = rows.view(">u8")[:, 0] if count else np.zeros(0, dtype=">u8")
    implicit = bool(np.all(leading[1:] >= leading[:-1]))
    width = width_for(count)
    everything = _EMPTY
    tables = _tables(data, offsets, bits, width, implicit, everything, subset=False)
    hot_positions = _EMPTY
    if any(largest > hot_limit for *_, largest in tables):
        hot = np.zeros(count, dtype=np.uint8)
        if _mih is not None:
            _mih.hot(data, np.array(offsets, dtype=np.int32), bits, hot_limit, hot)
        else:
            for offset in offsets:
                keys = chunks_of(rows, offset, bits)
                hot |= (np.bincount(keys, minlength=1 << bits)[keys] > hot_limit).astype(np.uint8)
        hot_positions = np.flatnonzero(hot).astype(np.uint32)
        cold = np.flatnonzero(hot == 0).astype(np.uint32)
        # The implicit table keeps every position (its hot buckets are never probed).
        again = _tables(data, offsets, bits, width, implicit, cold, subset=True)
        tables = [tables[0] if implicit else again[0], *again[1:]]
    parts: list[bytes] = []
    meta = []
    at = 0
    for t, (offset, (words, samples, entries, _)) in enumerate(zip(offsets, tables, strict=True)):
        stored = not (t == 0 and implicit)
        row = [offset]
        for part in (words, samples, entries):
            pad = -at % 8
            parts.append(b"\0" * pad)
            at += pad
            row.append(at)
            parts.append(part)
            at += len(part)
        _, words_at, samples_at, entries_at = row
        entries_at, entry_count = (entries_at, ones(words)) if stored else (NO_ENTRIES, count)
        meta.append([offset, words_at, len(words) // 8, samples_at, entries_at, entry_count])
    blob = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return {
        "params": np.array([bits, GROUP_SHIFT, width, hot_limit], dtype=np.uint32),
        "meta": np.array(meta, dtype=np.uint64).reshape(len(offsets), 6),
        "blob": blob,
        "hot": hot_positions,
        "hot_hashes": rows[hot_positions].reshape(-1).copy(),
    }


def _tables(
    data: np.ndarray,
    offsets: list[int],
    bits: int,
    width: int,
    implicit: bool,
    positions: np.ndarray,
    *,
    subset: bool,
) -> list[tuple[bytes, bytes, bytes, int]]:
    """Every table over ``positions`` (all when not ``subset``), two at a time (the C
    loop releases the GIL; each holds ~4 bytes a hash and 12 a bucket while it runs)."""

    def one(t: int) -> tuple[bytes, bytes, bytes, int]:
        stored = not (t == 0 and implicit)
        return _table(data, positions, subset and stored, offsets[t], bits, width, stored)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(len(offsets))))


def _table(
    data: np.ndarray,
    positions: np.ndarray,
    subset: bool,
    offset: int,
    bits: int,
    width: int,
    stored: bool,
) -> tuple[bytes, bytes, bytes, int]:
    """One table: its unary directory, samples, packed entries and largest bucket
    (``_mih.table``, or ``pdqlayout.pack`` without it)."""
    if _mih is not None:
        return _mih.table(data, positions, subset, offset, bits, GROUP_SHIFT, width, stored)
    return pack(data, positions, subset, offset, bits, width, stored)
