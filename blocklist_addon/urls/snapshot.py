"""The compiled blocklist: what the sync worker stores and every proxy holds in memory.

A ``Snapshot`` is the stored form (``snapshot_format``: digests only, never a plaintext URL
or host) loaded, and the lookups the matcher makes in it; ``Snapshot.build`` writes one
(``snapshot_build``) and loads it. The format's names are importable from here too.

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
from collections.abc import Iterable, Mapping
from itertools import accumulate, pairwise
from operator import le
from typing import Any

from blocklist_addon.urls import snapshot_build
from blocklist_addon.urls.snapshot_build import Row
from blocklist_addon.urls.snapshot_format import (
    CHECKSUM_SIZE,
    DIGEST_SIZE,
    DIGESTS_START,
    FORMAT_VERSION,
    HEADER,
    HOST_KEY_SIZE,
    MAGIC,
    MAX_BUCKET_BITS,
    MAX_LISTS,
    UNKNOWN_DEPTH,
    SnapshotError,
    expression_digest,
    frame,
    host_key,
    u32_view,
    unframe,
)

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

_sha256 = hashlib.sha256


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
    def build(cls, entries: Iterable[Row], meta: Mapping[str, object] | None = None) -> Snapshot:
        """The snapshot of ``entries`` and ``meta`` (``snapshot_build.build``), loaded."""
        return cls.from_bytes(snapshot_build.build(entries, meta))

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        """Load a serialized snapshot, refusing anything but an intact, readable one."""
        data, lengths = unframe(
            data, HEADER, MAGIC, FORMAT_VERSION, "snapshot", "a blocklist snapshot"
        )
        snapshot = object.__new__(cls)
        snapshot._load(data, lengths)
        return snapshot

    def _load(self, data: bytes, lengths: list[int]) -> None:
        """Set up views over ``data``, checking what lookups rely on never to fail."""
        view = memoryview(data)
        bounds = list(accumulate(lengths, initial=HEADER.size))
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
            id_offsets = u32_view(id_offsets)
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
        self.checksum = data[-CHECKSUM_SIZE:].hex()

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
        key = host_key(host)
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
        return (pos - DIGESTS_START) // DIGEST_SIZE

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
                return at, (pos - DIGESTS_START) // DIGEST_SIZE
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
            start = DIGESTS_START + index * DIGEST_SIZE
            entry_id = self._data[start : start + DIGEST_SIZE].hex()
        return name, entry_id

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<Snapshot entries={self._count} checksum={self.checksum[:16]}>"


def _load_index(index: memoryview, section: list[int]) -> tuple[memoryview, int]:
    """Return the bucket table of a key section and the shift that gives a key's bucket.

    The table must be in order and span exactly its section, so that no crafted snapshot
    can make a lookup read outside it.
    """
    buckets = len(index) // 4 - 1
    bits = buckets.bit_length() - 1
    if len(index) % 4 or buckets < 1 or buckets != 1 << bits or bits > MAX_BUCKET_BITS:
        raise SnapshotError("malformed snapshot: bucket index size")
    table = u32_view(index)
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
