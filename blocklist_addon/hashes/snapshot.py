"""The compiled hash list: what the sync worker stores and every proxy loads.

Like the URL snapshot (whose framing it shares: ``blocklist_addon/urls/snapshot_format.py``)
it is one checksummed bytes object, so a torn or corrupt copy is refused, never enforced. It
holds the hashes themselves (a hash list cannot be stored as digests of digests: a PDQ hash
is compared by distance), which is why the store and the proxy's copy keep it in 0600 files
and no log line ever prints one. Integers are unsigned, little-endian::

    header       64 bytes: magic, format version (u32), the 13 section lengths (u32);
                 format 3 adds a u32 count of further sections (3) and their lengths
    per kind (md5, sha1, sha256, pdq):
      hashes     n x size bytes, sorted
      entries    n x u32: the entry each hash belongs to
    id offsets   u32 x (e + 1) into *id blob*
    list index   e bytes, index into the list names; empty when there is one list
    id blob      UTF-8 entry ids, concatenated
    metadata     JSON: {"lists": [name, ...], "meta": {...}, "categories": [name, ...]}
    categories   u16 x e: 0 for none, else 1 + index into the category names; empty when
                 no entry has one (format version 2; version 1 has no such section, its
                 length field was padding, always 0: a version 1 snapshot reads as one
                 without categories, and one without categories is written as version 1)
    vpdq frames  f x 32 bytes: the PDQ hashes of the listed videos' sampled frames, the
                 frames of an entry together and in their order (format 3)
    vpdq quality f bytes: each frame's PDQ quality, 0-100 (format 3)
    vpdq entries f x u32: the entry each frame belongs to, never decreasing (format 3)
    checksum     SHA-256 of everything before it

Format 3 is format 2 with the three video sections: its header is format 2's 64 bytes
followed by the count of further sections (3) and their lengths, so a reader of formats
1 and 2 finds version 3 where it expects its version and refuses the snapshot whole (its
proxy keeps the list it has). A snapshot without videos is written in format 2 (or 1,
without categories) byte for byte as before.

An entry is one record of a feed (one id with one or more hashes of the same image or
video, its vPDQ frames when the feed gives them, and the hotline's category for it when
the feed gives one).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate, pairwise

import numpy as np

from blocklist_addon.hashes.kinds import KINDS, SIZES
from blocklist_addon.hashes.records import FRAME_SIZE, HashRecord, HashRecords
from blocklist_addon.urls.snapshot_format import SnapshotError, frame

__all__ = ["FORMAT_VERSION", "MAGIC", "HashSnapshot", "SnapshotError"]

MAGIC = b"\x89BLHASH\n"
FORMAT_VERSION = 3
#: Versions read: 1 is 2 without categories, 2 is 3 without videos.
READ_VERSIONS = (1, 2, 3)
_SECTIONS = 13
_HEADER = struct.Struct(f"<8sI{_SECTIONS}I")
#: Format 3's further sections (vpdq frames, qualities, entries): a count, then lengths.
_EXTRA = 3
_EXTRA_HEADER = struct.Struct(f"<I{_EXTRA}I")
_CHECKSUM_SIZE = 32
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SPAN = struct.Struct("<II")
#: The sections, in their order (the header's 13, then format 3's 3). Only this module
#: knows where each lies: the rest of the package names one (``_cold``, ``_column``).
SECTIONS = (
    *(name for kind in KINDS for name in (kind, f"{kind} entries")),
    "id offsets",
    "list index",
    "id blob",
    "metadata",
    "categories",
    "vpdq frames",
    "vpdq quality",
    "vpdq entries",
)
_NUMBER = {name: number for number, name in enumerate(SECTIONS)}


class HashSnapshot:
    """An immutable hash snapshot: the bytes, and views of each section."""

    __slots__ = (
        "_categories",
        "_data",
        "_id_blob",
        "_id_offsets",
        "_list_index",
        "_lists",
        "_starts",
        "_video",
        "category_names",
        "checksum",
        "meta",
    )
    _data: bytes | memoryview
    _categories: memoryview | None
    category_names: list[str]
    _id_blob: memoryview
    _id_offsets: memoryview
    _list_index: memoryview
    _lists: list[str]
    _starts: list[int]  # where each section starts in the bytes, and where the last ends
    _video: tuple[memoryview, memoryview, np.ndarray] | None
    checksum: str
    meta: dict[str, object]

    @classmethod
    def build(
        cls,
        records: HashRecords | Iterable[tuple[str, HashRecord]],
        meta: Mapping[str, object] | None = None,
    ) -> HashSnapshot:
        """Compile packed records, or (list name, record) pairs. A hash listed twice belongs
        to the first record that lists it; a record left with no hash of its own is dropped."""
        if not isinstance(records, HashRecords):
            packed = HashRecords()
            for name, record in records:
                packed.append(record, name)
            records = packed
        sections = records.sections(meta)
        if len(sections) > _SECTIONS:  # the video sections: format 3
            head = _HEADER.pack(MAGIC, 3, *map(len, sections[:_SECTIONS]))
            head += _EXTRA_HEADER.pack(_EXTRA, *map(len, sections[_SECTIONS:]))
            checksum = hashlib.sha256(head)
            for section in sections:
                checksum.update(section)
            return cls.from_bytes(b"".join([head, *sections, checksum.digest()]))
        version = 2 if sections[-1] else 1
        return cls.from_bytes(frame(_HEADER, MAGIC, version, sections))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, *, verified: bool = False) -> HashSnapshot:
        """Load serialized bytes, refusing anything but an intact, readable snapshot.
        ``data`` is used in place, not copied (it may be a file's map). ``verified``: its
        checksum was already checked (a mapped file checksummed whole), so it is not
        computed again; its structure always is."""
        view = memoryview(data).cast("B")
        if len(view) < _HEADER.size + _CHECKSUM_SIZE:
            raise SnapshotError(f"truncated hash snapshot: only {len(view)} bytes")
        found, version, *lengths = _HEADER.unpack_from(view)
        if found != MAGIC:
            raise SnapshotError("not a hash list snapshot (bad magic)")
        if version not in READ_VERSIONS or (version == 1 and lengths[-1]):
            raise SnapshotError(
                f"unsupported hash snapshot format version {version} "
                f"(this reads {', '.join(map(str, READ_VERSIONS))})"
            )
        header = _HEADER.size
        if version == 3:
            if len(view) < _HEADER.size + _EXTRA_HEADER.size + _CHECKSUM_SIZE:
                raise SnapshotError(f"truncated hash snapshot: only {len(view)} bytes")
            extra, *more = _EXTRA_HEADER.unpack_from(view, _HEADER.size)
            if extra != _EXTRA:
                raise SnapshotError(
                    f"unsupported hash snapshot format 3 with {extra} further sections "
                    f"(this reads {_EXTRA})"
                )
            lengths += more
            header += _EXTRA_HEADER.size
        expected = header + sum(lengths) + _CHECKSUM_SIZE
        if len(view) != expected:
            what = "truncated" if len(view) < expected else "overlong"
            raise SnapshotError(f"{what} hash snapshot: {len(view)} of {expected} bytes")
        if not verified and (
            hashlib.sha256(view[:-_CHECKSUM_SIZE]).digest() != view[-_CHECKSUM_SIZE:]
        ):
            raise SnapshotError("hash snapshot checksum mismatch: the data is corrupted")
        snapshot = object.__new__(cls)
        snapshot._load(data if isinstance(data, bytes) else view, lengths, header)
        return snapshot

    def _load(self, data: bytes | memoryview, lengths: list[int], header: int) -> None:
        view = memoryview(data)
        bounds = list(accumulate(lengths, initial=header))
        parts = dict(zip(SECTIONS, (view[a:b] for a, b in pairwise(bounds)), strict=False))
        id_offsets, list_index, id_blob = parts["id offsets"], parts["list index"], parts["id blob"]
        metadata, categories = parts["metadata"], parts["categories"]
        if len(id_offsets) % 4 or not id_offsets:
            raise SnapshotError("malformed hash snapshot: id offsets")
        count = len(id_offsets) // 4 - 1
        offsets = id_offsets.cast("I")
        steps = np.frombuffer(id_offsets, dtype=np.uint32)
        if offsets[0] != 0 or offsets[-1] != len(id_blob) or bool((steps[1:] < steps[:-1]).any()):
            raise SnapshotError("malformed hash snapshot: id offsets out of order")
        for kind in KINDS:
            hashes, owners = parts[kind], parts[f"{kind} entries"]
            n, rest = divmod(len(hashes), SIZES[kind])
            if rest or len(owners) != 4 * n:
                raise SnapshotError(f"malformed hash snapshot: {kind} section")
            if n and int(np.frombuffer(owners, dtype=np.uint32).max()) >= count:
                raise SnapshotError(f"malformed hash snapshot: {kind} entry out of range")
        try:
            document = json.loads(str(metadata, "utf-8"))
            lists, meta = document["lists"], document["meta"]
            names = document.get("categories", [])
        except (ValueError, TypeError, KeyError, RecursionError, AttributeError):
            raise SnapshotError("malformed hash snapshot: metadata") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SnapshotError("malformed hash snapshot: category names")
        if categories and (
            len(categories) != 2 * count
            or int(np.frombuffer(categories, dtype="<u2").max(initial=0)) > len(names)
        ):
            raise SnapshotError("malformed hash snapshot: categories")
        if not isinstance(lists, list) or not all(isinstance(n, str) for n in lists):
            raise SnapshotError("malformed hash snapshot: list names")
        if not isinstance(meta, dict):
            raise SnapshotError("malformed hash snapshot: meta")
        if list_index:
            if len(list_index) != count or max(list_index) >= len(lists):
                raise SnapshotError("malformed hash snapshot: list index")
        elif count and len(lists) != 1:
            raise SnapshotError("malformed hash snapshot: list names do not match the entries")
        self._video = None
        if "vpdq frames" in parts:
            frames, qualities, owners = (
                parts[f"vpdq {n}"] for n in ("frames", "quality", "entries")
            )
            n, rest = divmod(len(frames), FRAME_SIZE)
            of = np.frombuffer(owners, dtype="<u4")
            marks = np.frombuffer(qualities, dtype=np.uint8)
            if (
                rest
                or len(qualities) != n
                or len(owners) != 4 * n
                or (n and int(of[-1]) >= count)
                or bool((of[1:] < of[:-1]).any())
                or int(marks.max(initial=0)) > 100
            ):
                raise SnapshotError("malformed hash snapshot: vpdq sections")
            self._video = frames, qualities, of
        self._starts = bounds
        self._data = data
        self._id_offsets = offsets
        self._list_index = list_index
        self._id_blob = id_blob
        self._lists = lists
        self._categories = categories.cast("H") if categories else None
        self.category_names = names
        self.meta = meta
        self.checksum = bytes(view[-_CHECKSUM_SIZE:]).hex()

    def section(self, kind: str) -> tuple[memoryview, memoryview]:
        """The sorted hashes of ``kind`` and, for each, its entry number (u32)."""
        start, end = self._span(kind)
        return memoryview(self._data)[start:end], self._column(f"{kind} entries")

    @property
    def pdq_offset(self) -> int:
        """Where the PDQ hashes start in the snapshot's bytes (the shared index file puts
        them on a cache line's boundary)."""
        return self._span("pdq")[0]

    def cold_ranges(self) -> list[tuple[int, int]]:
        """The (start, end) ranges of the snapshot's bytes that only a match reads: all of
        it but the hashes, which every lookup reads (the shared index file lets them go)."""
        ranges, at = [], 0
        for first, last in [*map(self._span, KINDS), (len(self._data), len(self._data))]:
            if first > at:
                ranges.append((at, first))
            at = max(at, last)
        return ranges

    # What only a match reads (entries, ids, list numbers, categories) is read here, by the
    # section's name: in place in the snapshot's bytes, or, in the shared index file, with
    # ``pread`` from the file (``mapped._MappedSnapshot`` overrides the two readers).

    def _span(self, section: str) -> tuple[int, int]:
        """Where ``section`` starts and ends in the snapshot's bytes."""
        number = _NUMBER[section]
        return self._starts[number], self._starts[number + 1]

    def _read(self, start: int, end: int) -> bytes | memoryview:
        """Bytes ``start:end`` of the snapshot, of the sections only a match reads."""
        return memoryview(self._data)[start:end]

    def _cold(self, section: str, start: int, end: int) -> bytes | memoryview:
        """Bytes ``start:end`` of ``section`` (one only a match reads)."""
        at = self._starts[_NUMBER[section]]
        return self._read(at + start, at + end)

    def _column(self, section: str) -> memoryview:
        """The u32s of ``section`` (each hash's entry number), indexed and iterated."""
        start, end = self._span(section)
        return memoryview(self._data)[start:end].cast("I")

    def _check(self, number: int) -> None:
        """Refuse a number out of range: the readers read by offset, and a number past the
        end would read a neighbouring section (or the next file's bytes) as its entry."""
        if not 0 <= number < len(self._id_offsets) - 1:
            raise IndexError("entry out of range")

    def video(self) -> tuple[memoryview, memoryview, np.ndarray] | None:
        """The listed videos' frames (32-byte PDQ hashes end to end, an entry's together
        and in order), their qualities (a byte each) and each frame's entry number; None
        when no entry has a video (formats 1 and 2)."""
        return self._video

    def videos(self) -> Iterator[tuple[int, tuple[tuple[bytes, int], ...]]]:
        """(entry number, its frames) of every entry with a video, in entry order."""
        if self._video is None:
            return
        frames, qualities, owners = self._video
        start = 0
        for end in [*np.flatnonzero(owners[1:] != owners[:-1]) + 1, len(owners)]:
            yield (
                int(owners[start]),
                tuple(
                    (bytes(frames[i * FRAME_SIZE : (i + 1) * FRAME_SIZE]), qualities[i])
                    for i in range(start, end)
                ),
            )
            start = end

    def entry(self, number: int) -> tuple[str, str]:
        """(list name, entry id) of entry ``number``."""
        self._check(number)
        list_number = self._cold("list index", number, number + 1)[0] if self._list_index else 0
        first, end = _SPAN.unpack(self._cold("id offsets", 4 * number, 4 * number + 8))
        return self._lists[list_number], str(self._cold("id blob", first, end), "utf-8", "replace")

    def has_id(self, entry_id: str) -> bool:
        """Whether an entry has this id (``blocklist-sync suppress`` refuses unknown ids)."""
        blob, needle = bytes(self._id_blob), entry_id.encode("utf-8")
        if not needle:
            return False
        starts = np.frombuffer(self._id_offsets, dtype=np.uint32)
        at = blob.find(needle)
        while at >= 0:
            number = int(np.searchsorted(starts, at))
            end = at + len(needle)
            if number < len(self) and starts[number] == at and starts[number + 1] == end:
                return True
            at = blob.find(needle, at + 1)
        return False

    def category(self, number: int) -> str | None:
        """The hotline's category of entry ``number``, when its feed gave one."""
        self._check(number)
        if self._categories is None:
            return None
        (index,) = _U16.unpack(self._cold("categories", 2 * number, 2 * number + 2))
        return self.category_names[index - 1] if index else None

    def category_numbers(self) -> np.ndarray | None:
        """Each entry's category as stored (0: none, else 1 + its index in
        ``category_names``), or None when no entry has one."""
        if self._categories is None:
            return None
        return np.frombuffer(self._categories, dtype="<u2")

    def records(self) -> Iterator[tuple[str, HashRecord]]:
        """(list name, record) of every entry, in entry order: what it was built from, less
        the hashes an earlier entry already held."""
        grouped: list[list[tuple[str, bytes]]] = [[] for _ in range(len(self))]
        for kind in KINDS:
            hashes, owners = self.section(kind)
            size = SIZES[kind]
            for i, owner in enumerate(owners):
                grouped[owner].append((kind, bytes(hashes[i * size : (i + 1) * size])))
        videos = dict(self.videos())
        for number, hashes in enumerate(grouped):
            name, entry_id = self.entry(number)
            video = videos.get(number, ())
            yield name, HashRecord(tuple(hashes), entry_id, self.category(number), video)

    def counts(self) -> dict[str, int]:
        """Hashes of each kind."""
        return {kind: len(self.section(kind)[0]) // SIZES[kind] for kind in KINDS}

    def to_bytes(self) -> bytes:
        return self._data if isinstance(self._data, bytes) else bytes(self._data)

    def __len__(self) -> int:
        return len(self._id_offsets) - 1

    def __repr__(self) -> str:
        return f"<HashSnapshot entries={len(self)} checksum={self.checksum[:16]}>"
