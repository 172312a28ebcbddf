"""One feed's last good entries, compiled to digests, as kept in the store between runs.

Keeping each feed's compiled entries lets a sync rebuild the active list when one feed is
unchanged (a 304 costs no download and no re-parse), when a suppression is added or lifted,
and when another feed fails (its last good entries stay in force). Like the snapshot, the
blob holds digests and ids only, never a URL or host.

Layout: magic, count (u32), then count fixed records (8-byte digest, 4-byte host key,
1 flag byte: 1 when the host is known, 1 depth byte), then the ids, NUL-separated, UTF-8
(an empty id is "no id").

The depth byte is the snapshot's (``Snapshot.build``'s fifth item, its ``depths``): the
deepest directory depth of the record's host among the feed's entries, not the entry's
own, so that the kept entries tell no more of an entry's shape than the snapshot's
per-host depths do; 255 is unknown (or deeper than 254), and a host with one entry of
unknown depth is unknown, as in the snapshot. A hostless record (sha256 feeds) says 255.
Built from these, a snapshot's host depths are those of the feed's entries; with some
entries suppressed, never shallower than theirs (a walk a little deeper than needed).

Blobs of the previous release (``BLFEED1``: no depth byte) are still read, every depth
unknown: their hosts walk every directory, as before. The worker reads a feed whose kept
entries are not ``FORMAT`` once more in full, to keep them with depths (``worker``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from blocklist_addon.urls.snapshot import DIGEST_SIZE, HOST_KEY_SIZE, UNKNOWN_DEPTH
from sync.feeds import FeedEntry

MAGIC = b"BLFEED2\n"
#: What the worker records in a feed's state when it keeps its entries in this format.
FORMAT = MAGIC.decode("ascii").strip()
#: The previous release's format: the same without the depth byte.
MAGIC_V1 = b"BLFEED1\n"
_COUNT = struct.Struct("<I")
_RECORD = struct.Struct(f"<{DIGEST_SIZE}s{HOST_KEY_SIZE}sBB")
_RECORD_V1 = struct.Struct(f"<{DIGEST_SIZE}s{HOST_KEY_SIZE}sB")
_NO_HOST = bytes(HOST_KEY_SIZE)


class CompiledError(ValueError):
    """The stored blob is not one this version wrote."""


def _deepest(entries: list[FeedEntry]) -> dict[bytes, int]:
    """Each host key's deepest depth byte among ``entries`` (hosts of pages only: absent)."""
    deepest: dict[bytes, int] = {}
    get = deepest.get
    for e in entries:
        depth, host = e.depth, e.host_key
        if depth != 0 and host is not None:
            byte = UNKNOWN_DEPTH if depth is None else min(depth, UNKNOWN_DEPTH)
            if byte > get(host, 0):
                deepest[host] = byte
    return deepest


def pack(entries: Iterable[FeedEntry]) -> bytes:
    entries = entries if isinstance(entries, list) else list(entries)
    depth_of = _deepest(entries).get
    record = _RECORD.pack
    records = bytearray()
    ids: list[str] = []
    for e in entries:
        host = e.host_key
        if host is None:
            records += record(e.digest, _NO_HOST, 0, UNKNOWN_DEPTH)
        else:
            records += record(e.digest, host, 1, depth_of(host, 0))
        ids.append((e.entry_id or "").replace("\0", ""))
    count = len(ids)
    return MAGIC + _COUNT.pack(count) + bytes(records) + "\0".join(ids).encode("utf-8")


def unpack(blob: bytes) -> Iterator[FeedEntry]:
    """The entries of a blob of this release or the previous one (depths None)."""
    if blob.startswith(MAGIC):
        size = _RECORD.size
    elif blob.startswith(MAGIC_V1):
        size = _RECORD_V1.size
    else:
        raise CompiledError("stored feed entries are not in a format this version reads")
    if len(blob) < len(MAGIC) + _COUNT.size:
        raise CompiledError("stored feed entries are truncated")
    (count,) = _COUNT.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _COUNT.size
    end = start + count * size
    if len(blob) < end:
        raise CompiledError("stored feed entries are truncated")
    ids = blob[end:].decode("utf-8", "replace").split("\0") if count else []
    if len(ids) != count:
        raise CompiledError("stored feed entries are inconsistent")
    view = memoryview(blob)[start:end]
    if size == _RECORD_V1.size:
        for (digest, host, has_host), entry_id in zip(
            _RECORD_V1.iter_unpack(view), ids, strict=True
        ):
            yield FeedEntry(digest, host if has_host else None, entry_id or None)
        return
    for (digest, host, has_host, depth), entry_id in zip(
        _RECORD.iter_unpack(view), ids, strict=True
    ):
        yield FeedEntry(
            digest,
            host if has_host else None,
            entry_id or None,
            None,
            None if depth == UNKNOWN_DEPTH else depth,
        )
