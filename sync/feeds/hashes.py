"""Reading an image hash list feed (``hashes-jsonl``, ``hashes-csv``) into records.

Pure functions of the body, like ``feeds.py`` (which checks it is text, refuses HTML error
pages and empty bodies, and calls these). Hashes are licensed and confidential: errors name
line numbers and counts only, never a value. The body is decoded a line at a time and each
record packed into ``HashRecords`` as it is read: a feed of millions costs little more
than its hashes and ids, never an object a record.

A record is one line: an optional ``id`` and ``category`` (the hotline's severity class,
text or a number, kept with the entry for block events) and one or more of ``md5``,
``sha1``, ``sha256``, ``pdq`` in hex (any case), or ``vpdq``: a video's frame hashes as
HMA and the vpdq tools write them (``hashes.vpdq.parse_vpdq``; in a CSV column, HMA's
JSON signal string). A record may carry ``vpdq`` alone. A record with a malformed hash
(wrong length, not hex), a malformed ``vpdq``, no hash at all, a bad id or a bad category
is invalid; it is counted, and ``validate`` refuses the feed when too many are (naming
their lines, never their content). A hash that an earlier record already listed counts as
a duplicate, and so does a video whose frames an earlier record listed: the first record
keeps it (``HashRecords.duplicates``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from blocklist_addon.hashes.kinds import KINDS
from blocklist_addon.hashes.records import (
    HashRecord,
    HashRecords,
    category_of,
    hashes_of,
    video_of,
)
from blocklist_addon.ops.progress import Progress
from sync.feeds.reading import (
    Invalid,
    ParsedFeed,
    collect_records,
    csv_rows,
    line_count,
    numbered_lines,
    parse_entry_id,
    text_stream,
)

__all__ = ["PARSERS"]


def _record(fields: dict[str, object]) -> HashRecord | None:
    try:
        entry_id = parse_entry_id(fields.get("id"))
        category = category_of(fields.get("category"))
        video = video_of(fields)
    except (Invalid, ValueError):
        return None
    hashes = hashes_of(fields, empty=True)
    if hashes is None or not (hashes or video):
        return None
    return HashRecord(hashes, entry_id, category, video)


def _parse_jsonl(data: bytes, progress: Progress, max_entries: int | None) -> ParsedFeed:
    """One JSON object a line; blank lines and ``#`` comments are skipped."""

    def records() -> Iterator[tuple[int, HashRecord | None]]:
        for number, line in numbered_lines(text_stream(data, "\n")):
            try:
                item = json.loads(line)
            except (ValueError, RecursionError):
                yield number, None
                continue
            yield number, _record(item) if isinstance(item, dict) else None

    return collect_records(
        records(), "line", progress, line_count(data), max_entries, HashRecords()
    )


def _parse_csv(data: bytes, progress: Progress, max_entries: int | None) -> ParsedFeed:
    """A header row naming at least one hash column (md5, sha1, sha256, pdq, vpdq;
    optionally id and category), then a record a row (the delimiter and comments as
    ``sync.feeds``' CSV format reads them; a vpdq cell is HMA's JSON signal string, quoted
    as CSV quotes a cell holding the delimiter)."""
    hashed = (*KINDS, "vpdq")
    names, rows = csv_rows(
        data, lambda names: bool(set(names) & set(hashed)), f"hash column ({', '.join(hashed)})"
    )
    columns = {name: i for i, name in enumerate(names) if name in (*hashed, "id", "category")}

    def records() -> Iterator[tuple[int, HashRecord | None]]:
        for number, row in rows:
            fields = {name: row[i] if i < len(row) else None for name, i in columns.items()}
            yield number, _record(fields)  # type: ignore[arg-type]

    return collect_records(
        records(), "line", progress, line_count(data), max_entries, HashRecords()
    )


PARSERS = {"hashes-jsonl": _parse_jsonl, "hashes-csv": _parse_csv}
