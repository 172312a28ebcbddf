"""One feed's last good entries, compiled to digests, as kept in the store between runs.

Keeping each feed's compiled entries lets a sync rebuild the active list when one feed is
unchanged (a 304 costs no download and no re-parse), when a suppression is added or lifted,
and when another feed fails (its last good entries stay in force). Like the snapshot, the
blob holds digests and ids only, never a URL or host.

Layout: magic, count (u32), then count fixed records (8-byte digest, 4-byte host key,
1 flag byte: 1 when the host is known), then the ids, NUL-separated, UTF-8 (an empty id is
"no id").
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from blocklist_addon.urls.snapshot import DIGEST_SIZE, HOST_KEY_SIZE
from sync.feeds import FeedEntry

MAGIC = b"BLFEED1\n"
_COUNT = struct.Struct("<I")
_RECORD = struct.Struct(f"<{DIGEST_SIZE}s{HOST_KEY_SIZE}sB")
_NO_HOST = bytes(HOST_KEY_SIZE)


class CompiledError(ValueError):
    """The stored blob is not one this version wrote."""


def pack(entries: Iterable[FeedEntry]) -> bytes:
    records = bytearray()
    ids: list[str] = []
    for e in entries:
        has_host = e.host_key is not None
        records += _RECORD.pack(e.digest, e.host_key if has_host else _NO_HOST, has_host)
        ids.append((e.entry_id or "").replace("\0", ""))
    count = len(ids)
    return MAGIC + _COUNT.pack(count) + bytes(records) + "\0".join(ids).encode("utf-8")


def unpack(blob: bytes) -> Iterator[FeedEntry]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _COUNT.size:
        raise CompiledError("stored feed entries are not in a format this version reads")
    (count,) = _COUNT.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _COUNT.size
    end = start + count * _RECORD.size
    if len(blob) < end:
        raise CompiledError("stored feed entries are truncated")
    ids = blob[end:].decode("utf-8", "replace").split("\0") if count else []
    if len(ids) != count:
        raise CompiledError("stored feed entries are inconsistent")
    records = _RECORD.iter_unpack(memoryview(blob)[start:end])
    for (digest, host, has_host), entry_id in zip(records, ids, strict=True):
        yield FeedEntry(digest, host if has_host else None, entry_id or None)
