"""The PDQ index's packed tables: how a table is laid out, and its writing and reading in
numpy (``pdqindex`` builds and searches them; ``_mih.c`` writes and reads the same bytes,
faster, and the index uses numpy only without it).

The index cuts each 256-bit hash into chunks of ``bits`` bits, end to end from the top
(``layout``), and keeps a table a chunk. A table, in the index's blob (each part on an
8-byte boundary):

- a unary directory: bucket by bucket (every value of the chunk), a one bit an entry of
  the bucket, then a zero (little-endian bit order, whole 64-bit words);
- samples: where every 64th bucket starts, u32;
- entries: bucket by bucket, the group of each hash (its position >> GROUP_SHIFT, each
  group once a bucket), ``width`` bits each, bit-packed little-endian, with 8 bytes of
  slack after (the C loop reads a word at a time). The implicit table (the leading chunk,
  when the hashes are sorted by it) has none: its buckets are runs of positions.

Its row of the index's meta (u64 x 6): the chunk's first bit, where the directory starts,
its words, where the samples start, where the entries start (NO_ENTRIES: implicit), and
its entries (the hashes, for the implicit table).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GROUP_SHIFT", "NO_ENTRIES", "SIZE", "chunks_of", "layout", "pack", "unpack"]

SIZE = 32
#: Chunk sizes: about one hash a bucket (a directory costs 2**bits bits, plus a u32 each
#: 64 buckets), 23 bits at 10,000,000.
MAX_BITS = 24
MIN_BITS = 6
#: No more tables than a threshold of 31 can use (32 chunks searched exactly).
MAX_TABLES = 32
#: A stored table's entries are groups of 2**GROUP_SHIFT neighbouring hashes (64 bytes,
#: one cache line): a bit less an entry, and the 2 hashes read together.
GROUP_SHIFT = 1
#: A table without entries (meta's entries_at): implicit, its buckets are runs of positions.
NO_ENTRIES = 2**64 - 1


def choose_bits(count: int) -> int:
    """Chunk size for ``count`` hashes: about one hash a bucket, within MIN_BITS..MAX_BITS."""
    if count < 2:
        return MIN_BITS
    return max(MIN_BITS, min(MAX_BITS, round(math.log2(count))))


def layout(bits: int) -> list[int]:
    """Each table's chunk: its first bit (0 is the hash's first bit), chunks end to end
    from the top, so table 0's chunk is the hash's leading bits."""
    return [bits * t for t in range(min(256 // bits, MAX_TABLES))]


def width_for(count: int) -> int:
    """Bits an entry (a group of 2**GROUP_SHIFT neighbours) needs among ``count`` hashes."""
    return max(1, ((count - 1) >> GROUP_SHIFT).bit_length()) if count else 1


def chunks_of(rows: np.ndarray, offset: int, bits: int) -> np.ndarray:
    """The chunk at ``offset`` of each hash (rows of 32 bytes), as int64."""
    words = np.ascontiguousarray(rows).view(">u8").reshape(-1, 4).astype(np.uint64)
    word, off = divmod(offset, 64)
    mask = np.uint64((1 << bits) - 1)
    if off + bits <= 64:
        value = words[:, word] >> np.uint64(64 - off - bits)
    else:
        value = (words[:, word] << np.uint64(off + bits - 64)) | (
            words[:, word + 1] >> np.uint64(128 - off - bits)
        )
    return (value & mask).astype(np.int64)


def ones(words: bytes) -> int:
    """Entries a unary directory counts (its one bits)."""
    return int(np.bitwise_count(np.frombuffer(words, dtype=np.uint64)).sum())


def pack(
    data: np.ndarray,
    positions: np.ndarray,
    subset: bool,
    offset: int,
    bits: int,
    width: int,
    stored: bool,
) -> tuple[bytes, bytes, bytes, int]:
    """One table over the hashes at ``positions`` (all when not ``subset``): its unary
    directory, samples, packed entries (none when not ``stored``) and largest bucket, as
    ``_mih.table`` writes them."""
    rows = data.reshape(-1, SIZE)
    chosen = positions.astype(np.int64) if subset else np.arange(len(rows), dtype=np.int64)
    keys = chunks_of(rows[chosen], offset, bits) if len(chosen) else np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    keys, chosen = keys[order], chosen[order]
    buckets = 1 << bits
    largest = int(np.bincount(keys, minlength=buckets).max(initial=0))
    groups = chosen >> GROUP_SHIFT if stored else np.arange(len(chosen))
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (groups[1:] != groups[:-1])
    keys, groups = keys[keep], groups[keep]
    total = len(keys) + buckets
    unary = np.zeros(-(-total // 64) * 64, dtype=np.uint8)
    unary[np.arange(len(keys)) + keys] = 1
    words = np.packbits(unary, bitorder="little").tobytes()
    starts = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=buckets))])
    samples = starts[0:buckets:64].astype("<u4").tobytes()
    if not stored:
        return words, samples, b"", largest
    flat = ((groups[:, None] >> np.arange(width)) & 1).astype(np.uint8).reshape(-1)
    entries = np.packbits(flat, bitorder="little").tobytes()
    tail = b"\0" * ((len(keys) * width + 7) // 8 + 8 - len(entries))
    return words, samples, entries + tail, largest


def unpack(
    blob: np.ndarray, meta: np.ndarray, bits: int, width: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each table of ``meta`` read from ``blob``: where each bucket starts (2**bits + 1)
    and its entries (the groups), None for the implicit table (the starts are positions);
    ValueError when the bytes do not add up."""
    blob, buckets = np.asarray(blob, dtype=np.uint8), 1 << bits
    decoded = []
    for _, words_at, nwords, _, entries_at, entries in meta.tolist():
        unary = np.unpackbits(blob[words_at : words_at + 8 * nwords], bitorder="little")
        zeros = np.flatnonzero(unary[: entries + buckets] == 0)[:buckets]
        if len(zeros) != buckets:
            raise ValueError("PDQ index: the index is corrupt")
        starts = np.concatenate([[0], zeros - np.arange(buckets)]).astype(np.int64)
        values = None
        if entries_at != NO_ENTRIES:
            size = entries * width
            raw = blob[entries_at : entries_at + (size + 7) // 8]
            flat = np.unpackbits(raw, bitorder="little")[:size].reshape(-1, width)
            values = flat.astype(np.int64) @ (1 << np.arange(width, dtype=np.int64))
        if starts[-1] != entries or (values is not None and len(values) != entries):
            raise ValueError("PDQ index: the index is corrupt")
        decoded.append((starts, values))
    return decoded
