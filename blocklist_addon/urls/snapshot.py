"""The compiled blocklist: what the sync worker stores and every proxy holds in memory.

A snapshot holds digests only, never a plaintext URL or host: the first 8 bytes of the
SHA-256 of each canonical expression, the first 4 bytes of the SHA-256 of each listed
host (a prefilter: most requests are answered by "no entry on this host"), and per entry
a list name and an opaque entry id.

It is stored as one bytes object (integers unsigned, little-endian)::

    header         48 bytes: magic, format version (u32), the 8 section lengths (u32), pad
    digests        n x 8 bytes, sorted
    digest index   u32 x (2**b + 1): where each bucket of *digests* starts, as an offset
                   in the snapshot, then where the section ends; the bucket of a key is
                   its first 16 bits shifted right by 16 - b
    hosts          h x 4 bytes, distinct, sorted
    host index     u32 x (2**c + 1): the same for *hosts*
    id offsets     u32 x (n + 1) into *id blob*; empty when no entry has an id
    list index     n bytes, index into the list names; empty when there is one list
    id blob        UTF-8 entry ids, concatenated
    metadata       JSON: {"hostless": int, "lists": [name, ...], "meta": {...}}, and
                   "depths" when the builder knew them (below)
    checksum       SHA-256 of everything before it

``depths``: one byte per host key, in the order of *hosts*, base64-encoded: how many
directory expressions (``host/``, ``host/a/``, ...) a URL on that host needs looked up,
that is one more than the segments of the deepest directory entry listed there (0: none;
255: unknown or deeper, every directory is looked up). The matcher stops walking a path's
directories there, so that a 64 KiB path costs what the list can match, not its length. It
is in the metadata rather than a section of its own so that a proxy of the previous release
reads a snapshot that has it (and ignores it), and a snapshot without it (written before,
or by a builder that passes no depths) reads as "unknown" for every host: loading older
snapshots, and older proxies loading newer ones, keep working with the one format version.
It tells no more than the host keys do (which hosts have entries) beyond a directory depth.

Loading verifies the checksum and keeps the bytes object itself: a lookup is one
``bytes.find`` over one bucket of a few keys, so nothing is parsed or copied per entry and
a million entries in one list, without ids, cost 12.5 bytes each. There are at most 2**16
buckets, so lookups slow down gently beyond about a million keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import accumulate, pairwise
from operator import le
from typing import Any

try:  # the matcher's compiled lookups (_lookup.c, built with the package)
    from blocklist_addon.urls import _lookup
except ImportError:  # a source tree nobody built: the pure-Python lookups below serve
    _lookup = None

__all__ = [
    "DIGEST_SIZE",
    "FORMAT_VERSION",
    "HOST_KEY_SIZE",
    "MAGIC",
    "UNKNOWN_DEPTH",
    "Snapshot",
    "SnapshotError",
    "expression_digest",
    "frame",
    "host_key",
    "unframe",
]

DIGEST_SIZE = 8
HOST_KEY_SIZE = 4
_sha256 = hashlib.sha256
MAX_LISTS = 255
FORMAT_VERSION = 1
#: The depth byte of a host whose deepest directory entry is unknown (or this deep or
#: deeper): every directory of a URL there is looked up.
UNKNOWN_DEPTH = 255
#: PNG-style: the high byte and the newline expose 7-bit and text-mode transfers.
MAGIC = b"\x89BLSNAP\n"

_HEADER = struct.Struct("<8sI8I4x")
_DIGESTS = _HEADER.size  # where the digest section starts: a multiple of DIGEST_SIZE
_CHECKSUM_SIZE = 32
#: Up to 2**16 buckets, each of between half this and this many keys on average.
_BUCKET_LOAD = 8
_MAX_BUCKET_BITS = 16
_BIG_ENDIAN = sys.byteorder == "big"


def expression_digest(expression: str) -> bytes:
    """Key of one canonical expression: 64 bits keep a million entries collision-free."""
    return hashlib.sha256(expression.encode("utf-8")).digest()[:DIGEST_SIZE]


def host_key(host: str) -> bytes:
    """Key of one host for the prefilter, where a rare false hit only costs a full lookup."""
    return hashlib.sha256(host.encode("utf-8")).digest()[:HOST_KEY_SIZE]


def frame(header: struct.Struct, magic: bytes, version: int, sections: list[bytes]) -> bytes:
    """The layout of every snapshot kind (URL lists here, hash lists in ``hashes.snapshot``):
    a header of magic, version and each section's length, the sections, and a SHA-256 of all
    before it."""
    head = header.pack(magic, version, *map(len, sections))
    checksum = hashlib.sha256(head)
    for section in sections:
        checksum.update(section)
    return b"".join([head, *sections, checksum.digest()])


def unframe(
    data: bytes, header: struct.Struct, magic: bytes, version: int, name: str, title: str
) -> tuple[bytes, list[int]]:
    """``data`` as bytes and the lengths of its sections, once its magic, version, length
    and checksum hold; SnapshotError naming the ``name`` ("snapshot") otherwise (``title``,
    "a blocklist snapshot", for data that is none)."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < header.size + _CHECKSUM_SIZE:
        raise SnapshotError(f"truncated {name}: only {len(data)} bytes")
    found, found_version, *lengths = header.unpack_from(data)
    if found != magic:
        raise SnapshotError(f"not {title} (bad magic)")
    if found_version != version:
        raise SnapshotError(
            f"unsupported {name} format version {found_version} (this reads {version})"
        )
    expected = header.size + sum(lengths) + _CHECKSUM_SIZE
    if len(data) < expected:
        raise SnapshotError(f"truncated {name}: {len(data)} of {expected} bytes")
    if len(data) > expected:
        raise SnapshotError(f"{name} has {len(data) - expected} bytes after its end")
    if hashlib.sha256(memoryview(data)[:-_CHECKSUM_SIZE]).digest() != data[-_CHECKSUM_SIZE:]:
        raise SnapshotError(f"{name} checksum mismatch: the data is corrupted")
    return data, lengths


class SnapshotError(ValueError):
    """The bytes are not a complete, intact snapshot this version can read."""


class Snapshot:
    """An immutable snapshot: the serialized bytes and zero-copy views into them.

    Entries are numbered in sorted-digest order; ``find`` gives that number and ``entry``
    its list name and id. ``meta`` is informational: changing it changes nothing stored.
    """

    __slots__ = (
        "_count",
        "_data",
        "_depths",
        "_digest_index",
        "_digest_shift",
        "_host_index",
        "_host_shift",
        "_id_blob",
        "_id_offsets",
        "_list_index",
        "_lists",
        "checksum",
        "hostless",
        "meta",
    )

    _count: int
    _data: bytes
    _depths: bytes
    _digest_index: memoryview
    _digest_shift: int
    _host_index: memoryview
    _host_shift: int
    _id_blob: memoryview
    _id_offsets: memoryview
    _list_index: memoryview
    _lists: list[str]
    checksum: str
    hostless: int
    meta: dict[str, object]

    @classmethod
    def build(
        cls,
        entries: Iterable[
            tuple[bytes, bytes | None, str, str | None]
            | tuple[bytes, bytes | None, str, str | None, int | None]
        ],
        meta: Mapping[str, object] | None = None,
    ) -> Snapshot:
        """Compile (digest, host key or None, list name, entry id or None) tuples, each
        with an optional fifth item: the entry's directory depth (``depths`` above: 0 for
        a page or query entry, one more than its segments for a directory one), None
        when unknown.

        The first of several entries with one digest wins. An empty id counts as none:
        such an entry's id is its digest in hex, which stays the same across versions.
        A host's depth is the deepest of its entries' (unknown when one of them gives
        none); the snapshot records depths when any entry gives one.
        """
        kept: dict[bytes, tuple[str, str]] = {}
        hosts: dict[bytes, int] = {}
        given_depths = False
        hostless = 0
        for entry in entries:  # (a million a sync: written for CPython's speed)
            digest, host, name, entry_id = entry[0], entry[1], entry[2], entry[3]
            if digest in kept:  # the same expression: the same host and depth
                continue
            if type(digest) is not bytes or len(digest) != DIGEST_SIZE:
                raise ValueError(f"expression digest must be {DIGEST_SIZE} bytes: {digest!r}")
            depth = entry[4] if len(entry) > 4 else None
            if depth is None:
                deepest = UNKNOWN_DEPTH
            elif type(depth) is not int or depth < 0:
                raise ValueError(f"directory depth must be an int >= 0 or None: {depth!r}")
            else:
                given_depths = True
                deepest = depth if depth < UNKNOWN_DEPTH else UNKNOWN_DEPTH
            if host is None:
                hostless += 1
            elif type(host) is bytes and len(host) == HOST_KEY_SIZE:
                if hosts.get(host, -1) < deepest:
                    hosts[host] = deepest
            else:
                raise ValueError(f"host key must be {HOST_KEY_SIZE} bytes or None: {host!r}")
            if not isinstance(name, str) or not isinstance(entry_id, str | None):
                raise TypeError("list name must be a str and entry id a str or None")
            kept[digest] = (name, entry_id or "")

        counts = Counter(name for name, _ in kept.values())
        names = sorted(counts)
        if len(names) > MAX_LISTS:
            raise ValueError(f"at most {MAX_LISTS} list names per snapshot, got {len(names)}")
        digests = sorted(kept)
        rows = [kept[digest] for digest in digests]
        host_keys = sorted(hosts)
        digest_blob = b"".join(digests)
        digest_index = _bucket_index(digests, DIGEST_SIZE, _DIGESTS)
        hosts_start = _DIGESTS + len(digest_blob) + len(digest_index)

        list_index = b""
        if len(names) > 1:
            number = {name: i for i, name in enumerate(names)}
            list_index = bytes([number[name] for name, _ in rows])
        id_offsets = id_blob = b""
        if any(entry_id for _, entry_id in rows):
            encoded = [entry_id.encode("utf-8") for _, entry_id in rows]
            id_offsets = _pack_u32(accumulate(map(len, encoded), initial=0))
            id_blob = b"".join(encoded)

        document: dict[str, object] = {
            "hostless": hostless,
            "lists": names,
            "meta": {**(meta or {}), "entries": len(digests), "lists": dict(counts)},
        }
        if given_depths:
            depths = bytes(map(hosts.__getitem__, host_keys))
            document["depths"] = base64.b64encode(depths).decode("ascii")
        metadata = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        sections = [
            digest_blob,
            digest_index,
            b"".join(host_keys),
            _bucket_index(host_keys, HOST_KEY_SIZE, hosts_start),
            id_offsets,
            list_index,
            id_blob,
            metadata.encode("ascii"),
        ]
        return cls.from_bytes(frame(_HEADER, MAGIC, FORMAT_VERSION, sections))

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        """Load a serialized snapshot, refusing anything but an intact, readable one."""
        data, lengths = unframe(
            data, _HEADER, MAGIC, FORMAT_VERSION, "snapshot", "a blocklist snapshot"
        )
        snapshot = object.__new__(cls)
        snapshot._load(data, lengths)
        return snapshot

    def _load(self, data: bytes, lengths: list[int]) -> None:
        """Set up views over ``data``, checking what lookups rely on never to fail."""
        view = memoryview(data)
        bounds = list(accumulate(lengths, initial=_HEADER.size))
        digests, digest_index, hosts, host_index, id_offsets, list_index, id_blob, metadata = (
            view[start:end] for start, end in pairwise(bounds)
        )
        if len(digests) % DIGEST_SIZE or len(hosts) % HOST_KEY_SIZE:
            raise SnapshotError("malformed snapshot: key section of a partial key")
        count = len(digests) // DIGEST_SIZE
        self._data = data
        self._count = count
        self._digest_index, self._digest_shift = _load_index(digest_index, bounds[0:2])
        self._host_index, self._host_shift = _load_index(host_index, bounds[2:4])

        if id_offsets:
            if len(id_offsets) != 4 * (count + 1):
                raise SnapshotError("malformed snapshot: id offsets do not match the entries")
            id_offsets = _u32_view(id_offsets)
            if id_offsets[0] != 0 or id_offsets[-1] != len(id_blob):
                raise SnapshotError("malformed snapshot: id offsets do not match the ids")
        elif id_blob:
            raise SnapshotError("malformed snapshot: ids without offsets")
        self._id_offsets = id_offsets
        self._id_blob = id_blob

        self.hostless, self._lists, self.meta, self._depths = _load_metadata(metadata, count)
        if self._depths and len(self._depths) * HOST_KEY_SIZE != len(hosts):
            raise SnapshotError("malformed snapshot: host depths do not match the hosts")
        if list_index:
            if len(list_index) != count:
                raise SnapshotError("malformed snapshot: list index does not match the entries")
            if bytes(list_index).translate(None, bytes(range(len(self._lists)))):
                raise SnapshotError("malformed snapshot: list index out of range")
        elif count and len(self._lists) != 1:
            raise SnapshotError("malformed snapshot: list names do not match the entries")
        self._list_index = list_index
        self.checksum = data[-_CHECKSUM_SIZE:].hex()

    def to_bytes(self) -> bytes:
        """The bytes it was loaded from: a snapshot never changes, so this costs nothing."""
        return self._data

    def has_host(self, key: bytes) -> bool:
        """Whether an entry may be on this host: False is certain, True is not.

        True may also mean another host with the same 4-byte key, or (rarer still) the
        key spanning two neighbouring keys; either only costs the caller a full lookup.
        """
        if len(key) != HOST_KEY_SIZE:
            return False
        index = self._host_index
        bucket = (key[0] << 8 | key[1]) >> self._host_shift
        return self._data.find(key, index[bucket], index[bucket + 1]) >= 0

    def listed_hosts(self, hosts: Iterable[str]) -> list[str]:
        """The names of ``hosts`` whose key ``has_host`` holds, in order: one call for all
        the suffixes of a URL's host (a hostile URL holds tens of thousands of them)."""
        data = self._data
        index = self._host_index
        shift = self._host_shift
        listed = []
        for host in hosts:
            key = _sha256(host.encode("utf-8")).digest()
            bucket = (key[0] << 8 | key[1]) >> shift
            if data.find(key[:HOST_KEY_SIZE], index[bucket], index[bucket + 1]) >= 0:
                listed.append(host)
        return listed

    def host_depth(self, host: str) -> int:
        """How many directory expressions a URL on ``host`` needs looked up (``depths``
        above): UNKNOWN_DEPTH when the snapshot has no depths or no such host key."""
        if not self._depths:
            return UNKNOWN_DEPTH
        key = _sha256(host.encode("utf-8")).digest()[:HOST_KEY_SIZE]
        index = self._host_index
        bucket = (key[0] << 8 | key[1]) >> self._host_shift
        start, end = index[bucket], index[bucket + 1]
        first = index[0]
        pos = self._data.find(key, start, end)
        while pos >= 0 and (pos - first) % HOST_KEY_SIZE:  # found spanning two keys
            pos = self._data.find(key, pos + 1, end)
        return UNKNOWN_DEPTH if pos < 0 else self._depths[(pos - first) // HOST_KEY_SIZE]

    def compiled_lookup(self, floor: int) -> Any | None:
        """The compiled lookups over this snapshot's sections (``_lookup.Lookup``: what
        ``listed_hosts``, ``host_depth`` and ``find_first`` answer, for a whole host or a
        whole URL on a listed host in one call), walking at least ``floor`` directories;
        None when the extension is not built."""
        if _lookup is None:
            return None
        return _lookup.Lookup(
            self._data,
            self._digest_index,
            self._digest_shift,
            self._host_index,
            self._host_shift,
            self._depths,
            floor,
        )

    def find(self, digest: bytes) -> int | None:
        """The entry number of ``digest`` for ``entry``, or None when it is not listed."""
        if len(digest) != DIGEST_SIZE:
            return None
        index = self._digest_index
        bucket = (digest[0] << 8 | digest[1]) >> self._digest_shift
        end = index[bucket + 1]
        pos = self._data.find(digest, index[bucket], end)
        while pos % DIGEST_SIZE:  # not found (-1), or found spanning two digests
            if pos < 0:
                return None
            pos = self._data.find(digest, pos + 1, end)
        return (pos - _DIGESTS) // DIGEST_SIZE

    def find_first(self, digests: Iterable[bytes]) -> tuple[int, int] | None:
        """``find`` of each of ``digests`` in turn: the position of the first found and its
        entry number, or None. One call for all the expressions of a URL on a listed host
        (a path of thousands of directories is one digest each)."""
        data = self._data
        index = self._digest_index
        shift = self._digest_shift
        for at, digest in enumerate(digests):
            if len(digest) != DIGEST_SIZE:
                continue
            bucket = (digest[0] << 8 | digest[1]) >> shift
            end = index[bucket + 1]
            pos = data.find(digest, index[bucket], end)
            while pos % DIGEST_SIZE:  # not found (-1), or found spanning two digests
                if pos < 0:
                    break
                pos = data.find(digest, pos + 1, end)
            else:
                return at, (pos - _DIGESTS) // DIGEST_SIZE
        return None

    def entry(self, index: int) -> tuple[str, str]:
        if not 0 <= index < self._count:
            raise IndexError("snapshot entry index out of range")
        name = self._lists[self._list_index[index] if self._list_index else 0]
        entry_id = ""
        if self._id_offsets:
            encoded = self._id_blob[self._id_offsets[index] : self._id_offsets[index + 1]]
            entry_id = str(encoded, "utf-8", "replace")
        if not entry_id:
            start = _DIGESTS + index * DIGEST_SIZE
            entry_id = self._data[start : start + DIGEST_SIZE].hex()
        return name, entry_id

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<Snapshot entries={self._count} checksum={self.checksum[:16]}>"


def _pack_u32(values: Iterable[int]) -> bytes:
    packed = array("I", values)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _u32_view(view: memoryview) -> memoryview:
    """Zero-copy on little-endian machines; a byte-swapped copy elsewhere."""
    if not _BIG_ENDIAN:
        return view.cast("I")
    swapped = array("I", view.tobytes())
    swapped.byteswap()
    return memoryview(swapped)


def _bucket_index(keys: list[bytes], width: int, start: int) -> bytes:
    """Where each bucket of the sorted ``keys`` starts once they are written at ``start``.

    Offsets into the whole snapshot rather than the section save the lookups an addition.
    """
    bits = min(_MAX_BUCKET_BITS, (len(keys) // _BUCKET_LOAD).bit_length())
    shift = 16 - bits
    starts = [0] * ((1 << bits) + 1)
    starts[0] = start
    for key in keys:
        starts[((key[0] << 8 | key[1]) >> shift) + 1] += width
    return _pack_u32(accumulate(starts))


def _load_index(index: memoryview, section: list[int]) -> tuple[memoryview, int]:
    """Return the bucket table of a key section and the shift that gives a key's bucket.

    The table must be in order and span exactly its section, so that no crafted snapshot
    can make a lookup read outside it.
    """
    buckets = len(index) // 4 - 1
    bits = buckets.bit_length() - 1
    if len(index) % 4 or buckets < 1 or buckets != 1 << bits or bits > _MAX_BUCKET_BITS:
        raise SnapshotError("malformed snapshot: bucket index size")
    table = _u32_view(index)
    start, end = section
    if table[0] != start or table[-1] != end or not all(map(le, table, table[1:])):
        raise SnapshotError("malformed snapshot: bucket index out of order")
    return table, 16 - bits


def _load_metadata(data: memoryview, count: int) -> tuple[int, list[str], dict[str, object], bytes]:
    try:
        document = json.loads(str(data, "utf-8"))
    except (ValueError, RecursionError):
        raise SnapshotError("malformed snapshot: metadata is not JSON") from None
    if not isinstance(document, dict):
        raise SnapshotError("malformed snapshot: metadata is not an object")
    hostless, lists, meta = document.get("hostless"), document.get("lists"), document.get("meta")
    if type(hostless) is not int or not 0 <= hostless <= count:
        raise SnapshotError("malformed snapshot: bad hostless count")
    if not isinstance(lists, list) or not all(isinstance(name, str) for name in lists):
        raise SnapshotError("malformed snapshot: bad list names")
    if len(lists) > MAX_LISTS:
        raise SnapshotError("malformed snapshot: too many list names")
    if not isinstance(meta, dict):
        raise SnapshotError("malformed snapshot: bad meta")
    depths = document.get("depths", "")
    try:
        if not isinstance(depths, str):
            raise ValueError(depths)
        decoded = base64.b64decode(depths, validate=True)
    except (ValueError, binascii.Error):
        raise SnapshotError("malformed snapshot: bad host depths") from None
    return hostless, lists, meta, decoded
