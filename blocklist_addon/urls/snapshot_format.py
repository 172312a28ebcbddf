"""The stored form of the compiled blocklist: its byte layout, its keys, and the framing every
snapshot kind shares (``frame``/``unframe``; the hash lists' ``hashes.snapshot`` frames its own
sections with it). ``snapshot_build`` writes this layout, ``snapshot`` reads it.

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
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Iterable

__all__ = [
    "BUCKET_LOAD",
    "CHECKSUM_SIZE",
    "DIGESTS_START",
    "DIGEST_SIZE",
    "FORMAT_VERSION",
    "HEADER",
    "HOST_KEY_SIZE",
    "MAGIC",
    "MAX_BUCKET_BITS",
    "MAX_LISTS",
    "UNKNOWN_DEPTH",
    "SnapshotError",
    "expression_digest",
    "frame",
    "host_key",
    "pack_u32",
    "u32_view",
    "unframe",
]

DIGEST_SIZE = 8
HOST_KEY_SIZE = 4
#: The list index holds one byte an entry.
MAX_LISTS = 255
FORMAT_VERSION = 1
#: The depth byte of a host whose deepest directory entry is unknown (or this deep or
#: deeper): every directory of a URL there is looked up.
UNKNOWN_DEPTH = 255
#: PNG-style: the high byte and the newline expose 7-bit and text-mode transfers.
MAGIC = b"\x89BLSNAP\n"

#: Magic, format version, the 8 section lengths, pad: 48 bytes.
HEADER = struct.Struct("<8sI8I4x")
#: Where the digest section starts: a multiple of DIGEST_SIZE.
DIGESTS_START = HEADER.size
CHECKSUM_SIZE = 32
#: Up to 2**16 buckets, each of between half this and this many keys on average.
BUCKET_LOAD = 8
MAX_BUCKET_BITS = 16
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
    if len(data) < header.size + CHECKSUM_SIZE:
        raise SnapshotError(f"truncated {name}: only {len(data)} bytes")
    found, found_version, *lengths = header.unpack_from(data)
    if found != magic:
        raise SnapshotError(f"not {title} (bad magic)")
    if found_version != version:
        raise SnapshotError(
            f"unsupported {name} format version {found_version} (this reads {version})"
        )
    expected = header.size + sum(lengths) + CHECKSUM_SIZE
    if len(data) < expected:
        raise SnapshotError(f"truncated {name}: {len(data)} of {expected} bytes")
    if len(data) > expected:
        raise SnapshotError(f"{name} has {len(data) - expected} bytes after its end")
    if hashlib.sha256(memoryview(data)[:-CHECKSUM_SIZE]).digest() != data[-CHECKSUM_SIZE:]:
        raise SnapshotError(f"{name} checksum mismatch: the data is corrupted")
    return data, lengths


class SnapshotError(ValueError):
    """The bytes are not a complete, intact snapshot this version can read."""


def pack_u32(values: Iterable[int]) -> bytes:
    """``values`` as a section of u32, little-endian on any machine."""
    packed = array("I", values)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def u32_view(view: memoryview) -> memoryview:
    """Zero-copy on little-endian machines; a byte-swapped copy elsewhere."""
    if not _BIG_ENDIAN:
        return view.cast("I")
    swapped = array("I", view.tobytes())
    swapped.byteswap()
    return memoryview(swapped)
