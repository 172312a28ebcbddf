"""The hash kinds a hash list holds, their sizes, and reading them from a feed's hex.

Exact kinds (MD5, SHA-1, SHA-256) identify a file byte for byte; PDQ is Meta's 256-bit
perceptual hash of an image, compared by Hamming distance. A hex PDQ hash is written with
the first bit of the hash vector as the most significant bit (ThreatExchange's convention),
so ``bytes.fromhex`` gives the bytes ``numpy.packbits`` makes of the vector.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["EXACT_KINDS", "KINDS", "NAMESPACE", "SIZES", "exact_digests", "parse_hex"]

#: The store namespace hash lists live in, beside the URL list (``open_store(namespace=)``).
NAMESPACE = "hashes"
#: Every kind, in the order a snapshot stores them.
KINDS = ("md5", "sha1", "sha256", "pdq")
EXACT_KINDS = ("md5", "sha1", "sha256")
#: Bytes per hash of each kind.
SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32}

_HEX = re.compile(r"[0-9A-Fa-f]+")


def parse_hex(kind: str, text: object) -> bytes | None:
    """The hash of ``kind`` written as hex in ``text`` (surrounding spaces allowed), or None
    when it is not exactly that many hex digits."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) != 2 * SIZES[kind] or not _HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)


def exact_digests(data: bytes, kinds: Iterable[str] = EXACT_KINDS) -> dict[str, bytes]:
    """The exact hashes of ``data`` for ``kinds`` (only those a list holds are worth it)."""
    return {kind: hashlib.new(kind, data).digest() for kind in kinds}
