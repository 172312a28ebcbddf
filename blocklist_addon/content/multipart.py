"""The parts of a ``multipart/*`` body, as every parser an origin might use would read them.

A guard that reads a body one way while the origin reads it another is bypassed: a decoy
``boundary=`` inside a quoted parameter, a delimiter inside a text field (not at a line
start, so not a delimiter to RFC 2046), a boundary outside Latin-1. So ``parts`` returns the
union of two readings:

- a strict RFC 2046 parser (python-multipart, the one Starlette and FastAPI use) with the
  boundary of the header's one ``boundary`` parameter (parsed as RFC 9110 says, quotes and
  all, and taken as the bytes the client sent, UTF-8 or not);
- a lenient split at every occurrence of every ``boundary=`` value the header holds,
  delimiter at a line start or not, decoys included.

Whatever an origin's parser took for the parts, they are among these. Base64 and
quoted-printable transfer encodings are undone. Pure: bytes in, parts out.
"""

from __future__ import annotations

import base64
import binascii
import logging
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["Part", "b64decode", "content_type_bytes", "parts"]

# The parser logs every malformed body it meets at WARNING: hostile input would fill the
# proxy's log with lines a client chose. A malformed body is reported to the caller instead.
logging.getLogger("python_multipart").setLevel(logging.CRITICAL)

_BOUNDARY_ANYWHERE = re.compile(rb"""boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;",]{1,200}))""", re.I)


@dataclass(frozen=True, slots=True)
class Part:
    headers: dict[bytes, bytes]  # lower-case names
    data: bytes  # transfer encoding undone
    start: int | None  # where ``data`` begins in the body, when it is a slice of it

    def header_text(self) -> str:
        """The part's headers as text (the field's name, its file name)."""
        return "\n".join(
            f"{k.decode('latin-1')}: {v.decode('utf-8', 'replace')}"
            for k, v in self.headers.items()
        )


def content_type_bytes(content_type: str | bytes) -> bytes:
    """A Content-Type as the client sent it: mitmproxy's text undone to the original bytes."""
    if isinstance(content_type, bytes):
        return content_type
    return content_type.encode("utf-8", "surrogateescape")


def parts(body: bytes, content_type: str | bytes) -> tuple[list[Part], bool]:
    """Every part of ``body`` as either reading finds it (each distinct part once), and
    whether the strict parser refused the body (or the header named no boundary)."""
    content_type = content_type_bytes(content_type)
    found: list[Part] = []
    seen: set[tuple[int | None, bytes]] = set()

    def add(part: Part) -> None:
        key = (part.start, part.data)
        if key not in seen:
            seen.add(key)
            found.append(part)

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    malformed = not boundary
    if boundary:
        try:
            for part in _strict(body, boundary):
                add(part)
        except MultipartParseError:
            malformed = True
    for match in _BOUNDARY_ANYWHERE.finditer(content_type):
        for part in _lenient(body, b"--" + (match.group(1) or match.group(2))):
            add(part)
    return found, malformed


def _decoded(headers: dict[bytes, bytes], data: bytes, start: int | None) -> Part:
    coding = headers.get(b"content-transfer-encoding", b"").lower()
    if coding == b"base64" and (decoded := b64decode(data)) is not None:
        return Part(headers, decoded, None)
    if coding == b"quoted-printable":
        return Part(headers, quopri.decodestring(data), None)
    return Part(headers, data, start)


def _lenient(body: bytes, delimiter: bytes) -> Iterator[Part]:
    starts = [m.end() for m in re.finditer(re.escape(delimiter), body)]
    ends = [start - len(delimiter) for start in starts[1:]] + [len(body)] * bool(starts)
    for start, end in zip(starts, ends, strict=True):
        piece = body[start:end]
        if piece.startswith(b"--"):
            continue  # the closing delimiter
        head, blank, data = piece.partition(b"\r\n\r\n")
        if not blank:
            head, blank, data = piece.partition(b"\n\n")
        headers: dict[bytes, bytes] = {}
        for line in head.splitlines():
            key, colon, value = line.partition(b":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        yield _decoded(headers, data.removesuffix(b"\r\n"), start + len(head) + len(blank))


def _strict(body: bytes, boundary: bytes) -> Iterator[Part]:
    parsed: list[tuple[dict[bytes, bytes], bytearray, list[int]]] = []
    names: list[bytes] = []
    values: list[bytes] = []

    def begin() -> None:
        parsed.append(({}, bytearray(), []))

    def data(chunk: bytes, start: int, end: int) -> None:
        if not parsed[-1][2]:
            parsed[-1][2].append(start if chunk is body else -1)
        parsed[-1][1].extend(chunk[start:end])

    def name(chunk: bytes, start: int, end: int) -> None:
        names.append(chunk[start:end])

    def value(chunk: bytes, start: int, end: int) -> None:
        values.append(chunk[start:end])

    def header_end() -> None:
        parsed[-1][0][b"".join(names).strip().lower()] = b"".join(values).strip()
        names.clear()
        values.clear()

    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_part_begin": begin,
            "on_part_data": data,
            "on_header_field": name,
            "on_header_value": value,
            "on_header_end": header_end,
        },
        max_header_count=64,
        max_header_size=16 * 1024,
    )
    parser.write(body)
    parser.finalize()
    for headers, content, start in parsed:
        yield _decoded(headers, bytes(content), start[0] if start and start[0] >= 0 else None)


def b64decode(text: bytes) -> bytes | None:
    """Standard or URL-safe base64, whitespace and missing padding forgiven; None if not."""
    compact = b"".join(text.split()).rstrip(b"=")
    if len(compact) < 4 or len(compact) % 4 == 1:
        return None
    compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
