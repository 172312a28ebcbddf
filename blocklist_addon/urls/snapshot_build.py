"""Writing a snapshot: the compiled list's entries laid out as ``snapshot_format`` describes.

The sync worker writes one a sync, ``Blocklist.from_entries`` one for a list made in memory,
both through ``Snapshot.build``, which loads what this writes as any snapshot is loaded.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import accumulate

from blocklist_addon.urls.snapshot_format import (
    BUCKET_LOAD,
    DIGEST_SIZE,
    DIGESTS_START,
    FORMAT_VERSION,
    HEADER,
    HOST_KEY_SIZE,
    MAGIC,
    MAX_BUCKET_BITS,
    MAX_LISTS,
    UNKNOWN_DEPTH,
    frame,
    pack_u32,
)

__all__ = ["Row", "build"]

#: One compiled entry: (digest, host key or None, list name, entry id or None), and
#: optionally its directory depth or None.
Row = (
    tuple[bytes, bytes | None, str, str | None]
    | tuple[bytes, bytes | None, str, str | None, int | None]
)


def build(entries: Iterable[Row], meta: Mapping[str, object] | None = None) -> bytes:
    """The snapshot of ``entries`` (``Row``: the fifth item, the entry's directory depth,
    is 0 for a page or query entry, one more than its segments for a directory one, None
    when unknown; ``snapshot_format`` on ``depths``) and ``meta``, as bytes.

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
    digest_index = _bucket_index(digests, DIGEST_SIZE, DIGESTS_START)
    hosts_start = DIGESTS_START + len(digest_blob) + len(digest_index)

    list_index = b""
    if len(names) > 1:
        number = {name: i for i, name in enumerate(names)}
        list_index = bytes([number[name] for name, _ in rows])
    id_offsets = id_blob = b""
    if any(entry_id for _, entry_id in rows):
        encoded = [entry_id.encode("utf-8") for _, entry_id in rows]
        id_offsets = pack_u32(accumulate(map(len, encoded), initial=0))
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
    return frame(HEADER, MAGIC, FORMAT_VERSION, sections)


def _bucket_index(keys: list[bytes], width: int, start: int) -> bytes:
    """Where each bucket of the sorted ``keys`` starts once they are written at ``start``.

    Offsets into the whole snapshot rather than the section save the lookups an addition.
    """
    bits = min(MAX_BUCKET_BITS, (len(keys) // BUCKET_LOAD).bit_length())
    shift = 16 - bits
    starts = [0] * ((1 << bits) + 1)
    starts[0] = start
    for key in keys:
        starts[((key[0] << 8 | key[1]) >> shift) + 1] += width
    return pack_u32(accumulate(starts))
