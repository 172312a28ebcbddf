"""Reading a downloaded feed into digests, and deciding whether it may replace the list.

Pure functions of the bytes: no I/O, no logging. The list is licensed and confidential,
so nothing here ever puts feed text into an exception or a message: errors name positions
(line numbers, array indexes) and counts only, which is all an operator needs to find the
problem in their own copy of the feed.

One reader a format family, each building on ``reading`` (the shared checks and
collection), never on each other: ``urls`` (text, csv, json, sha256) and ``hashes``
(hashes-jsonl, hashes-csv, image hash lists).
"""

from __future__ import annotations

from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from sync.feeds.hashes import PARSERS as HASH_PARSERS
from sync.feeds.reading import (
    HTML_MARKERS,
    HTML_SNIFF,
    PLURAL,
    PROGRESS_EVERY,
    FeedEntry,
    FeedError,
    ParsedFeed,
    check_text,
    decode_text,
    gc_paused,
    percent,
)
from sync.feeds.urls import PARSERS as URL_PARSERS

__all__ = [
    "FORMATS",
    "HASH_FORMATS",
    "PROGRESS_EVERY",
    "URL_FORMATS",
    "FeedEntry",
    "FeedError",
    "ParsedFeed",
    "kind_of",
    "parse_feed",
    "validate",
]


URL_FORMATS = ("text", "csv", "json", "sha256")
#: Image hash lists (``sync/feeds/hashes.py``): synced into the store's "hashes" namespace.
HASH_FORMATS = ("hashes-jsonl", "hashes-csv")
FORMATS = URL_FORMATS + HASH_FORMATS


def parse_feed(
    data: bytes,
    fmt: str,
    *,
    progress: Progress = NO_PROGRESS,
    max_entries: int | None = None,
) -> ParsedFeed:
    """Read ``data`` as a feed of format ``fmt`` (one of FORMATS).

    Raises FeedError when the body is not a list at all (empty, an HTML page, binary,
    broken JSON, a CSV without a url column), or once it has given more than
    ``max_entries`` valid records (reading stops there: memory stays bounded); records
    that are merely invalid are counted in the result instead. ``progress`` gets a
    "parsing" phase counting lines (JSON: entries), advanced every PROGRESS_EVERY records.
    Hash feeds are read from the bytes a line at a time, never decoded whole.
    """
    if fmt not in FORMATS:
        raise FeedError(f"unknown feed format {fmt!r} (one of {', '.join(FORMATS)})")
    progress.phase("parsing")
    body: str | bytes
    if fmt in HASH_FORMATS:
        check_text(data)  # an empty body has no record: "feed is empty" below
        body = data
        head = str(data[: 4 * HTML_SNIFF + 3], "utf-8", "ignore").removeprefix("\ufeff")
    else:
        body = head = decode_text(data)
        if not body.strip():
            raise FeedError("feed is empty")
    head = head[:HTML_SNIFF].lower()
    if any(marker in head for marker in HTML_MARKERS):
        raise FeedError("feed looks like an HTML page, not a text list")
    if head.lstrip().startswith("<?xml"):  # an object store's or proxy's error document
        raise FeedError("feed looks like an XML document, not a list")
    parsers = HASH_PARSERS if fmt in HASH_FORMATS else URL_PARSERS
    with gc_paused():
        feed = parsers[fmt](body, progress, max_entries)  # type: ignore[arg-type]
    if feed.records == 0:
        raise FeedError("feed is empty")
    return feed


def kind_of(fmt: str) -> str:
    """The kind of list a feed format gives: "urls", or "hashes" (an image hash list)."""
    return "hashes" if fmt in HASH_FORMATS else "urls"


def validate(
    feed: ParsedFeed,
    *,
    min_entries: int = 1,
    max_invalid_ratio: float = 0.01,
    previous_entries: int | None = None,
    max_shrink: float = 0.5,
    force: bool = False,
) -> None:
    """Raise FeedError unless ``feed`` may replace the active list.

    Entries are counted as the snapshot stores them (``ParsedFeed.distinct``). ``force``
    only overrides the shrink check: a feed that is mostly invalid is never forced in.
    """
    entries = feed.distinct()
    if entries < min_entries:
        raise FeedError(
            f"only {entries} valid entries in {feed.records} records, "
            f"under the minimum of {min_entries}"
        )
    if feed.records and feed.invalid_count / feed.records > max_invalid_ratio:
        shown = ", ".join(map(str, feed.invalid))
        if feed.invalid_count > len(feed.invalid):
            shown += ", ..."
        raise FeedError(
            f"{feed.invalid_count} of {feed.records} records invalid "
            f"({PLURAL.get(feed.position, feed.position)} {shown}), "
            f"over the {percent(max_invalid_ratio)} limit"
        )
    if previous_entries and not force:
        shrink = (previous_entries - entries) / previous_entries
        if shrink > max_shrink:
            raise FeedError(
                f"shrank from {previous_entries} to {entries} entries ({shrink:.0%}), "
                f"over the {percent(max_shrink)} limit; use --force if intended"
            )
