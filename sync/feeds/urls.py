"""The URL feed formats: text, csv, json and sha256, each read into canonical digests.

Every entry is canonicalized exactly as requests are (``matcher.compile_entry``), so a
listed URL written differently in the feed still gives the digest a request computes.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator

from blocklist_addon.ops.progress import Progress
from blocklist_addon.urls.matcher import compile_entry, directory_depth, expression_of
from blocklist_addon.urls.snapshot import DIGEST_SIZE, expression_digest, host_key
from sync.feeds.reading import (
    FeedEntry,
    FeedError,
    Invalid,
    ParsedFeed,
    collect_records,
    csv_rows,
    line_count,
    numbered_lines,
    parse_entry_id,
)

__all__ = ["PARSERS"]

# Requests are canonicalized leniently (any string with a host matches what it can), but a
# listed entry must name a real host: an IP address, or a DNS name of two labels or more
# (IDNs are punycode by now). Otherwise a CSV or JSON feed read as "text" would give a
# "valid" list of garbage ("id,url,category" is host "id,url,category") that blocks nothing.
_HOSTNAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+[a-z][a-z0-9-]{0,62}")


_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


# Lists hold many pages per host: remember recent host keys (bounded, so that a list of a
# million distinct hosts costs little memory).
_host_key = functools.lru_cache(maxsize=4096)(host_key)


#: ... and keep one string per recent host, not one per entry.
_same_host = functools.lru_cache(maxsize=4096)(str)


def _url_entry(url: object, entry_id: str | None = None) -> FeedEntry | None:
    if not isinstance(url, str):
        return None
    c = compile_entry(url)
    if c is None or not (c.is_ip or _HOSTNAME.fullmatch(c.host)):
        return None
    host = _same_host(c.host)
    digest = expression_digest(expression_of(c))
    return FeedEntry(digest, _host_key(host), entry_id, host, directory_depth(c))


def _parse_text(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    url_entry = _url_entry
    records = ((n, url_entry(line)) for n, line in numbered_lines(text))
    return collect_records(records, "line", progress, line_count(text), max_entries)


def _parse_sha256(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    """One hex SHA-256 of a canonical expression per line; the snapshot keeps its first
    DIGEST_SIZE bytes, the same truncation ``expression_digest`` makes."""
    fullmatch = _SHA256.fullmatch
    return collect_records(
        (
            (n, FeedEntry(bytes.fromhex(line[: 2 * DIGEST_SIZE]), None, None))
            if fullmatch(line)
            else (n, None)
            for n, line in numbered_lines(text)
        ),
        "line",
        progress,
        line_count(text),
        max_entries,
    )


def _parse_csv(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    """A header row naming a ``url`` column (optionally ``id`` and ``category``; others
    are ignored), then one record per row (see ``csv_rows``)."""
    names, rows = csv_rows(text, lambda names: "url" in names, "url column")
    url_column = names.index("url")
    id_column = names.index("id") if "id" in names else None

    def records() -> Iterator[tuple[int, FeedEntry | None]]:
        for number, row in rows:
            try:
                url = row[url_column] if url_column < len(row) else None
                cell = row[id_column] if id_column is not None and id_column < len(row) else None
                yield number, _url_entry(url, parse_entry_id(cell))
            except Invalid:
                yield number, None

    return collect_records(records(), "line", progress, line_count(text), max_entries)


def _parse_json(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    """An array of objects with ``url`` and optional ``id`` and ``category``, or an object
    holding that array as ``entries``. Positions are 1-based array indexes."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg is one of the decoder's fixed phrases; e.doc (the feed) is never shown.
        raise FeedError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError):
        raise FeedError("not valid JSON: a number too long or nesting too deep") from None
    if isinstance(document, dict) and "entries" in document:
        document = document["entries"]
    if not isinstance(document, list):
        raise FeedError('JSON feed is not an array of entries (nor {"entries": [...]})')

    def records() -> Iterator[tuple[int, FeedEntry | None]]:
        for number, item in enumerate(document, 1):
            try:
                if not isinstance(item, dict):
                    raise Invalid
                yield number, _url_entry(item.get("url"), parse_entry_id(item.get("id")))
            except Invalid:
                yield number, None

    return collect_records(records(), "entry", progress, len(document), max_entries)


PARSERS: dict[str, Callable[[str, Progress, int | None], ParsedFeed]] = {
    "text": _parse_text,
    "csv": _parse_csv,
    "json": _parse_json,
    "sha256": _parse_sha256,
}
