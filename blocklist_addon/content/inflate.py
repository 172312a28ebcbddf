"""Request bodies decoded from their ``Content-Encoding`` under a size cap.

mitmproxy's ``get_content`` inflates a body whole, in memory, before anyone can look at its
size: a 1 MiB gzip body that inflates to 1 GiB cost 2 GiB of RSS and stalled the event loop
for seconds. Here every coding is inflated in steps that never produce more than the cap
(zlib's and zstd's ``max_length``, brotli's ``output_buffer_limit``), and stacked codings
(``gzip, br``) are undone last-applied first, each under the same cap.
"""

from __future__ import annotations

import zlib

import brotli

try:  # Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - the backport mitmproxy depends on
    from backports import zstd  # type: ignore[no-redef]

__all__ = ["TooLarge", "decoded_head", "inflate"]

#: Compressed input fed to a decoder at a time.
_STEP = 64 * 1024


class TooLarge(ValueError):
    """The body inflates to more than the cap."""


def inflate(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``raw`` decoded from ``content_encoding``; TooLarge past ``limit`` bytes, ValueError
    for a coding that is unknown or broken."""
    body = raw
    for coding in reversed(_codings(content_encoding)):
        decode = _DECODERS.get(coding)
        if decode is None:
            raise ValueError(f"unknown content-encoding {coding[:20]!r}")
        body = decode(body, limit)
    if len(body) > limit:
        raise TooLarge(f"more than {limit} bytes")
    return body


def decoded_head(raw: bytes, coding: str | None, limit: int) -> bytes | None:
    """The first ``limit`` bytes of ``raw`` decoded from its one content coding, as a
    lenient streaming decoder reads them (None for none, several, or nothing decoded). The
    head of a body that inflates past the limit is checked as a plain body's is (a listed
    picture padded with zeros that gzip makes small passed as too-large), and so is what a
    server's decoder makes of a broken coding (a gzip member cut short, or junk after it:
    the picture whole, which passed as undecodable-encoding)."""
    codings = _codings(coding)
    if len(codings) != 1:
        return None
    try:
        match codings[0]:
            case "gzip" | "x-gzip":
                return zlib.decompressobj(31).decompress(raw, limit)
            case "deflate":
                try:
                    return zlib.decompressobj(15).decompress(raw, limit)
                except zlib.error:
                    return zlib.decompressobj(-15).decompress(raw, limit)  # raw, as some send it
            case "br":
                return brotli.Decompressor().process(raw, output_buffer_limit=limit)
            case "zstd":
                return zstd.ZstdDecompressor().decompress(raw, max_length=limit)
    except (zlib.error, brotli.error, zstd.ZstdError):
        return None
    return None


def _codings(content_encoding: str | None) -> list[str]:
    """The codings of a Content-Encoding, in the order applied, ``identity`` left out."""
    codings = (c.strip().lower() for c in (content_encoding or "").split(","))
    return [c for c in codings if c and c != "identity"]


def _zlib(wbits: int, name: str):
    def decode(data: bytes, limit: int) -> bytes:
        out = bytearray()
        pending = data
        try:
            while pending:  # gzip members one after another, as gzip(1) writes them
                decoder = zlib.decompressobj(wbits)
                while pending:
                    out += decoder.decompress(pending, limit + 1 - len(out))
                    if len(out) > limit:
                        raise TooLarge(f"more than {limit} bytes")
                    pending = decoder.unconsumed_tail
                out += decoder.flush(limit + 1 - len(out))
                if not decoder.eof:
                    raise ValueError(f"truncated {name} data")
                pending = decoder.unused_data if wbits == 31 else b""
        except zlib.error as exc:
            raise ValueError(f"broken {name} data") from exc
        if len(out) > limit:
            raise TooLarge(f"more than {limit} bytes")
        return bytes(out)

    return decode


def _deflate(data: bytes, limit: int) -> bytes:
    """``deflate`` as servers send it: zlib-wrapped, or raw (as some clients wrongly do)."""
    try:
        return _ZLIB(data, limit)
    except TooLarge:
        raise
    except ValueError:
        return _RAW_DEFLATE(data, limit)


def _brotli(data: bytes, limit: int) -> bytes:
    decoder = brotli.Decompressor()
    out = bytearray()
    try:
        for start in range(0, len(data) or 1, _STEP):
            chunk = data[start : start + _STEP]
            out += decoder.process(chunk, output_buffer_limit=limit + 1 - len(out))
            while len(out) <= limit and not decoder.can_accept_more_data():
                out += decoder.process(b"", output_buffer_limit=limit + 1 - len(out))
            if len(out) > limit:
                raise TooLarge(f"more than {limit} bytes")
    except brotli.error as exc:
        raise ValueError("broken brotli data") from exc
    if not decoder.is_finished():
        raise ValueError("truncated brotli data")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    pending = data
    try:
        while pending:  # concatenated frames
            decoder = zstd.ZstdDecompressor()
            out += decoder.decompress(pending, max_length=limit + 1 - len(out))
            while len(out) <= limit and not decoder.eof and not decoder.needs_input:
                out += decoder.decompress(b"", max_length=limit + 1 - len(out))
            if len(out) > limit:
                raise TooLarge(f"more than {limit} bytes")
            if not decoder.eof:
                raise ValueError("truncated zstd data")
            pending = decoder.unused_data
    except zstd.ZstdError as exc:
        raise ValueError("broken zstd data") from exc
    return bytes(out)


_GZIP = _zlib(31, "gzip")
_ZLIB = _zlib(15, "deflate")
_RAW_DEFLATE = _zlib(-15, "deflate")
_DECODERS = {
    "gzip": _GZIP,
    "x-gzip": _GZIP,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}
