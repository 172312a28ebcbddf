"""The compiled hash list: what the sync worker stores and every proxy loads.

Like the URL snapshot (``blocklist_addon/urls/snapshot.py``) it is one checksummed bytes
object, so a torn or corrupt copy is refused, never enforced. It holds the hashes
themselves (a hash list cannot be stored as digests of digests: a PDQ hash is compared by
distance), which is why the store and the proxy's copy keep it in 0600 files and no log
line ever prints one. Integers are unsigned, little-endian::

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
from array import array
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

import numpy as np

from blocklist_addon.hashes.kinds import KINDS, SIZES, parse_hex
from blocklist_addon.urls.snapshot import SnapshotError, frame

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "HashRecord",
    "HashRecords",
    "HashSnapshot",
    "SnapshotError",
    "hashes_of",
    "opaque_id",
    "record_of",
]

MAGIC = b"\x89BLHASH\n"
FORMAT_VERSION = 3
#: Versions read: 1 is 2 without categories, 2 is 3 without videos.
READ_VERSIONS = (1, 2, 3)
MAX_LISTS = 255
MAX_CATEGORIES = 65535
#: Longest category a record may carry (a hotline's severity class: "A", "1", "category-2").
MAX_CATEGORY = 64
_SECTIONS = 13
_HEADER = struct.Struct(f"<8sI{_SECTIONS}I")
#: Format 3's further sections (vpdq frames, qualities, entries): a count, then lengths.
_EXTRA = 3
_EXTRA_HEADER = struct.Struct(f"<I{_EXTRA}I")
#: Bytes of one vPDQ frame hash.
FRAME_SIZE = 32
_CHECKSUM_SIZE = 32
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class HashRecord:
    """One feed record: the hashes of one image, by kind, and its opaque id."""

    hashes: tuple[tuple[str, bytes], ...]  # (kind, hash), kinds in KINDS order
    entry_id: str | None = None
    category: str | None = None  # the hotline's category (severity) of the image
    vpdq: tuple[tuple[bytes, int], ...] = ()  # a video's (PDQ hash, quality) frames

    @property
    def digest(self) -> bytes:
        """What makes two records the same (a feed's duplicates are counted by it)."""
        exact = b"".join(kind.encode() + value for kind, value in self.hashes)
        return exact + (b"vpdq" + video_key(self.vpdq) if self.vpdq else b"")

    def id(self) -> str:
        if self.entry_id:
            return self.entry_id
        if self.hashes:
            return opaque_id(*self.hashes[0])
        return opaque_id("vpdq", video_key(self.vpdq))


def video_key(frames: Iterable[tuple[bytes, int]]) -> bytes:
    """What identifies a listed video: a SHA-256 of its frames' hashes and qualities in
    order (two records listing the same frames list the same video)."""
    return hashlib.sha256(b"".join(value + bytes([quality]) for value, quality in frames)).digest()


def opaque_id(kind: str, value: bytes) -> str:
    """An id for a record without one that does not show its hash (logs and block events
    carry ids): a digest of it, the same in every version."""
    return hashlib.sha256(b"blocklist-hash-id\0" + kind.encode() + b"\0" + value).hexdigest()[:16]


def record_of(fields: Mapping[str, object]) -> HashRecord | None:
    """The record for a feed object's hash fields, or None when any given hash (or its
    ``vpdq``) is malformed or none is given, or its category is not one (``category_of``).
    Empty fields count as absent."""
    hashes = hashes_of(fields, empty=True)
    try:
        video = video_of(fields)
        category = category_of(fields.get("category"))
    except ValueError:
        return None
    if hashes is None or not (hashes or video):
        return None
    entry_id = fields.get("id")
    entry_id = str(entry_id) if entry_id not in (None, "") else None
    return HashRecord(hashes, entry_id, category, video)


def video_of(fields: Mapping[str, object]) -> tuple[tuple[bytes, int], ...]:
    """A feed object's ``vpdq`` frames (``video.parse_vpdq``): () when absent or empty,
    ValueError when malformed (the message never quotes it)."""
    value = fields.get("vpdq")
    if value is None or value == [] or (isinstance(value, str) and value.strip() in ("", "[]")):
        return ()
    from blocklist_addon.hashes.video import parse_vpdq

    frames = parse_vpdq(value)
    if frames is None:
        raise ValueError("malformed vpdq")
    return frames


def category_of(value: object) -> str | None:
    """A feed's category as stored: a string or an integer, as text, stripped; None when
    absent or empty; ValueError for anything else (an object, a list, a boolean, text
    longer than MAX_CATEGORY characters or holding control characters)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a category is a string or an integer")
    text = str(value).strip()
    if len(text) > MAX_CATEGORY or not text.isprintable():
        raise ValueError(f"a category is at most {MAX_CATEGORY} printable characters")
    return text or None


def hashes_of(
    fields: Mapping[str, object], *, empty: bool = False
) -> tuple[tuple[str, bytes], ...] | None:
    """A feed object's (kind, hash) pairs in KINDS order, or None as for ``record_of``
    (``empty``: () rather than None when no hash is given, for a record with only vpdq)."""
    hashes = []
    for kind in KINDS:
        text = fields.get(kind)
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        value = parse_hex(kind, text)
        if value is None:
            return None
        hashes.append((kind, value))
    return tuple(hashes) or (() if empty else None)


class HashRecords:
    """Records packed as a snapshot stores them, so that a feed of millions is read and
    built without an object a record (read into ``HashRecord``s, a feed of MD5 + PDQ took
    ~700 B a record; packed, its hashes and id and 4 bytes a hash and 5 a record). Per kind:
    the hashes end to end and the record each belongs to (u32, in record order); the UTF-8
    ids end to end and where each ends; a byte a record for its list name; the vPDQ frames
    end to end (32 bytes each), their qualities (a byte each) and the record each belongs
    to, with a SHA-256 key a video record (``video_key``, for duplicates). Iterating gives
    ``HashRecord``s again, one at a time, each with its id (an opaque one when the feed gave
    none)."""

    __slots__ = (
        "_categories",
        "_category_names",
        "_category_of",
        "_counts",
        "_frame_owners",
        "_frames",
        "_hashes",
        "_id_ends",
        "_ids",
        "_list",
        "_name_of",
        "_names",
        "_owners",
        "_qualities",
        "_video_keys",
        "_video_owners",
    )

    def __init__(self) -> None:
        self._hashes = {kind: bytearray() for kind in KINDS}
        self._owners = {kind: array("I") for kind in KINDS}
        self._ids = bytearray()
        self._id_ends = array("I")
        self._list = bytearray()
        self._names: list[str] = []
        self._name_of: dict[str, int] = {}
        self._categories = array("H")  # a record's category: 0 none, else 1 + its index
        self._category_names: list[str] = []
        self._category_of: dict[str, int] = {}
        self._frames = bytearray()  # vPDQ frame hashes, 32 bytes each, by record
        self._qualities = bytearray()  # each frame's quality
        self._frame_owners = array("I")  # the record each frame belongs to
        self._video_keys = bytearray()  # video_key of each record with frames
        self._video_owners = array("I")
        self._counts: tuple[int, int] | None = None  # (entries, duplicate hashes) once merged

    def append(self, record: HashRecord, list_name: str = "default") -> None:
        """Add ``record`` to ``list_name``; ValueError for a hash of the wrong size, or past
        the limits of the format (4 GiB of ids, MAX_LISTS names)."""
        number = len(self._id_ends)
        hashes, video = record.hashes, record.vpdq
        for kind, value in hashes:
            if len(value) != SIZES.get(kind):
                raise ValueError(f"a {kind} hash must be {SIZES.get(kind)} bytes")
        for value, quality in video:
            if len(value) != FRAME_SIZE or not 0 <= quality <= 100:
                raise ValueError("a vpdq frame is a 32-byte PDQ hash and a quality 0-100")
        for kind, value in hashes:
            self._hashes[kind] += value
            self._owners[kind].append(number)
        if video:
            for value, quality in video:
                self._frames += value
                self._qualities.append(quality)
            self._frame_owners.extend([number] * len(video))
            self._video_keys += video_key(video)
            self._video_owners.append(number)
        if hashes or video:
            self._ids += record.id().encode("utf-8")
        try:
            self._id_ends.append(len(self._ids))
        except OverflowError:
            raise ValueError("the ids of a hash list must fit in 4 GiB") from None
        index = self._name_of.get(list_name)
        self._list.append(self._name_index(list_name) if index is None else index)
        self._categories.append(self._category_index(record.category))
        self._counts = None

    def add_snapshot(
        self, snapshot: HashSnapshot, list_name: str, suppressed: Container[str] = ()
    ) -> None:
        """Every entry of ``snapshot`` as a record of ``list_name``, but those whose id is in
        ``suppressed``: a stored feed read back without a ``HashRecord`` an entry."""
        count = len(snapshot)
        kept = np.ones(count, dtype=bool)
        if suppressed:
            for number in range(count):
                kept[number] = snapshot.entry(number)[1] not in suppressed
        base = len(self._id_ends)
        numbers = (np.cumsum(kept, dtype=np.int64) - 1 + base).astype(np.uint32)
        for kind in KINDS:
            hashes, owners = snapshot.section(kind)
            of = np.frombuffer(owners, dtype=np.uint32)
            mask = kept[of]
            order = np.argsort(of[mask], kind="stable")
            self._hashes[kind] += np.frombuffer(hashes, f"S{SIZES[kind]}")[mask][order].tobytes()
            self._owners[kind].frombytes(numbers[of[mask][order]].tobytes())
        offsets = np.frombuffer(snapshot._id_offsets, dtype=np.uint32).astype(np.int64)
        starts, ends = offsets[:-1][kept], offsets[1:][kept]
        ids = _gather(np.frombuffer(snapshot._id_blob, dtype=np.uint8), starts, ends)
        id_ends = np.cumsum(ends - starts) + len(self._ids)
        if len(id_ends) and id_ends[-1] >= 2**32:
            raise ValueError("the ids of a hash list must fit in 4 GiB")
        self._ids += ids.tobytes()
        self._id_ends.frombytes(id_ends.astype(np.uint32).tobytes())
        self._list += bytes([self._name_index(list_name)]) * int(kept.sum())
        theirs = snapshot.category_numbers()
        if theirs is None:
            self._categories.frombytes(bytes(2 * int(kept.sum())))
        else:
            ours = np.array(
                [0] + [self._category_index(name) for name in snapshot.category_names],
                dtype=np.uint16,
            )
            self._categories.frombytes(ours[theirs[kept]].tobytes())
        if (video := snapshot.video()) is not None:
            frames, qualities, of = video
            mask = kept[of]
            rows = np.frombuffer(frames, dtype=np.uint8).reshape(-1, FRAME_SIZE)[mask]
            marks = np.frombuffer(qualities, dtype=np.uint8)[mask]
            self._frames += rows.tobytes()
            self._qualities += marks.tobytes()
            self._frame_owners.frombytes(numbers[of[mask]].tobytes())
            kept_of = of[mask]
            starts = np.flatnonzero(np.r_[True, kept_of[1:] != kept_of[:-1]])
            ends = [*starts[1:], len(kept_of)] if len(kept_of) else []
            for start, end in zip(starts[: len(ends)], ends, strict=True):
                self._video_keys += _key_of(rows[start:end], marks[start:end])
                self._video_owners.append(int(numbers[kept_of[start]]))
        self._counts = None

    def named(self, list_name: str) -> HashRecords:
        """These records, all in ``list_name`` (a feed is read before its list is known)."""
        if len(self._names) > 1:
            raise ValueError("records of several lists cannot be renamed to one")
        self._names = [list_name]
        self._name_of = {list_name: 0}
        return self

    def distinct(self) -> int:
        """Entries the snapshot will hold: records with a hash no earlier record listed."""
        return self._merged_counts()[0]

    def duplicates(self) -> int:
        """Hashes listed again by a later record (the snapshot keeps the first)."""
        return self._merged_counts()[1]

    def sections(self, meta: Mapping[str, object] | None = None) -> list[bytes]:
        """The snapshot's sections (see the module docstring), duplicates merged."""
        kept, merged = self._merge()
        numbers = np.cumsum(kept, dtype=np.int64) - 1  # each kept record's entry number
        sections: list[bytes] = []
        for kind in KINDS:
            hashes, owners = merged[kind]
            sections.append(hashes.tobytes())
            sections.append(numbers[owners].astype("<u4").tobytes())
        ends = np.frombuffer(self._id_ends, dtype=np.uint32).astype(np.int64)
        starts = np.concatenate([[0], ends])[:-1].astype(np.int64)
        ids = np.frombuffer(self._ids, dtype=np.uint8)
        lengths = ends[kept] - starts[kept]
        sections.append(np.concatenate([[0], np.cumsum(lengths)]).astype("<u4").tobytes())
        used = np.frombuffer(self._list, dtype=np.uint8)[kept]
        names = sorted(self._names[i] for i in np.unique(used))
        if len(names) > MAX_LISTS:
            raise ValueError(f"at most {MAX_LISTS} list names per snapshot, got {len(names)}")
        if len(names) > 1:
            position = np.zeros(len(self._names), dtype=np.uint8)
            for i, name in enumerate(self._names):
                if name in names:
                    position[i] = names.index(name)
            sections.append(position[used].tobytes())
        else:
            sections.append(b"")
        sections.append(_gather(ids, starts[kept], ends[kept]).tobytes())
        counts = {kind: len(merged[kind][0]) for kind in KINDS}
        document: dict[str, object] = {
            "lists": names,
            "meta": {**(meta or {}), "entries": int(kept.sum()), "hashes": counts},
        }
        numbers = np.frombuffer(self._categories, dtype=np.uint16)[kept]
        used = np.unique(numbers[numbers > 0])
        if len(used):
            categories = sorted(self._category_names[i - 1] for i in used)
            remap = np.zeros(len(self._category_names) + 1, dtype=np.uint16)
            for i in used:
                remap[i] = categories.index(self._category_names[i - 1]) + 1
            document["categories"] = categories
        frames = np.frombuffer(self._frame_owners, dtype=np.uint32).astype(np.int64)
        keep_frames = merged["vpdq"][frames] if len(frames) else np.zeros(0, dtype=bool)
        if keep_frames.any():
            meta_doc = document["meta"]
            assert isinstance(meta_doc, dict)
            meta_doc["videos"] = int(merged["vpdq"].sum())
            meta_doc["frames"] = int(keep_frames.sum())
        sections.append(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
        sections.append(remap[numbers].astype("<u2").tobytes() if len(used) else b"")
        if keep_frames.any():
            rows = np.frombuffer(self._frames, dtype=np.uint8).reshape(-1, FRAME_SIZE)
            sections.append(rows[keep_frames].tobytes())
            sections.append(np.frombuffer(self._qualities, dtype=np.uint8)[keep_frames].tobytes())
            entry_numbers = np.cumsum(kept, dtype=np.int64) - 1
            sections.append(entry_numbers[frames[keep_frames]].astype("<u4").tobytes())
        return sections

    def __len__(self) -> int:
        return len(self._id_ends)

    def __iter__(self) -> Iterator[HashRecord]:
        at = dict.fromkeys(KINDS, 0)
        frame = 0
        start = 0
        for number, end in enumerate(self._id_ends):
            hashes = []
            for kind in KINDS:
                owners, i, size = self._owners[kind], at[kind], SIZES[kind]
                while i < len(owners) and owners[i] == number:
                    hashes.append((kind, bytes(self._hashes[kind][i * size : (i + 1) * size])))
                    i += 1
                at[kind] = i
            video = []
            while frame < len(self._frame_owners) and self._frame_owners[frame] == number:
                value = bytes(self._frames[frame * FRAME_SIZE : (frame + 1) * FRAME_SIZE])
                video.append((value, self._qualities[frame]))
                frame += 1
            category = self._categories[number]
            yield HashRecord(
                tuple(hashes),
                self._ids[start:end].decode("utf-8"),
                self._category_names[category - 1] if category else None,
                tuple(video),
            )
            start = end

    def _category_index(self, category: str | None) -> int:
        if category is None:
            return 0
        index = self._category_of.get(category)
        if index is None:
            if len(self._category_names) >= MAX_CATEGORIES:
                raise ValueError(f"at most {MAX_CATEGORIES} categories per snapshot")
            self._category_names.append(category)
            index = self._category_of[category] = len(self._category_names)
        return index

    def _name_index(self, name: str) -> int:
        if not isinstance(name, str):
            raise TypeError("list name must be a str")
        index = self._name_of.get(name)
        if index is None:
            if len(self._names) >= MAX_LISTS:
                raise ValueError(f"at most {MAX_LISTS} list names per snapshot")
            index = self._name_of[name] = len(self._names)
            self._names.append(name)
        return index

    def _merge(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Which records keep a hash of their own, and per kind the sorted distinct hashes
        with the record that listed each first; under "vpdq", which records keep their
        video (the first to list each distinct one)."""
        kept = np.zeros(len(self), dtype=bool)
        merged = {}
        for kind in KINDS:
            hashes = np.frombuffer(self._hashes[kind], dtype=f"S{SIZES[kind]}")
            owners = np.frombuffer(self._owners[kind], dtype=np.uint32)
            order = np.lexsort((owners, hashes))  # by hash, then by record
            hashes, owners = hashes[order], owners[order]
            first = np.ones(len(hashes), dtype=bool)
            first[1:] = hashes[1:] != hashes[:-1]
            merged[kind] = hashes[first], owners[first]
            kept[owners[first]] = True
        keys = np.frombuffer(self._video_keys, dtype=f"S{FRAME_SIZE}")
        owners = np.frombuffer(self._video_owners, dtype=np.uint32)
        order = np.lexsort((owners, keys))
        keys, owners = keys[order], owners[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        videos = np.zeros(len(self), dtype=bool)
        videos[owners[first]] = True
        kept |= videos
        merged["vpdq"] = videos
        self._counts = (
            int(kept.sum()),
            sum(len(self._owners[k]) - len(merged[k][0]) for k in KINDS)
            + len(keys)
            - int(first.sum()),
        )
        return kept, merged

    def _merged_counts(self) -> tuple[int, int]:
        if self._counts is None:
            self._merge()
        assert self._counts is not None
        return self._counts


def _key_of(rows: np.ndarray, qualities: np.ndarray) -> bytes:
    """``video_key`` of frames packed as (n, 32) hash rows and n qualities."""
    joined = np.concatenate([rows, qualities.reshape(-1, 1)], axis=1)
    return hashlib.sha256(joined.tobytes()).digest()


def _gather(blob: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The bytes ``blob[starts[i]:ends[i]]`` for every i, end to end."""
    lengths = ends - starts
    if len(blob) and len(lengths) and int(lengths.sum()) == len(blob):
        return blob  # every slice, in order: the common case, no copy
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return blob[np.arange(int(lengths.sum()), dtype=np.int64) + shift]


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
        parts = [view[start:end] for start, end in pairwise(bounds)]
        id_offsets, list_index, id_blob, metadata, categories = parts[8:13]
        if len(id_offsets) % 4 or not id_offsets:
            raise SnapshotError("malformed hash snapshot: id offsets")
        count = len(id_offsets) // 4 - 1
        offsets = id_offsets.cast("I")
        steps = np.frombuffer(id_offsets, dtype=np.uint32)
        if offsets[0] != 0 or offsets[-1] != len(id_blob) or bool((steps[1:] < steps[:-1]).any()):
            raise SnapshotError("malformed hash snapshot: id offsets out of order")
        for i, kind in enumerate(KINDS):
            hashes, owners = parts[2 * i], parts[2 * i + 1]
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
        if len(parts) > 13:
            frames, qualities, owners = parts[13:16]
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
        i = KINDS.index(kind)
        start, middle, end = self._starts[2 * i : 2 * i + 3]
        view = memoryview(self._data)
        return view[start:middle], view[middle:end].cast("I")

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
        name = self._lists[self._list_index[number] if self._list_index else 0]
        raw = self._id_blob[self._id_offsets[number] : self._id_offsets[number + 1]]
        return name, str(raw, "utf-8", "replace")

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
        if self._categories is None or not (index := self._categories[number]):
            return None
        return self.category_names[index - 1]

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
