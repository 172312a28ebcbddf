"""URLs embedded in another encoding than percent-encoding, found by the markers of
:mod:`blocklist_addon.urls.embedded.markers`.

A URL in another encoding is decoded, is a candidate itself, and is searched again (to any
depth within the budget of :mod:`blocklist_addon.urls.embedded`): base64 or base64url as a
parameter value (also after a version tag, ``u=a1<base64url>``) or path segment (also split
by "/" across segments, as imgproxy writes it), found by the base64 of ``http:/`` or
``https:``, any case; hex (camo, ``687474`` ...), Proofpoint URL Defense v2
(``u=http-3A__host_path``) and v3 (``__http://host/path__;<moved characters>!!``, its ``*``
replaced).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import string
import urllib.parse

from blocklist_addon.urls.canonical import as_byte_string

__all__ = ["decoded_urls"]

_PP3_END = re.compile(r"__;([A-Za-z0-9_\-]*)!")


def decoded_urls(text: str, encoded: list[re.Match[str]], begin: int) -> list[tuple[str, bool]]:
    """The URLs that MARKER found written in base64 or base64url, hex or Proofpoint's
    encodings in ``text``, each decoded to a byte string (latin-1 characters), and whether
    to search it for more: not a reading that holds bytes no URL holds where another
    reading of the same run is the URL (the bytes decoded from a base64url path's other
    segments could hold anything, ``/<host>/`` too)."""
    out: list[tuple[str, bool]] = []
    pp3_ends: list[re.Match[str]] = []
    pp3_at: list[int] | None = None
    last_end = -1
    for m in encoded:
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind.startswith("b64"):
            url = _from_base64(value)
            if "/" in value and (url is None or _NOT_URL.search(url)):
                # Not one URL with "/" as a base64 character: base64url split across
                # segments (then that URL alone: a shorter reading would be its parent),
                # or up to the first "/" with more segments after it.
                split = _split_base64(value.split("/"))
                if len(split) != 1:
                    if url is not None:
                        out.append((url, False))
                    if (first := _from_base64(value.split("/", 1)[0])) is not None:
                        out.append((first, True))
                out += split
            elif url is not None:
                out.append((url, True))
        elif kind.startswith("hex"):
            out.append((bytes.fromhex(value).decode("latin-1"), True))
        elif kind == "pp2":
            # "-" escapes as "%" does, "_" is "/"; unquoted once, as Proofpoint's decoder does
            pp2 = urllib.parse.unquote(value.replace("-", "%").replace("_", "/"), "latin-1")
            out.append((pp2, True))
        else:
            if pp3_at is None:
                pp3_ends = list(_PP3_END.finditer(text, begin))
                pp3_at = [e.start() for e in pp3_ends]
            start = m.end("pp3")
            k = bisect.bisect_left(pp3_at, start)
            if k < len(pp3_ends) and pp3_ends[k].start() != last_end:
                end = pp3_ends[k]
                last_end = end.start()
                out.append((_proofpoint_v3(text[start : end.start()], end.group(1)), True))
    return out


#: Of a base64url URL split into path segments and followed by more segments, the readings
#: cut where one of the last this many segments before the first byte no URL holds ends.
SPLIT_CUTS = 3
_NOT_URL = re.compile(r"[^\x21-\x7e]")


def _split_base64(pieces: list[str]) -> list[tuple[str, bool]]:
    """base64url split by "/" anywhere (imgproxy: "can be split with / as desired"): the
    pieces joined. Segments after the encoded URL (``/x``, ``/more``) decode to bytes
    after it, almost always some byte no URL holds, so then the URL is also cut where
    one of the segments before that byte ends (a prefix of the encoded text decodes to
    a prefix of the URL: each cut is a slice of one decoding). A URL with nothing after
    it is not cut: a cut inside it would be its parent. The longest cut is searched for
    more, not what follows it."""
    url = _from_base64("".join(pieces))
    if url is None:
        return []
    bad = _NOT_URL.search(url)
    if bad is None:
        return [(url, True)]
    cuts, chars = [], 0
    for piece in pieces[:-1]:
        chars += len(piece)
        if chars * 3 // 4 > bad.start():
            break
        cuts.append(chars * 3 // 4)
    kept = [b for b in cuts[-SPLIT_CUTS:] if b >= 8]
    return [(url, False), *((url[:b], b == kept[-1]) for b in kept)]


def _from_base64(run: str) -> str | None:
    data = run.rstrip("=").replace("-", "+").replace("_", "/")
    data = data[: len(data) - (len(data) % 4 == 1)]
    try:
        return binascii.a2b_base64(data + "=" * (-len(data) % 4)).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


#: Proofpoint v3: "**" and this character stand for a run of 2, 3 ... replaced characters.
_PP3_RUNS = {
    c: n
    for n, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_", 2)
}


def _proofpoint_v3(url: str, replaced: str) -> str:
    """The URL with each "*" (or "**" and a run length) replaced by the characters
    Proofpoint moved, base64url-encoded, behind it; as written when they do not decode."""
    if "*" not in url:
        return url
    try:
        chars = base64.urlsafe_b64decode(replaced + "=" * (-len(replaced) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return url
    out, at, used = [], 0, 0
    while (star := url.find("*", at)) != -1:
        out.append(url[at:star])
        if url.startswith("**", star) and star + 2 < len(url) and url[star + 2] in _PP3_RUNS:
            run, at = _PP3_RUNS[url[star + 2]], star + 3
        else:
            run, at = 1, star + 1
        if used + run > len(chars):
            return url
        out.append(chars[used : used + run])
        used += run
    out.append(url[at:])
    return as_byte_string("".join(out))
