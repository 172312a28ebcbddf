"""URLs embedded in a URL: the target of a redirector, translator, archive or search URL.

A listed page fetched through ``http://r.example.net/?u=<listed URL>`` must be blocked too, so
the matcher checks every candidate found here as well as the URL itself. A false candidate
costs one lookup; a missed one is an evasion, so the rules err towards more candidates.

The URL is percent-unescaped with :func:`canonical.unescape_by_level` (to the fixpoint, so
any depth of encoding, noting how deeply each structural character was encoded), tabs and
newlines are dropped as browsers drop them, and every *marker* after the URL's own scheme
and host starts a candidate. Nested wrappers need no recursion: every level's marker is in
the same text. The rules live beside this driver:

- :mod:`blocklist_addon.urls.embedded.markers`: the markers (a scheme, ``www.``, a host as a path
  segment of an AMP cache, image CDN, Thumbor or media proxy, a parameter value that looks
  like a URL or host) and the bounds below;
- :mod:`blocklist_addon.urls.embedded.decode`: URLs in base64, hex or Proofpoint's encodings,
  each a candidate itself and searched again (``MAX_DECODED_LEVELS`` deep);
- :mod:`blocklist_addon.urls.embedded.depth`: where a candidate ends and what its ``?``, ``#``
  and ``+`` mean, from how deeply each was percent-encoded;
- :mod:`blocklist_addon.urls.embedded.dots`: the candidates read again with dot segments
  resolved.

Google Translate's proxy host (``listed-example.translate.goog``) is read by the matcher.

Bound: no marker is skipped, and work is linear. A candidate is cut at
``MAX_CANDIDATE_CHARS`` and where the ``MARKER_WINDOW``-th marker after its own begins: a
listed URL does not hold eight markers of its own, so the cut never reaches its host, path
or query. Padding an embedded URL's path with segments that hold markers and are removed
again (``/www.a/../`` repeated) would reach it, so when a window or the length cap could
cut, the candidates are also read from the text with its dot segments resolved, where the
window and the cap count only what is left (:func:`embedded_dots.emit_resolved`). An input
of n characters gives at most ``4 * n`` candidates (a marker takes at least 3 characters
and yields at most six candidates, and six more from the resolved text); the raw ones hold at
most ``6 * MARKER_WINDOW * n`` characters in all, the resolved ones at most about
``MARKER_WINDOW + 1`` times as many again (three times that where bytes >= 0x80 are
written as %XX). ``bench/adversarial.py`` times the adversarial set of the tests: at most
about 45 ms for a 64 KiB URL here, and ``Blocklist.match`` up to about 90 ms (every suffix of
every candidate's host looked up); a URL with no marker takes about 0.5 us.

Not found: a host as a path segment written other than as a name or dotted IPv4 (a number,
``/3221225991/``, is a path segment everywhere); base64 that does not begin at a value or
segment or whose URL does not begin with its scheme; the exact query of an entry behind
more than ``MARKER_WINDOW`` path segments each padded with removed markers.
"""

from __future__ import annotations

from blocklist_addon.urls.canonical import as_byte_string, unescape, unescape_by_level
from blocklist_addon.urls.embedded.decode import decoded_urls
from blocklist_addon.urls.embedded.depth import (
    LEVEL_TABLES,
    ascii_candidate,
    candidate_ends,
    depth_of,
    emit_candidates,
)
from blocklist_addon.urls.embedded.dots import DOT_DOT, HostKey, emit_resolved
from blocklist_addon.urls.embedded.markers import (
    ENCODINGS,
    LEADS,
    MARKER,
    MARKER_WINDOW,
    MAX_CANDIDATE_CHARS,
    PLAIN,
    SKIP_OUTER,
)

__all__ = ["MARKER_WINDOW", "MAX_CANDIDATE_CHARS", "HostKey", "embedded_urls"]

#: A URL decoded from base64, hex or Proofpoint's encoding is searched again, this deep.
MAX_DECODED_LEVELS = 2


def embedded_urls(url: str, *, host_key: HostKey | None = None) -> list[str]:
    """URLs embedded in `url` (not including `url` itself), in order of first appearance,
    without duplicates, each an ASCII string for canonical.parse(). Never raises.

    ``host_key`` (the matcher's) tells what a candidate's host, as written with its scheme,
    matches in the list; it lets candidates that would share one long resolved tail be
    built once per key instead of once per host (see :func:`embedded_dots.emit_resolved`)."""
    if not isinstance(url, (str, bytes)):
        return []
    raw = url if isinstance(url, str) and url.isascii() else as_byte_string(url)
    if PLAIN.fullmatch(raw):
        return []
    found: dict[str, None] = {}
    _candidates(found, raw, host_key, MAX_DECODED_LEVELS)
    return list(found)


def _candidates(found: dict[str, None], raw: str, host_key: HostKey | None, levels: int) -> None:
    text = unescape(raw) if "%" in raw else raw
    if "\t" in text or "\n" in text or "\r" in text:
        text = _drop_newlines(text)  # browsers drop them anywhere in a URL ("ht%09tp://")
    if text != raw and PLAIN.fullmatch(text):
        return
    outer_end = SKIP_OUTER.match(text).end()
    markers = list(MARKER.finditer(text, outer_end))
    if not markers:
        return
    if any(m.lastgroup in ENCODINGS for m in markers):
        encoded = [m for m in markers if m.lastgroup in ENCODINGS]
        markers = [m for m in markers if m.lastgroup not in ENCODINGS]
        for decoded in decoded_urls(text, encoded, outer_end) if levels else ():
            # A URL in base64, hex or Proofpoint's encoding: itself, and what it embeds.
            candidate = decoded[:MAX_CANDIDATE_CHARS]
            found.setdefault(candidate if candidate.isascii() else ascii_candidate(candidate))
            if not PLAIN.fullmatch(decoded):
                _candidates(found, decoded, host_key, levels - 1)
        if not markers:
            return
    # The same text with encoded structural characters as stand-ins (embedded_depth); a plain
    # comparison tells whether any was: the stand-ins are outside latin-1.
    tagged = _drop_newlines(unescape_by_level(raw, LEVEL_TABLES)) if "%" in raw else text
    tags = tagged != text
    query_at = tagged.find("?")  # the outer URL's own query (a raw "?")
    starts = [
        m.end("cache") if m.lastgroup == "cache" else m.start() + (text[m.start()] in LEADS)
        for m in markers
    ]
    depths = [(0, 0)] * len(starts)
    for i, start in enumerate(starts):
        limit = min(len(text), start + MAX_CANDIDATE_CHARS)
        if i + MARKER_WINDOW < len(starts):
            limit = min(limit, starts[i + MARKER_WINDOW])
        # c: how deeply the container (the "=" or "/" before the marker) was encoded;
        # d: the embedded URL's own structure (its "://", or the "/" after its host), at
        # least as deep.
        c = d = 0
        if tags:
            c = depth_of(tagged[start - 1])
            end = markers[i].end()
            d = max(
                [c, *map(depth_of, tagged[start : min(end, start + 16)] + tagged[end : end + 1])]
            )
            depths[i] = (c, d)
            ends = candidate_ends(tagged, start, limit, c, d, query_at)
        else:  # candidate_ends() with c = d = 0, inline: hostile input has a marker every 3 chars
            in_path = start < query_at or query_at < 0
            amp = text.find("&", start if query_at < 0 or not in_path else query_at, limit)
            ends = [limit] if amp == -1 else [limit, amp]
            if start < query_at < limit:
                ends.append(query_at)
        emit_candidates(found, text, tagged, tags, start, ends, c, d, query_at)
    if (len(starts) > MARKER_WINDOW or len(text) > MAX_CANDIDATE_CHARS) and DOT_DOT.search(
        text, outer_end
    ):
        emit_resolved(found, text, tagged, tags, outer_end, starts, depths, query_at, host_key)


def _drop_newlines(s: str) -> str:
    return s.replace("\t", "").replace("\n", "").replace("\r", "")
