"""Response validation: the body's SHA-256 against a checksum header or a sidecar file, so
that a corrupted download is refused before ``sync.feeds`` parses it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from sync.fetch.errors import FetchError

__all__ = ["MAX_CHECKSUM_BYTES", "header_digest", "sidecar_digest", "verify"]

#: A checksum file holds one line; anything bigger is not one.
MAX_CHECKSUM_BYTES = 64 * 1024
_HEX_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


def verify(data: bytes, expected: bytes, where: str) -> None:
    if not hmac.compare_digest(hashlib.sha256(data).digest(), expected):
        raise FetchError(f"checksum mismatch: the {len(data)}-byte body does not match the {where}")


def sidecar_digest(body: bytes, where: str) -> bytes:
    """First token of a checksum file (``sha256sum`` output works as it is)."""
    tokens = body[:MAX_CHECKSUM_BYTES].split(maxsplit=1)
    token = tokens[0].decode("ascii", "replace") if tokens else ""
    if not _HEX_SHA256.fullmatch(token):
        raise FetchError(f"{where} does not start with a hex SHA-256")
    return bytes.fromhex(token)


def header_digest(value: str, where: str) -> bytes:
    """Hex, or base64 as some object stores send it (x-amz-checksum-sha256)."""
    value = value.strip()
    if _HEX_SHA256.fullmatch(value):
        return bytes.fromhex(value)
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise FetchError(f"{where} is not a SHA-256 (hex or base64)")
    return digest
