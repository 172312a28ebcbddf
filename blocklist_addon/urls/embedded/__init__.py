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
  each a candidate itself and searched again, to any depth while the decoded text stays
  within ``DECODE_BUDGET`` times the input;
- :mod:`blocklist_addon.urls.embedded.depth`: where a candidate ends and what its ``?``, ``#``
  and ``+`` mean, from how deeply each was percent-encoded;
- :mod:`blocklist_addon.urls.embedded.dots`: the candidates read again with dot segments
  resolved;
- :mod:`blocklist_addon.urls.embedded.mentions`: a host in another site's path that the page
  only names (``/tag/<host>/``), which starts no candidate.

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
written as %XX). A candidate that the window or the cap cuts inside its host is dropped: what
is left is no host. ``bench/adversarial.py`` times the adversarial set of the tests: at most
about 40 ms for a 64 KiB URL on a loaded machine here (user info, dot-padded; ideographic
hosts 23 ms, 52 ms when each candidate's bytes >= 0x80 were written as %XX by itself),
``tests/test_embedded_bounds.py`` bounds the calls the search makes for them (a byte, and
what bytes >= 0x80 add) and ``tests/test_matcher_bounds.py`` the lookups ``Blocklist.match``
makes; a URL with no marker takes about 0.5 us.

Not found: a host as a path segment written other than as a name or dotted IPv4 (a number,
``/3221225991/``, is a path segment everywhere); base64 that does not begin at a value or
segment or whose URL does not begin with its scheme; the exact query of an entry behind
more than ``MARKER_WINDOW`` path segments each padded with removed markers.
"""

from __future__ import annotations

import itertools
import re

from blocklist_addon.urls.canonical import as_byte_string, unescape, unescape_by_level
from blocklist_addon.urls.embedded.decode import decoded_urls
from blocklist_addon.urls.embedded.depth import (
    LEVEL_TABLES,
    AsciiSlices,
    JoinedSlices,
    ascii_candidate,
    candidate_ends,
    deepest,
    depth_of,
    emit_candidates,
    path_parameter_end,
    user_info,
)
from blocklist_addon.urls.embedded.dots import DOT_DOT, HostKey, emit_resolved
from blocklist_addon.urls.embedded.markers import (
    ENCODINGS,
    LEADS,
    MARKER,
    MARKER_WINDOW,
    MAX_CANDIDATE_CHARS,
    SKIP_OUTER,
    is_plain,
)
from blocklist_addon.urls.embedded.mentions import is_mention, word_segments

__all__ = ["MARKER_WINDOW", "MAX_CANDIDATE_CHARS", "HostKey", "embedded_urls"]

#: A URL decoded from base64, hex or Proofpoint's encoding is searched again, to any depth,
#: while the text decoded so far is at most this many times the input (plus
#: ``DECODE_FLOOR``): base64 shrinks by a quarter a level, so any depth of nested base64
#: fits in 3 times; an encoding that shrinks less stops at the budget, not at a level.
DECODE_BUDGET = 4
DECODE_FLOOR = 4096


def embedded_urls(url: str, *, host_key: HostKey | None = None) -> list[str]:
    """URLs embedded in `url` (not including `url` itself), in order of first appearance,
    without duplicates, each an ASCII string for canonical.parse(). Never raises.

    ``host_key`` (the matcher's) tells what a candidate's host, as written with its scheme,
    matches in the list; it lets candidates that would share one long resolved tail be
    built once per key instead of once per host (see :func:`embedded_dots.emit_resolved`)."""
    return _search(url, host_key, whole_text=True)


def _search(url: str, host_key: HostKey | None, *, whole_text: bool) -> list[str]:
    """:func:`embedded_urls`; with ``whole_text=False`` each candidate is written in ASCII
    by itself (the reference for the tests: the same list, slower on high bytes)."""
    if not isinstance(url, (str, bytes)):
        return []
    raw = url if isinstance(url, str) and url.isascii() else as_byte_string(url)
    if is_plain(raw):
        return []
    found: dict[str, None] = {}
    pending = [raw]
    budget = DECODE_BUDGET * len(raw) + DECODE_FLOOR
    while pending and budget > 0:
        for decoded, search in _candidates(found, pending.pop(), host_key, whole_text):
            # A URL in base64, hex or Proofpoint's encoding: itself, and what it embeds.
            budget -= len(decoded)
            if budget < 0:
                break
            candidate = decoded[:MAX_CANDIDATE_CHARS]
            found.setdefault(candidate if candidate.isascii() else ascii_candidate(candidate))
            if search and not is_plain(decoded):
                pending.append(decoded)
    return list(found)


def _candidates(
    found: dict[str, None], raw: str, host_key: HostKey | None, whole_text: bool = True
) -> list[tuple[str, bool]]:
    """Add the candidates of ``raw`` to ``found``; return the URLs it holds in another
    encoding, decoded, for the caller to add and search in turn. ``whole_text``: write the
    candidates cut from the text in ASCII as slices of one conversion of it."""
    text = unescape(raw) if "%" in raw else raw
    if "\t" in text or "\n" in text or "\r" in text:
        text = _drop_newlines(text)  # browsers drop them anywhere in a URL ("ht%09tp://")
    if text != raw and is_plain(text):
        return []
    outer_end = SKIP_OUTER.match(text).end()
    markers = list(MARKER.finditer(text, outer_end))
    if any(map(_after_a_word, markers, itertools.repeat(text))) and (
        words := word_segments(text, outer_end)
    ):
        markers = [m for m in markers if not _named(text, m, words)]
    if not markers:
        return []
    decoded: list[tuple[str, bool]] = []
    if any(m.lastgroup in ENCODINGS for m in markers):
        encoded = [m for m in markers if m.lastgroup in ENCODINGS]
        markers = [m for m in markers if m.lastgroup not in ENCODINGS]
        decoded = decoded_urls(text, encoded, outer_end)
        if not markers:
            return decoded
    # The same text with encoded structural characters as stand-ins (embedded_depth); a plain
    # comparison tells whether any was: the stand-ins are outside latin-1.
    tagged = _drop_newlines(unescape_by_level(raw, LEVEL_TABLES)) if "%" in raw else text
    tags = tagged != text
    at_signs = tags and "@" in text
    query_at = tagged.find("?")  # the outer URL's own query (a raw "?")
    plain = "lain" in text or "LAIN" in text  # imgproxy's /plain/ (a regex search costs more)
    slices = AsciiSlices(text) if whole_text and not text.isascii() else None
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
            # (a "cache:" or "ssl:" marker's container is the "=" before it)
            c = depth_of(
                tagged[start - 1 if markers[i].lastgroup != "cache" else markers[i].start()]
            )
            end = markers[i].end()
            d = deepest(c, tagged[start : min(end, start + 16)] + tagged[end : end + 1])
            depths[i] = (c, d)
            if at_signs and (userinfo := user_info(text, tagged, start, end, limit, c)):
                _emit_without_user_info(
                    found, text, tagged, start, limit, userinfo, c, query_at, slices
                )
                continue
            ends = candidate_ends(tagged, start, limit, c, d, query_at)
            if (
                d > c
                and text[start - 1] == "="
                and (cut := path_parameter_end(text, tagged, start, limit, c)) is not None
            ):
                ends.append(cut)
        else:  # candidate_ends() with c = d = 0, inline: hostile input has a marker every 3 chars
            in_path = start < query_at or query_at < 0
            amp = text.find("&", start if query_at < 0 or not in_path else query_at, limit)
            ends = [limit] if amp == -1 else [limit, amp]
            if start < query_at < limit:
                ends.append(query_at)
        if limit < len(text) and limit in ends and _cut_in_host(tagged, start, limit):
            # The window or the length cap cuts this candidate inside its authority: what
            # is left of the host is no host (the text goes on), and a listed one never
            # holds MARKER_WINDOW markers or 8 KiB; its suffixes were each a lookup for
            # nothing ("a=h0.test&a=h1.test&..." made nine a value).
            ends = [end for end in ends if end != limit]
        if plain and text[start - 7 : start].lower() == "/plain/":
            # imgproxy's /plain/<URL>@<extension>: the extension is the output format
            ends += [at for end in ends if (at := _extension_at(text, start, end)) is not None]
        emit_candidates(found, text, tagged, tags, start, ends, c, d, query_at, slices)
    if (len(starts) > MARKER_WINDOW or len(text) > MAX_CANDIDATE_CHARS) and DOT_DOT.search(
        text, outer_end
    ):
        emit_resolved(
            found, text, tagged, tags, outer_end, starts, depths, query_at, host_key, slices
        )
    return decoded


_REST_OF_HOST = re.compile(r"[^/\\?#&=]*")
# A candidate's scheme, slashes and authority: where it ends before a delimiter, written or
# encoded (an encoded character's stand-in is outside latin-1), the host ends there.
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?[/\\\x00-\x20]*[^/\\?#\u0100-\U0010ffff]*")
_EXTENSION = re.compile(r"@[A-Za-z0-9]{1,10}\Z")


def _after_a_word(m: re.Match[str], text: str) -> bool:
    """Whether ``m`` may be a host named after a word (cheap: most URLs have none)."""
    at = m.start()
    if m.lastgroup is not None or at < 4:
        return False
    return text[at] in "wW" or (text[at] in "/\\" and text[at - 3 : at].isalpha())


def _named(text: str, m: re.Match[str], words: dict[int, str]) -> bool:
    """Whether a host at the start of a path segment (MARKER's host-as-segment or
    ``www.`` marker, told by their first character) is only named there (a tag page)."""
    if m.lastgroup is not None:
        return False
    first = text[m.start()]
    if first in "/\\":
        slash, host_end = m.start(), m.end()
    elif first in "wW":  # also inside a host: "/tag/www.www.listed.test"
        lo = max(0, m.start() - 256)
        slash = max(text.rfind("/", lo, m.start()), text.rfind("\\", lo, m.start()))
        if slash not in words or _REST_OF_HOST.match(text, slash + 1, m.start()).end() != m.start():
            return False  # not in the segment's host: after a "?", "&" or "="
        host_end = _REST_OF_HOST.match(text, m.end()).end()
    else:
        return False
    return slash in words and is_mention(text, slash, host_end, words)


def _cut_in_host(tagged: str, start: int, limit: int) -> bool:
    """Whether no delimiter (nor any encoded character) ends the authority of the candidate
    at ``start`` before ``limit``."""
    return _AUTHORITY.match(tagged, start, limit).end() == limit


def _extension_at(text: str, start: int, end: int) -> int | None:
    m = _EXTENSION.search(text, start, end)
    return None if m is None else m.start()


def _emit_without_user_info(
    found: dict[str, None],
    text: str,
    tagged: str,
    start: int,
    limit: int,
    userinfo: tuple[int, int],
    c: int,
    query_at: int,
    slices: AsciiSlices | None,
) -> None:
    """The candidate with its user info dropped: its scheme and slashes, then the text
    after the "@" (built from the window only, so the work stays linear)."""
    host, at = userinfo
    before = 1 if start else 0
    piece_text = text[start - before : host] + text[at + 1 : limit]
    piece_tagged = tagged[start - before : host] + tagged[at + 1 : limit]
    if query_at < 0 or query_at >= limit:
        q = -1
    elif query_at < start:
        q = 0  # before the candidate: it is in the outer query
    else:
        q = before + (host - start) + query_at - (at + 1)
    d = deepest(c, tagged[start:host])
    ends = candidate_ends(piece_tagged, before, len(piece_tagged), c, d, q)
    joined = None if slices is None else JoinedSlices(slices, start - before, host, slices, at + 1)
    emit_candidates(found, piece_text, piece_tagged, True, before, ends, c, d, q, joined)


def _drop_newlines(s: str) -> str:
    return s.replace("\t", "").replace("\n", "").replace("\r", "")
