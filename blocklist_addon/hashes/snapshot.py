"""The compiled hash list: what the sync worker stores and every proxy loads.

Like the URL snapshot (``blocklist_addon/snapshot.py``) it is one checksummed bytes
object, so a torn or corrupt copy is refused, never enforced. It holds the hashes
themselves (a hash list cannot be stored as digests of digests: a PDQ hash is compared by
distance), which is why the store and the proxy's copy keep it in 0600 files and no log
line ever prints one. Integers are unsigned, little-endian::

    header       64 bytes: magic, format version (u32), the 12 section lengths (u32), pad
    per kind (md5, sha1, sha256, pdq):
      hashes     n x size bytes, sorted
      entries    n x u32: the entry each hash belongs to
    id offsets   u32 x (e + 1) into *id blob*
    list index   e bytes, index into the list names; empty when there is one list
    id blob      UTF-8 entry ids, concatenated
    metadata     JSON: {"lists": [name, ...], "meta": {...}}
    checksum     SHA-256 of everything before it

An entry is one record of a feed (one id with one or more hashes of the same image).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate, pairwise

from blocklist_addon.hashes.kinds import KINDS, SIZES, parse_hex
from blocklist_addon.snapshot import SnapshotError, frame, unframe

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "HashRecord",
    "HashSnapshot",
    "SnapshotError",
    "opaque_id",
    "record_of",
]

MAGIC = b"\x89BLHASH\n"
FORMAT_VERSION = 1
MAX_LISTS = 255
_HEADER = struct.Struct("<8sI12I4x")
_CHECKSUM_SIZE = 32
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class HashRecord:
    """One feed record: the hashes of one image, by kind, and its opaque id."""

    hashes: tuple[tuple[str, bytes], ...]  # (kind, hash), kinds in KINDS order
    entry_id: str | None = None

    @property
    def digest(self) -> bytes:
        """What makes two records the same (a feed's duplicates are counted by it)."""
        return b"".join(kind.encode() + value for kind, value in self.hashes)

    def id(self) -> str:
        return self.entry_id or opaque_id(*self.hashes[0])


def opaque_id(kind: str, value: bytes) -> str:
    """An id for a record without one that does not show its hash (logs and block events
    carry ids): a digest of it, the same in every version."""
    return hashlib.sha256(b"blocklist-hash-id\0" + kind.encode() + b"\0" + value).hexdigest()[:16]


def record_of(fields: Mapping[str, object]) -> HashRecord | None:
    """The record for a feed object's hash fields, or None when any given hash is malformed
    or none is given. Empty fields count as absent."""
    hashes = []
    for kind in KINDS:
        text = fields.get(kind)
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        value = parse_hex(kind, text)
        if value is None:
            return None
        hashes.append((kind, value))
    if not hashes:
        return None
    entry_id = fields.get("id")
    return HashRecord(tuple(hashes), str(entry_id) if entry_id not in (None, "") else None)


class HashSnapshot:
    """An immutable hash snapshot: the bytes, and views of each section."""

    __slots__ = ("_data", "_id_blob", "_id_offsets", "_list_index", "_lists", "checksum", "meta")
    _data: bytes
    _id_blob: memoryview
    _id_offsets: memoryview
    _list_index: memoryview
    _lists: list[str]
    checksum: str
    meta: dict[str, object]

    @classmethod
    def build(
        cls,
        records: Iterable[tuple[str, HashRecord]],
        meta: Mapping[str, object] | None = None,
    ) -> HashSnapshot:
        """Compile (list name, record) pairs. A hash listed twice belongs to the first
        record that lists it; a record left with no hash of its own is dropped."""
        owner: dict[str, dict[bytes, int]] = {kind: {} for kind in KINDS}
        entries: list[tuple[str, str]] = []  # (list name, id)
        for name, record in records:
            if not isinstance(name, str):
                raise TypeError("list name must be a str")
            number = len(entries)
            fresh = False
            for kind, value in record.hashes:
                if kind not in SIZES or len(value) != SIZES[kind]:
                    raise ValueError(f"a {kind} hash must be {SIZES.get(kind)} bytes")
                if value not in owner[kind]:
                    owner[kind][value] = number
                    fresh = True
            if fresh:
                entries.append((name, record.id()))
        names = sorted({name for name, _ in entries})
        if len(names) > MAX_LISTS:
            raise ValueError(f"at most {MAX_LISTS} list names per snapshot, got {len(names)}")
        sections: list[bytes] = []
        for kind in KINDS:
            hashes = sorted(owner[kind])
            sections.append(b"".join(hashes))
            sections.append(b"".join(_U32.pack(owner[kind][h]) for h in hashes))
        encoded = [entry_id.encode("utf-8") for _, entry_id in entries]
        sections.append(b"".join(_U32.pack(n) for n in accumulate(map(len, encoded), initial=0)))
        if len(names) > 1:
            number_of = {name: i for i, name in enumerate(names)}
            sections.append(bytes(number_of[name] for name, _ in entries))
        else:
            sections.append(b"")
        sections.append(b"".join(encoded))
        counts = {kind: len(owner[kind]) for kind in KINDS}
        document = {
            "lists": names,
            "meta": {**(meta or {}), "entries": len(entries), "hashes": counts},
        }
        sections.append(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
        return cls.from_bytes(frame(_HEADER, MAGIC, FORMAT_VERSION, sections))

    @classmethod
    def from_bytes(cls, data: bytes) -> HashSnapshot:
        """Load serialized bytes, refusing anything but an intact, readable snapshot."""
        data, lengths = unframe(
            data, _HEADER, MAGIC, FORMAT_VERSION, "hash snapshot", "a hash list snapshot"
        )
        snapshot = object.__new__(cls)
        snapshot._load(data, lengths)
        return snapshot

    def _load(self, data: bytes, lengths: list[int]) -> None:
        view = memoryview(data)
        bounds = list(accumulate(lengths, initial=_HEADER.size))
        parts = [view[start:end] for start, end in pairwise(bounds)]
        id_offsets, list_index, id_blob, metadata = parts[8:]
        if len(id_offsets) % 4 or not id_offsets:
            raise SnapshotError("malformed hash snapshot: id offsets")
        count = len(id_offsets) // 4 - 1
        offsets = id_offsets.cast("I")
        if (
            offsets[0] != 0
            or offsets[-1] != len(id_blob)
            or any(map(int.__gt__, offsets, offsets[1:]))
        ):
            raise SnapshotError("malformed hash snapshot: id offsets out of order")
        for i, kind in enumerate(KINDS):
            hashes, owners = parts[2 * i], parts[2 * i + 1]
            n, rest = divmod(len(hashes), SIZES[kind])
            if rest or len(owners) != 4 * n:
                raise SnapshotError(f"malformed hash snapshot: {kind} section")
            if n and max(owners.cast("I")) >= count:
                raise SnapshotError(f"malformed hash snapshot: {kind} entry out of range")
        try:
            document = json.loads(str(metadata, "utf-8"))
            lists, meta = document["lists"], document["meta"]
        except (ValueError, TypeError, KeyError, RecursionError):
            raise SnapshotError("malformed hash snapshot: metadata") from None
        if not isinstance(lists, list) or not all(isinstance(n, str) for n in lists):
            raise SnapshotError("malformed hash snapshot: list names")
        if not isinstance(meta, dict):
            raise SnapshotError("malformed hash snapshot: meta")
        if list_index:
            if len(list_index) != count or max(list_index) >= len(lists):
                raise SnapshotError("malformed hash snapshot: list index")
        elif count and len(lists) != 1:
            raise SnapshotError("malformed hash snapshot: list names do not match the entries")
        self._data = data
        self._id_offsets = offsets
        self._list_index = list_index
        self._id_blob = id_blob
        self._lists = lists
        self.meta = meta
        self.checksum = data[-_CHECKSUM_SIZE:].hex()

    def section(self, kind: str) -> tuple[memoryview, memoryview]:
        """The sorted hashes of ``kind`` and, for each, its entry number (u32)."""
        i = KINDS.index(kind)
        lengths = _HEADER.unpack_from(self._data)[2:]
        start = _HEADER.size + sum(lengths[: 2 * i])
        hashes = memoryview(self._data)[start : start + lengths[2 * i]]
        owners = memoryview(self._data)[
            start + lengths[2 * i] : start + lengths[2 * i] + lengths[2 * i + 1]
        ]
        return hashes, owners.cast("I")

    def entry(self, number: int) -> tuple[str, str]:
        """(list name, entry id) of entry ``number``."""
        name = self._lists[self._list_index[number] if self._list_index else 0]
        raw = self._id_blob[self._id_offsets[number] : self._id_offsets[number + 1]]
        return name, str(raw, "utf-8", "replace")

    def records(self) -> Iterator[tuple[str, HashRecord]]:
        """(list name, record) of every entry, in entry order: what it was built from, less
        the hashes an earlier entry already held."""
        grouped: list[list[tuple[str, bytes]]] = [[] for _ in range(len(self))]
        for kind in KINDS:
            hashes, owners = self.section(kind)
            size = SIZES[kind]
            for i, owner in enumerate(owners):
                grouped[owner].append((kind, bytes(hashes[i * size : (i + 1) * size])))
        for number, hashes in enumerate(grouped):
            name, entry_id = self.entry(number)
            yield name, HashRecord(tuple(hashes), entry_id)

    def counts(self) -> dict[str, int]:
        """Hashes of each kind."""
        return {kind: len(self.section(kind)[0]) // SIZES[kind] for kind in KINDS}

    def to_bytes(self) -> bytes:
        return self._data

    def __len__(self) -> int:
        return len(self._id_offsets) - 1

    def __repr__(self) -> str:
        return f"<HashSnapshot entries={len(self)} checksum={self.checksum[:16]}>"
