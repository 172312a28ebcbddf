"""Reading a downloaded feed into digests, and deciding whether it may replace the list.

Pure functions of the bytes: no I/O, no logging. The list is licensed and confidential,
so nothing here ever puts feed text into an exception or a message: errors name positions
(line numbers, array indexes) and counts only, which is all an operator needs to find the
problem in their own copy of the feed.

Every entry is canonicalized exactly as requests are (``matcher.compile_entry``), so a
listed URL written differently in the feed still gives the digest a request computes.
"""

from __future__ import annotations

import csv
import functools
import gc
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from blocklist_addon.hashes.snapshot import HashRecords
from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from blocklist_addon.urls.matcher import compile_entry, expression_of
from blocklist_addon.urls.snapshot import DIGEST_SIZE, expression_digest, host_key

__all__ = [
    "FORMATS",
    "HASH_FORMATS",
    "FeedEntry",
    "FeedError",
    "ParsedFeed",
    "kind_of",
    "parse_feed",
    "validate",
]

URL_FORMATS = ("text", "csv", "json", "sha256")
#: Image hash lists (``sync/hashfeeds.py``): synced into the store's "hashes" namespace.
HASH_FORMATS = ("hashes-jsonl", "hashes-csv")
FORMATS = URL_FORMATS + HASH_FORMATS

#: How many invalid positions a ParsedFeed keeps for the error message.
MAX_INVALID_SHOWN = 20
#: Entry ids are short opaque tokens; anything longer is a sign of a wrong column.
MAX_ID_LENGTH = 256

# Control bytes no text list contains (tab, LF, VT, FF and CR are allowed).
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
# A 200 OK error page is the most common "feed" that is not a feed; look near the start.
_HTML_SNIFF = 1024
_HTML_MARKERS = ("<!doctype html", "<html", "<head", "<body")
# Requests are canonicalized leniently (any string with a host matches what it can), but a
# listed entry must name a real host: an IP address, or a DNS name of two labels or more
# (IDNs are punycode by now). Otherwise a CSV or JSON feed read as "text" would give a
# "valid" list of garbage ("id,url,category" is host "id,url,category") that blocks nothing.
_HOSTNAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+[a-z][a-z0-9-]{0,62}")
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
_CSV_DELIMITERS = (",", "\t", ";", "|")
_PLURAL = {"line": "lines", "entry": "entries"}
#: Parsing reports progress every this many records.
PROGRESS_EVERY = 16_384
# A body is checked as UTF-8 this many bytes (and the rest of a line) at a time.
_UTF8_CHUNK = 1 << 20
# Lists hold many pages per host: remember recent host keys (bounded, so that a list of a
# million distinct hosts costs little memory).
_host_key = functools.lru_cache(maxsize=4096)(host_key)
#: ... and keep one string per recent host, not one per entry.
_same_host = functools.lru_cache(maxsize=4096)(str)


class FeedError(Exception):
    """Why a feed cannot be used, in one line for cron mail.

    Never holds feed content (the list is confidential): positions and counts only.
    """


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One valid entry as the snapshot stores it: digests, never text."""

    digest: bytes  # expression_digest of the canonical expression (DIGEST_SIZE bytes)
    host_key: bytes | None  # host_key of the canonical host; None for sha256 feeds
    entry_id: str | None  # the feed's id column or field, else None
    #: The canonical host (an IP literal as written in URLs), for diversion: in memory only,
    #: stored encrypted or not at all (``compiled`` never keeps it). None when unknown.
    host: str | None = field(default=None, repr=False, compare=False)


@dataclass
class ParsedFeed:
    """A feed read record by record; invalid records are counted, not fatal here, so that
    ``validate`` can apply the operator's tolerance to them."""

    entries: list[FeedEntry] | HashRecords  # HashRecords for the hash formats
    records: int  # data records seen (not blank lines, comments or a CSV header)
    invalid: list[int]  # positions of the first MAX_INVALID_SHOWN invalid records
    invalid_count: int
    #: What ``invalid`` counts: "line" (text, sha256, csv) or "entry" (json, 1-based index).
    position: str = "line"

    def distinct(self) -> int:
        """Entries as the snapshot will count them: distinct digests (URLs), records with a
        hash of their own (hashes)."""
        if isinstance(self.entries, HashRecords):
            return self.entries.distinct()
        return len({entry.digest for entry in self.entries})


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
        _check_text(data)  # an empty body has no record: "feed is empty" below
        body = data
        head = str(data[: 4 * _HTML_SNIFF + 3], "utf-8", "ignore").removeprefix("\ufeff")
    else:
        body = head = _decode(data)
        if not body.strip():
            raise FeedError("feed is empty")
    head = head[:_HTML_SNIFF].lower()
    if any(marker in head for marker in _HTML_MARKERS):
        raise FeedError("feed looks like an HTML page, not a text list")
    if head.lstrip().startswith("<?xml"):  # an object store's or proxy's error document
        raise FeedError("feed looks like an XML document, not a list")
    if fmt in HASH_FORMATS:
        from sync.hashfeeds import PARSERS as parsers  # it builds on this module
    else:
        parsers = _PARSERS
    with _gc_paused():
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
            f"({_PLURAL.get(feed.position, feed.position)} {shown}), "
            f"over the {_percent(max_invalid_ratio)} limit"
        )
    if previous_entries and not force:
        shrink = (previous_entries - entries) / previous_entries
        if shrink > max_shrink:
            raise FeedError(
                f"shrank from {previous_entries} to {entries} entries ({shrink:.0%}), "
                f"over the {_percent(max_shrink)} limit; use --force if intended"
            )


# -- decoding ----------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 text without a BOM, or FeedError saying why the body is not text."""
    _check_text(data)
    return data.decode("utf-8").removeprefix("\ufeff")


def _check_text(data: bytes) -> None:
    """FeedError unless ``data`` is UTF-8 text, checked a chunk of lines at a time so that
    the body is never decoded whole (a hash feed is then read a line at a time)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FeedError("not text: UTF-16 (the feed must be UTF-8)")
    if data.startswith(b"\x1f\x8b"):
        raise FeedError("not text: gzip-compressed data")
    binary = _BINARY.search(data)
    if binary is not None:
        what = "a NUL byte" if binary.group() == b"\0" else "a binary control byte"
        raise FeedError(f"not text: {what} at line {data.count(b'\n', 0, binary.start()) + 1}")
    view, start = memoryview(data), 0
    while start < len(data):
        end = data.find(b"\n", start + _UTF8_CHUNK) + 1 or len(data)  # no character spans \n
        try:
            str(view[start:end], "utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, start + e.start) + 1
            raise FeedError(f"not text: invalid UTF-8 at line {line}") from None
        start = end


def text_stream(data: bytes, newline: str) -> io.TextIOWrapper:
    r"""The body as text without its BOM, decoded as it is read: ``newline`` as ``open``'s
    ("\n": lines end at LF only; "": universal newlines, untranslated, as ``csv`` wants)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=newline)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a million entries are created.

    Entries form no cycles, but each allocation of a tracked object counts towards the
    next collection, and the full collections that follow rescan every entry made so far:
    about a quarter of the parse time at 1,000,000 entries. The pause is process-wide,
    which suits the one-shot sync worker; nothing here creates cycles to collect later.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


# -- records ---------------------------------------------------------------------------


class _Invalid(Exception):
    """A record that cannot become an entry (raised and caught within this module)."""


def _collect(
    records: Iterable[tuple[int, Any]],
    position: str,
    progress: Progress,
    total: int,
    max_entries: int | None = None,
    entries: Any = None,
) -> ParsedFeed:
    """Count (position, entry or None for an invalid record) pairs into a ParsedFeed,
    reporting the position out of ``total`` lines (or entries) to ``progress``. Entries
    are appended to ``entries`` (a new list by default); FeedError past ``max_entries``."""
    if entries is None:
        entries = []
    invalid: list[int] = []
    count = invalid_count = reported = 0
    append = entries.append
    limit = math.inf if max_entries is None else max_entries
    progress.phase("parsing", total=total, unit=_PLURAL[position])
    for number, entry in records:
        count += 1
        if entry is not None:
            if count - invalid_count > limit:
                raise FeedError(
                    f"more than {max_entries:,} entries ({position} {number}), "
                    "over the max_entries limit"
                )
            append(entry)
        else:
            invalid_count += 1
            if len(invalid) < MAX_INVALID_SHOWN:
                invalid.append(number)
        if not count % PROGRESS_EVERY:
            progress.advance(number - reported)
            reported = number
    progress.advance(max(total - reported, 0))
    return ParsedFeed(entries, count, invalid, invalid_count, position)


def _line_count(body: str | bytes) -> int:
    if isinstance(body, bytes):
        return body.count(b"\n") + (not body.endswith(b"\n"))
    return body.count("\n") + (not body.endswith("\n"))


def _url_entry(url: object, entry_id: str | None = None) -> FeedEntry | None:
    if not isinstance(url, str):
        return None
    c = compile_entry(url)
    if c is None or not (c.is_ip or _HOSTNAME.fullmatch(c.host)):
        return None
    host = _same_host(c.host)
    return FeedEntry(expression_digest(expression_of(c)), _host_key(host), entry_id, host)


def _entry_id(value: object) -> str | None:
    """An id as the snapshot stores it: a non-empty string, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid
        return str(int(value)) if value.is_integer() else str(value)
    if not isinstance(value, str):
        raise _Invalid
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid
    try:
        value.encode("utf-8")  # a JSON string may hold a lone surrogate
    except UnicodeEncodeError:
        raise _Invalid from None
    return value or None


# -- line formats (text, sha256) ---------------------------------------------------------


def _lines(text: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of every data line: blank lines and comments skipped.

    Lines end at LF only (a CR before it is stripped), so that the numbers match what an
    editor shows even when a line holds a stray form feed or Unicode line separator.
    ``text`` is the text, or its lines split so (by ``text_stream(data, newline="\\n")``).
    """
    for number, line in enumerate(text.split("\n") if isinstance(text, str) else text, 1):
        line = line.strip()
        if line and line[0] != "#":
            yield number, line


def _parse_text(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    url_entry = _url_entry
    records = ((n, url_entry(line)) for n, line in _lines(text))
    return _collect(records, "line", progress, _line_count(text), max_entries)


def _parse_sha256(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    """One hex SHA-256 of a canonical expression per line; the snapshot keeps its first
    DIGEST_SIZE bytes, the same truncation ``expression_digest`` makes."""
    fullmatch = _SHA256.fullmatch
    return _collect(
        (
            (n, FeedEntry(bytes.fromhex(line[: 2 * DIGEST_SIZE]), None, None))
            if fullmatch(line)
            else (n, None)
            for n, line in _lines(text)
        ),
        "line",
        progress,
        _line_count(text),
        max_entries,
    )


# -- csv ---------------------------------------------------------------------------------


def _parse_csv(text: str, progress: Progress, max_entries: int | None = None) -> ParsedFeed:
    """A header row naming a ``url`` column (optionally ``id`` and ``category``; others
    are ignored), then one record per row (see ``_csv_rows``)."""
    names, rows = _csv_rows(text, lambda names: "url" in names, "url column")
    url_column = names.index("url")
    id_column = names.index("id") if "id" in names else None

    def records() -> Iterator[tuple[int, FeedEntry | None]]:
        for number, row in rows:
            try:
                url = row[url_column] if url_column < len(row) else None
                cell = row[id_column] if id_column is not None and id_column < len(row) else None
                yield number, _url_entry(url, _entry_id(cell))
            except _Invalid:
                yield number, None

    return _collect(records(), "line", progress, _line_count(text), max_entries)


def _csv_rows(
    text: str | bytes, fits: Callable[[list[str]], bool], missing: str
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """A CSV feed's header (its names lower-cased) and its rows as (line number, cells).

    The header is the first row that is not a ``#`` comment; the delimiter is whichever of
    , TAB ; | makes ``fits(names)`` true, because spreadsheet exports in some locales use ;
    or TAB (FeedError saying the header has no ``missing`` otherwise). Blank rows and rows
    whose first cell starts with ``#`` are comments, as in the line formats.
    """
    stream = text_stream(text, "") if isinstance(text, bytes) else io.StringIO(text, newline="")
    header_line = 0
    for line in stream:
        header_line += 1
        if line.strip() and not line.lstrip().startswith("#"):
            break
    else:
        raise FeedError("feed is empty")
    for delimiter in _CSV_DELIMITERS:
        try:
            names = [cell.strip().lower() for cell in next(csv.reader([line], delimiter=delimiter))]
        except (csv.Error, StopIteration):
            continue
        if fits(names):
            break
    else:
        raise FeedError(f"CSV header (line {header_line}) has no {missing}")
    reader = csv.reader(stream, delimiter=delimiter)

    def rows() -> Iterator[tuple[int, list[str]]]:
        start = header_line + 1  # where the next row starts, for rows spanning lines
        try:
            for row in reader:
                number, start = start, header_line + reader.line_num + 1
                if not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                yield number, row
        except csv.Error:
            raise FeedError(f"malformed CSV at line {start}") from None

    return names, rows()


# -- json --------------------------------------------------------------------------------


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
                    raise _Invalid
                yield number, _url_entry(item.get("url"), _entry_id(item.get("id")))
            except _Invalid:
                yield number, None

    return _collect(records(), "entry", progress, len(document), max_entries)


_PARSERS: dict[str, Callable[[str, Progress, int | None], ParsedFeed]] = {
    "text": _parse_text,
    "csv": _parse_csv,
    "json": _parse_json,
    "sha256": _parse_sha256,
}
