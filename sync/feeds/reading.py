"""What every feed reader shares: the checks on a body, lines and CSV rows read without
copying it, ids, and the collection of records into a ParsedFeed with invalid positions.

Pure functions of the bytes; nothing here puts feed text into an exception or a message
(errors name positions and counts only): the list is confidential.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from blocklist_addon.hashes.records import HashRecords
from blocklist_addon.ops.progress import Progress

__all__ = [
    "HTML_MARKERS",
    "HTML_SNIFF",
    "MAX_ID_LENGTH",
    "MAX_INVALID_SHOWN",
    "PLURAL",
    "PROGRESS_EVERY",
    "FeedEntry",
    "FeedError",
    "Invalid",
    "ParsedFeed",
    "check_text",
    "collect_records",
    "csv_rows",
    "decode_text",
    "gc_paused",
    "line_count",
    "numbered_lines",
    "parse_entry_id",
    "percent",
    "text_stream",
]

#: How many invalid positions a ParsedFeed keeps for the error message.
MAX_INVALID_SHOWN = 20


#: Entry ids are short opaque tokens; anything longer is a sign of a wrong column.
MAX_ID_LENGTH = 256


# Control bytes no text list contains (tab, LF, VT, FF and CR are allowed).
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")


# A 200 OK error page is the most common "feed" that is not a feed; look near the start.
HTML_SNIFF = 1024


HTML_MARKERS = ("<!doctype html", "<html", "<head", "<body")


_CSV_DELIMITERS = (",", "\t", ";", "|")


PLURAL = {"line": "lines", "entry": "entries"}


#: Parsing reports progress every this many records.
PROGRESS_EVERY = 16_384


# A body is checked as UTF-8 this many bytes (and the rest of a line) at a time.
_UTF8_CHUNK = 1 << 20


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
    #: The directory depth ``Snapshot.build`` takes (``matcher.directory_depth``: 0 for a
    #: page or query, one more than its segments for a directory); None when unknown (sha256
    #: feeds, entries kept by a release before depths). A function of the expression, so
    #: not compared; read back from ``compiled`` it is its host's deepest in the feed.
    depth: int | None = field(default=None, compare=False)


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


def decode_text(data: bytes) -> str:
    """UTF-8 text without a BOM, or FeedError saying why the body is not text."""
    check_text(data)
    return data.decode("utf-8").removeprefix("\ufeff")


def check_text(data: bytes) -> None:
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
def gc_paused() -> Iterator[None]:
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


def percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


class Invalid(Exception):
    """A record that cannot become an entry (raised and caught within this module)."""


def collect_records(
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
    progress.phase("parsing", total=total, unit=PLURAL[position])
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


def line_count(body: str | bytes) -> int:
    if isinstance(body, bytes):
        return body.count(b"\n") + (not body.endswith(b"\n"))
    return body.count("\n") + (not body.endswith("\n"))


def parse_entry_id(value: object) -> str | None:
    """An id as the snapshot stores it: a non-empty string, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Invalid
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid
        return str(int(value)) if value.is_integer() else str(value)
    if not isinstance(value, str):
        raise Invalid
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise Invalid
    try:
        value.encode("utf-8")  # a JSON string may hold a lone surrogate
    except UnicodeEncodeError:
        raise Invalid from None
    return value or None


def numbered_lines(text: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of every data line: blank lines and comments skipped.

    Lines end at LF only (a CR before it is stripped), so that the numbers match what an
    editor shows even when a line holds a stray form feed or Unicode line separator.
    ``text`` is the text, or its lines split so (by ``text_stream(data, newline="\\n")``).
    """
    for number, line in enumerate(text.split("\n") if isinstance(text, str) else text, 1):
        line = line.strip()
        if line and line[0] != "#":
            yield number, line


def csv_rows(
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
