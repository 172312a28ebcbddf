"""URLs embedded in a URL: the target of a redirector, translator, archive or search URL.

A listed page fetched through ``http://r.example.net/?u=<listed URL>`` must be blocked too, so
the matcher checks every candidate found here as well as the URL itself. A false candidate
costs one lookup; a missed one is an evasion, so the rules err towards more candidates.

The URL is percent-unescaped once with :func:`canonical.unescape` (to the fixpoint, so any
depth of encoding), and every *marker* after the URL's own scheme and host starts a
candidate. Nested wrappers need no recursion: every level's marker is in the same text.

- ``http:`` or ``https:`` and any run of ``/`` and ``\\`` (any case), anywhere;
- ``www.`` (also ``www2.`` ...), anywhere, so also in a path: ``/web/2020/www.x.test/``;
- at the start of a parameter value (after ``=``, ``?`` or ``&``): ``//`` (protocol-relative,
  also ``\\\\`` and ``///``), or a value that looks like a host, ``host.tld`` or dotted IPv4,
  followed by ``/ \\ ? # & :`` or the end. File names such as ``?file=report.pdf`` are
  candidates too: ``.zip`` and ``.mov`` are real TLDs, so there is no telling them apart.

Where an embedded URL ends is ambiguous, so a marker yields up to four candidates: up to the
end, up to the outer ``?`` (when the marker is in the path), up to the next ``&``, and up to
the next ``&`` that was not percent-encoded in the input (the outer separator when the
embedded URL was encoded, so that its own ``&`` is ``%26``).

Bound: no marker is skipped, and work is linear. A candidate is cut at
``MAX_CANDIDATE_CHARS`` and where the ``MARKER_WINDOW``-th marker after its own begins: a
listed URL does not hold eight markers of its own, so the cut never reaches its host, path
or query. An input of n characters gives at most ``4 * n / 3`` candidates (a marker takes at
least 3 characters) of at most ``4 * MARKER_WINDOW * n`` characters in all (three times that
where bytes >= 0x80 are written as %XX). Measured in CPython 3.13: a 64 KiB adversarial URL
takes at most about 20 ms here, and the matcher's parse() of its candidates up to 55 ms
more; a URL with no marker takes about 0.5 us.

Not found: a host without ``www.`` in a path segment (``/web/2020/x.test/page``: archives
redirect that to the ``http://`` form, which is found); a tab, CR or LF inside a scheme
(``ht%09tp://``); the exact query of an entry embedded two or more levels deep when every
level adds parameters after it (its page is still found); and an escaped ``%23`` in an
embedded path, which reads as a fragment once unescaped.
"""

from __future__ import annotations

import re

from blocklist_addon.canonical import as_byte_string, unescape

__all__ = ["MARKER_WINDOW", "MAX_CANDIDATE_CHARS", "embedded_urls"]

#: No candidate is longer (browsers and servers refuse longer URLs anyway) ...
MAX_CANDIDATE_CHARS = 8192
#: ... or runs past where this many further markers begin, so total output stays linear.
MARKER_WINDOW = 8

# The URL's own scheme and host, which are not embedded in it.
_OUTER = r"(?:[A-Za-z][A-Za-z0-9+.\-]*+:)?+[/\\]*+[^/\\?#%]*+"
_TERMINATOR = r"(?=[/\\?#&:]|\Z)"
_MARKER = re.compile(
    r"https?:[/\\]+(?:www[0-9]{0,3}\.)?"  # a www. right after the scheme is part of it
    r"|www[0-9]{0,3}\."
    r"|[=?&](?:"  # at the start of a parameter value:
    r"[/\\]{2,}"  # protocol-relative
    r"|(?:[a-z0-9_\-\x80-\xff]++\.)+(?:[a-z]{2,63}|xn--[a-z0-9\-]{1,59}|[\x80-\xff]{2,})\.?"
    + _TERMINATOR  # host.tld
    + r"|(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
    + _TERMINATOR  # dotted IPv4
    + r")",
    re.IGNORECASE,
)
_SKIP_OUTER = re.compile(_OUTER)
# Matches only strings in which _MARKER finds nothing after the outer host: the common case,
# decided by one fullmatch, several times cheaper than a _MARKER search.
_PLAIN = re.compile(
    _OUTER
    + r"""[^:wW=?&%]*+  # characters that start no marker
    (?:(?:[=?&][^=?&#%./\\]*+(?![./\\%])  # a parameter value without "." "/" "\"
         |[wW](?![wW])  # a "w" that does not start "ww"
         |:(?![/\\])  # a ":" that does not start ":/"
       )[^:wW=?&%]*+
    )*+""",
    re.VERBOSE,
)
# Stand-ins for the input's own "&" and first "?" while unescaping: outside latin-1, so
# unescape neither consumes nor produces them, and they keep their positions.
_RAW_AMP, _RAW_QUERY = "\u0100", "\u0101"
_HIGH_BYTES = re.compile(r"[\x80-\xff]+")


def embedded_urls(url: str) -> list[str]:
    """URLs embedded in `url` (not including `url` itself), in order of first appearance,
    without duplicates, each an ASCII string for canonical.parse(): a substring of the fully
    unescaped input with bytes >= 0x80 written as %XX. Never raises."""
    if not isinstance(url, (str, bytes)):
        return []
    raw = url if isinstance(url, str) and url.isascii() else as_byte_string(url)
    if _PLAIN.fullmatch(raw):
        return []
    return _candidates(raw)


def _candidates(raw: str) -> list[str]:
    marked = unescape(raw.replace("&", _RAW_AMP).replace("?", _RAW_QUERY, 1))
    text = marked.replace(_RAW_AMP, "&").replace(_RAW_QUERY, "?")
    if "%" in raw and _PLAIN.fullmatch(text):
        return []
    query_at = marked.find(_RAW_QUERY)
    starts = [
        m.start() + (text[m.start()] in "=?&")
        for m in _MARKER.finditer(text, _SKIP_OUTER.match(text).end())
    ]
    found: dict[str, None] = {}
    for i, start in enumerate(starts):
        limit = min(len(text), start + MAX_CANDIDATE_CHARS)
        if i + MARKER_WINDOW < len(starts):
            limit = min(limit, starts[i + MARKER_WINDOW])
        ends = [limit]
        if start < query_at < limit:
            ends.append(query_at)
        for haystack, separator in ((text, "&"), (marked, _RAW_AMP)):
            end = haystack.find(separator, start, limit)
            if end != -1:
                ends.append(end)
        for end in ends:
            candidate = text[start:end]
            found.setdefault(candidate if candidate.isascii() else _ascii(candidate))
    return list(found)


def _ascii(candidate: str) -> str:
    """parse() takes a non-ASCII str for text and UTF-8-encodes it; bytes written as %XX
    reach it as the same bytes."""
    return _HIGH_BYTES.sub(lambda m: "%" + m.group().encode("latin-1").hex("%").upper(), candidate)
