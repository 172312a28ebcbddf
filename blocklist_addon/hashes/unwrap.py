"""Every file an upload body could be carrying, however it is wrapped.

An origin finds the file in a body with its own parser; the guard must find it too. It takes
the union of:

- every part of every ``multipart/*`` body (``form-data``, ``related``, ``mixed``, nested
  ones too) as a strict RFC 2046 parser and a lenient split read it
  (``blocklist_addon.content.multipart``), transfer encodings undone;
- the strings of a JSON body or a form: ``data:`` URLs and base64 strings, decoded, and a
  form value that is an image or a video once percent-decoded;
- as a net under all of them, images carved out of every piece by their signatures (JPEG,
  PNG, GIF, WebP, TIFF, BMP, ISO media ``ftyp``, JPEG 2000) and base64 runs that decode to
  an image, wherever they sit.

Bounded: at most ``max_files`` pieces and ``max_bytes`` decoded bytes; what is left over is
reported (``too-many-parts``), as is a multipart body the strict parser rejects
(``malformed-multipart``). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from python_multipart.multipart import parse_options_header

from blocklist_addon.content import multipart
from blocklist_addon.content.multipart import b64decode
from blocklist_addon.content.uploads import json_strings
from blocklist_addon.hashes.images import sniff
from blocklist_addon.hashes.video import sniff_video

__all__ = ["MAX_FILES", "Unwrapped", "unwrap"]

#: Pieces found per request at most (each costs its exact hashes, microseconds for a small
#: one; the decoded images among them are capped by the caller).
MAX_FILES = 100_000
#: Nested multipart bodies (a multipart/mixed inside a form field) are read this deep.
MAX_DEPTH = 3
#: A base64 string shorter than this is no file worth decoding.
MIN_BASE64 = 64

#: Image signatures carved at any offset, each with how far before it the file begins
#: (ICO's and BMP's signatures are too short to carve blind). Found with ``bytes.find``:
#: a regular expression over a 32 MiB body costs a second.
_SIGNATURES = (
    (b"\xff\xd8\xff", 0),  # JPEG
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"WEBP", 8),  # RIFF, size, WEBP
    (b"II*\x00", 0),  # TIFF
    (b"MM\x00*", 0),
    (b"ftyp", 4),  # ISO media: HEIF, AVIF (size, ftyp, brand)
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0),  # JPEG 2000
    (b"\xff\x4f\xff\x51", 0),  # JPEG 2000 codestream
)
#: The same files base64-encoded (standard or URL-safe), with how far before the found text
#: the encoding begins.
_BASE64_SIGNATURES = (
    (b"/9j/", 0),
    (b"_9j_", 0),
    (b"iVBORw0KGgo", 0),
    (b"R0lGOD", 0),
    (b"UklGR", 0),
    (b"SUkqA", 0),
    (b"TU0AK", 0),
    (b"Z0eXB", 6),  # "ftyp" and a lower-case brand, after a 4-byte box size
    (b"AAAADGpQICANCocK", 0),
)
_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/_\-\r\n]*={0,2}")
#: Signature hits looked at per piece: a body stuffed with decoys is reported, not slow.
MAX_HITS = 1024
_DATA_URL = re.compile(r"\s*data:[^,]{0,200},", re.I)


@dataclass
class Unwrapped:
    files: list[bytes] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


class _Collector:
    """Distinct pieces, in the order found, within the bounds; which of them are slices of
    the body (carved once, with the body) and which were decoded (carved on their own)."""

    def __init__(self, body: bytes, max_files: int, max_bytes: int) -> None:
        self.body = body
        self.out = Unwrapped()
        self.max_files = max_files
        self.budget = max_bytes
        self.seen: set[bytes] = set()
        self.starts: set[int] = set()  # where slices of the body begin
        self.decoded: list[bytes] = []

    def add(self, piece: bytes, at: int | None = None) -> bool:
        """Add ``piece`` (``at``: where it may begin in the body); False once the bounds
        are reached (reported once)."""
        if not piece:
            return True
        if at is not None and self.body.startswith(piece, at):
            self.starts.add(at)
        elif piece not in self.seen:
            self.decoded.append(piece)
        if piece in self.seen:
            return True
        if len(self.out.files) >= self.max_files or len(piece) > self.budget:
            self.flag("too-many-parts")
            return False
        self.seen.add(piece)
        self.budget -= len(piece)
        self.out.files.append(piece)
        return True

    def flag(self, reason: str) -> None:
        if reason not in self.out.unchecked:
            self.out.unchecked.append(reason)


def unwrap(
    body: bytes, content_type: str | bytes, *, max_files: int = MAX_FILES, max_bytes: int
) -> Unwrapped:
    """The pieces of ``body`` to check, the body itself first; see the module docstring."""
    found = _Collector(body, max_files, max(max_bytes, len(body)) * 2)
    found.add(body, 0)
    _container(body, multipart.content_type_bytes(content_type), found, 0, 0)
    # The net: images anywhere in the body, and in whatever was decoded out of it.
    _carve(body, found.starts, found)
    for piece in list(found.decoded):
        _carve(piece, {0}, found)
    return found.out


def _container(
    body: bytes, content_type: bytes, found: _Collector, depth: int, at: int | None
) -> None:
    """The pieces inside ``body`` (``at``: where it may begin in the whole body) as its
    declared type, and its look, say."""
    kind = parse_options_header(content_type)[0].lower()
    if kind.startswith(b"multipart/") and depth < MAX_DEPTH:
        _multipart(body, content_type, found, depth, at)
    elif kind == b"application/x-www-form-urlencoded":
        for pair in body.split(b"&"):
            for item in pair.split(b"=", 1):
                value = unquote_to_bytes(item.replace(b"+", b" "))
                if value != item and (sniff(value) or sniff_video(value)):
                    # A file's bytes percent-encoded (curl --data-urlencode photo@x.jpg),
                    # which PHP hands the app as they are.
                    found.add(value)
                _string(value, found)
    elif kind.endswith(b"json") or body.lstrip()[:1] in (b"{", b"["):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return
        for text in json_strings(document):
            _string(text.encode("utf-8", "surrogatepass"), found)


def _multipart(
    body: bytes, content_type: bytes, found: _Collector, depth: int, at: int | None
) -> None:
    pieces, malformed = multipart.parts(body, content_type)
    if malformed:
        found.flag("malformed-multipart")
    for part in pieces:
        start = None if at is None or part.start is None else at + part.start
        if not found.add(part.data, start):
            return
        if inner := part.headers.get(b"content-type"):
            _container(part.data, inner, found, depth + 1, start)


def _string(text: bytes, found: _Collector) -> None:
    """A field's value: a data: URL or a base64 string is a file."""
    if len(text) < MIN_BASE64:
        return
    head = _DATA_URL.match(text.decode("latin-1"))
    if head is not None:
        meta, payload = text[: head.end() - 1], text[head.end() :]
        data = (
            b64decode(payload) if meta.lower().endswith(b";base64") else unquote_to_bytes(payload)
        )
        found.add(data or b"")
    elif (data := b64decode(text)) is not None:
        found.add(data)


def _carve(piece: bytes, known: set[int], found: _Collector) -> None:
    """Images inside ``piece`` at any offset but the ``known`` starts of pieces already
    found, raw or as base64 text."""
    hits = [
        (start, encoded)
        for table, encoded in ((_SIGNATURES, False), (_BASE64_SIGNATURES, True))
        for signature, back in table
        for start in itertools.islice(_positions(piece, signature, back), MAX_HITS + 1)
    ]
    if len(hits) > MAX_HITS:
        found.flag("too-many-parts")
        del hits[MAX_HITS:]
    for start, encoded in hits:
        if encoded:
            run = _BASE64_CHARS.match(piece, start)
            assert run is not None  # the pattern matches the empty string
            if sniff(b64decode(b"".join(run.group()[:96].split())[:64]) or b"") is None:
                continue  # decode only what starts like an image
            image, at = b64decode(run.group()), None
        elif start in known or sniff(piece[start : start + 32]) is None:
            continue
        else:
            image, at = _image_at(piece, start), start if piece is found.body else None
        if image is not None and not found.add(image, at):
            return


def _positions(piece: bytes, signature: bytes, back: int) -> Iterator[int]:
    at = piece.find(signature)
    while at >= 0:
        if at >= back:
            yield at - back
        at = piece.find(signature, at + 1)


def _image_at(piece: bytes, start: int) -> bytes:
    """The image starting at ``start``: to its declared end where the format says it (RIFF,
    PNG), else to the end of the piece (decoders stop at their own end marker)."""
    if piece.startswith(b"RIFF", start):
        size = int.from_bytes(piece[start + 4 : start + 8], "little")
        return piece[start : start + 8 + size]
    if piece.startswith(b"\x89PNG", start):
        end = piece.find(b"IEND", start)
        if end >= 0:
            return piece[start : end + 8]
    return piece[start:]
