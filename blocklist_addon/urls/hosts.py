"""Hosts as browsers write them: the WHATWG URL Standard's "domain to ASCII".

A browser turns an internationalised host into ASCII with UTS 46 as the URL Standard sets
it (non-transitional, CheckHyphens=false, CheckBidi and CheckJoiners on,
UseSTD3ASCIIRules=false, no DNS length check and no IDNA2008 code-point validity), so
``☃.test``, ``xn--n3h.test`` and ``a_ü.test`` are hosts to it. This module asks ada (the
C++ URL parser Node uses, through its Python binding ``ada-url``) for that answer rather
than keeping tables of its own; the differential test holds it to Chromium's.

A host a browser refuses (a Bidi or joiner rule broken, a label that starts with a
combining mark, a code point UTS 46 disallows) is never fetched by a browser, but other
clients resolve it leniently: Python's IDNA 2003 codec (which mitmproxy uses for the hosts
it connects to), and libidn2's transitional fallback. Each label is then read on its own:
as ada reads it when it accepts the label alone, else as the A-label of its UTS 46
transitional mapping without validity checks (what those clients put on the wire, so an
entry written either way meets the request written the other way), else, for a label no
DNS name can hold, as its text lower-cased (the caller escapes its bytes).

Everything here is a pure function that never raises, and the work is bounded: only the
last 127 labels are read (no DNS name has more; the others keep their text), ada is handed
labels of at most MAX_LABEL_BYTES (its punycode step is quadratic in a label), and at most
MAX_LENIENT labels of a host are encoded in Python.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import compress

import idna
from ada_url import idna_to_ascii

__all__ = ["MAX_DNS_LABELS", "MAX_LABEL_BYTES", "MAX_LENIENT", "browser_ascii", "host_to_ascii"]

#: ada refuses a longer host (its own bound against untrusted input).
ADA_MAX_BYTES = 16384
#: A DNS label holds at most 63 octets (RFC 1035), so no listed host has a longer one.
MAX_DNS_LABEL = 63
#: A label of more UTF-8 bytes than this, ignorable code points aside, cannot become an
#: A-label of 63 octets: a code point of its UTS 46 mapping comes from at most 12 bytes (four
#: 3-byte code points composed into one), so it maps to at least 86 code points, and an
#: A-label is longer than "xn--" plus its code points. Such a label is not handed to ada,
#: whose punycode step costs time quadratic in the label (57 ms for 16 KiB of distinct CJK).
MAX_LABEL_BYTES = 1024
#: No DNS name has more labels (253 octets, one and a dot each).
MAX_DNS_LABELS = 127
#: At most this many labels of one host are encoded leniently (in Python, about 0.2 ms for
#: a label of 59 distinct code points); a host with more keeps the text of every one.
MAX_LENIENT = 8

# The full stops UTS 46 maps to "." (ada, probed over every code point, maps no other).
_LABEL_DOTS = re.compile("[.\u3002\uff0e\uff61]")
# Removed by the mapping of some client: UTS 46 deviations that transitional processing
# (IDNA 2003, libidn2's fallback) drops, and IDNA 2003's own "mapped to nothing".
_DROPPED_BY_SOME = frozenset({0x200C, 0x200D, 0x1806})
# UTS 46's four deviations, as transitional processing maps them (the idna package no
# longer does it): what IDNA 2003 clients and libidn2's fallback resolve.
_TRANSITIONAL = {0xDF: "ss", 0x3C2: "\u03c3", 0x200C: None, 0x200D: None}


def _ada(text: str) -> str | None:
    """ada's domain to ASCII, or None when it refuses. The binding hands back a C string,
    so text holding NUL (which every browser refuses) is refused here."""
    if "\x00" in text:
        return None
    try:
        found = idna_to_ascii(text)
    except (UnicodeError, ValueError):  # a lone surrogate cannot be encoded; never raise
        return None
    if not found:
        return None
    ascii_host = found.decode("ascii", "replace")
    # "%" is a forbidden domain code point (browsers refuse it), and it would be unescaped
    # together with what follows when the canonical URL is read again.
    return None if "%" in ascii_host else ascii_host


# Format characters and nonspacing marks (where UTS 46's "ignored" code points all are) ->
# whether UTS 46 maps it to nothing; asked of ada once each, so at most a few thousand
# entries however many hosts pass.
_IGNORED: dict[str, bool] = {}
_MARKS = frozenset({"Cf", "Mn"})
_DROPPED_CHARS = tuple(map(chr, _DROPPED_BY_SOME))
#: A label of more code points than this (joiners aside) maps to more than 59 (NFC joins
#: at most four into one), so it has no A-label of 63 octets: not encoded leniently.
_MAX_LENIENT_POINTS = 4 * (MAX_DNS_LABEL - 4)


def _ignored(ch: str) -> bool:
    found = _IGNORED.get(ch)
    if found is None:
        found = _IGNORED[ch] = _ada(f"a{ch}b") == "ab"
    return found


def _squeeze(label: str) -> tuple[str, int]:
    """``label`` without the code points UTS 46 maps to nothing (the same label to ada and
    to a browser), and its weight: its UTF-8 bytes without those and without what some
    client drops (_DROPPED_BY_SOME)."""
    size = len(label.encode("utf-8", "surrogatepass"))
    if size <= MAX_LABEL_BYTES:
        return label, size
    # The format characters and nonspacing marks among its distinct code points, picked in
    # C (map and compress): a Python loop over 21,000 distinct CJK took 10 ms.
    distinct = list(set(label))
    marks = compress(distinct, map(_MARKS.__contains__, map(unicodedata.category, distinct)))
    ignored = [ch for ch in marks if _ignored(ch)]
    # Counted, not removed, unless the label is light enough to be read (str.translate
    # costs 8 ms for 21,000 CJK characters): each of these is 2 to 4 bytes of UTF-8.
    weight = size - sum(
        len(ch.encode("utf-8", "surrogatepass")) * label.count(ch)
        for ch in (*ignored, *_DROPPED_CHARS)
    )
    if weight > MAX_LABEL_BYTES or not ignored:
        return label, weight
    return label.translate(dict.fromkeys(map(ord, ignored))), weight


def browser_ascii(text: str) -> str | None:
    """The host a browser sends for ``text`` (decoded, any case, full-width dots allowed),
    or None when browsers refuse it, or when a label weighs over MAX_LABEL_BYTES or the
    host is longer than ada takes (``host_to_ascii`` then answers label by label)."""
    if text.isascii() or len(text) * 4 <= MAX_LABEL_BYTES:
        return _ada(text)  # at most 1 KiB of UTF-8: no label is heavy
    return _browser_ascii([_squeeze(label) for label in _LABEL_DOTS.split(text)])


def _browser_ascii(squeezed: list[tuple[str, int]]) -> str | None:
    if any(weight > MAX_LABEL_BYTES for _, weight in squeezed):
        return None
    text = ".".join(light for light, _ in squeezed)  # UTS 46 maps _LABEL_DOTS to "."
    if len(text.encode("utf-8", "surrogatepass")) > ADA_MAX_BYTES:
        return None
    return _ada(text)


def host_to_ascii(text: str) -> str:
    """The ASCII host for ``text``: ``browser_ascii`` where browsers accept it; else each
    label as the module's docstring says (a label kept as text is not ASCII). Only the
    last MAX_DNS_LABELS labels are read: no DNS name has more, so no listed host (nor any
    suffix the matcher looks up) reaches further left, and the others keep their text."""
    labels = _LABEL_DOTS.split(text)
    start = max(0, len(labels) - MAX_DNS_LABELS)
    if start:
        head = ".".join(labels[:start]).lower()
        return head + "." + _read_labels(labels[start:], squeezed=None)
    if len(text) * 4 <= MAX_LABEL_BYTES:  # at most 1 KiB of UTF-8: no label is heavy
        return _ada(text) or _read_labels(labels, squeezed=[(label, 0) for label in labels])
    squeezed = [_squeeze(label) for label in labels]
    return _browser_ascii(squeezed) or _read_labels(labels, squeezed)


def _read_labels(labels: list[str], squeezed: list[tuple[str, int]] | None) -> str:
    """Each label as a browser reads it alone; those browsers refuse leniently."""
    if squeezed is None:
        squeezed = [_squeeze(label) for label in labels]
    out = [label.lower() for label in labels]
    refused: list[tuple[int, str]] = []
    for i, (light, weight) in enumerate(squeezed):
        if light.isascii() or weight > MAX_LABEL_BYTES:
            continue  # lower-cased, or no DNS name can hold it: its text
        found = _ada(light) if len(light) * 4 <= MAX_LABEL_BYTES else browser_ascii(light)
        if found is None:
            refused.append((i, light))
        else:
            out[i] = found
    if len(refused) <= MAX_LENIENT:  # else every refused label keeps its text
        for i, light in refused:
            lenient = _lenient(light)
            out[i] = out[i] if lenient is None else lenient
    return ".".join(out)


def _lenient(label: str) -> str | None:
    """The A-label of ``label``'s UTS 46 transitional mapping, without validity checks;
    "" when it maps to nothing (soft hyphens, joiners: browsers read an empty label there);
    None when that is no DNS label (over 63 octets, or holding "." or "%")."""
    label = label.translate(_TRANSITIONAL)
    if len(label) > _MAX_LENIENT_POINTS:
        return None
    try:
        mapped = idna.uts46_remap(label, std3_rules=False, transitional=False)
    except (UnicodeError, ValueError, idna.IDNAError):
        mapped = unicodedata.normalize("NFC", label.lower())
    mapped = mapped.translate(_TRANSITIONAL)
    if not mapped:
        return ""
    if "." in mapped or "%" in mapped or "\x00" in mapped:
        return None
    if mapped.isascii():
        return mapped.lower()
    encoded = _punycode(mapped, MAX_DNS_LABEL - 4)
    return None if encoded is None else "xn--" + encoded


# -- punycode (RFC 3492), stopping once the output is longer than a limit --------------

_BASE, _TMIN, _TMAX, _SKEW, _DAMP = 36, 1, 26, 38, 700
_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _adapt(delta: int, points: int, first: bool) -> int:
    delta = delta // _DAMP if first else delta // 2
    delta += delta // points
    k = 0
    while delta > ((_BASE - _TMIN) * _TMAX) // 2:
        delta //= _BASE - _TMIN
        k += _BASE
    return k + (_BASE - _TMIN + 1) * delta // (delta + _SKEW)


def _punycode(label: str, limit: int) -> str | None:
    """RFC 3492's encoding of ``label``, or None once it grows past ``limit`` characters:
    every code point encoded adds a digit, so the work stays within limit x len(label).
    (Python's own codec takes 1.1 ms for 63 distinct code points.)"""
    codes = [ord(c) for c in label]
    out = [c for c in label if ord(c) < 0x80]
    basic = handled = len(out)
    if basic:
        out.append("-")
    n, delta, bias = 0x80, 0, 72
    while handled < len(codes):
        m = min(c for c in codes if c >= n)
        delta += (m - n) * (handled + 1)
        n = m
        for c in codes:
            if c < n:
                delta += 1
            elif c == n:
                q, k = delta, _BASE
                while True:
                    t = _TMIN if k <= bias else _TMAX if k >= bias + _TMAX else k - bias
                    if q < t:
                        break
                    out.append(_DIGITS[t + (q - t) % (_BASE - t)])
                    q = (q - t) // (_BASE - t)
                    k += _BASE
                out.append(_DIGITS[q])
                bias = _adapt(delta, handled + 1, handled == basic)
                delta = 0
                handled += 1
                if len(out) > limit:
                    return None
        delta += 1
        n += 1
    return "".join(out)
