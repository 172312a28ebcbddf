"""URLs embedded in a URL: the target of a redirector, translator, archive or search URL.

A listed page fetched through ``http://r.example.net/?u=<listed URL>`` must be blocked too, so
the matcher checks every candidate found here as well as the URL itself. A false candidate
costs one lookup; a missed one is an evasion, so the rules err towards more candidates.

The URL is percent-unescaped with :func:`canonical.unescape_by_level` (to the fixpoint, so
any depth of encoding, noting how deeply each structural character was encoded), tabs and
newlines are dropped as browsers drop them, and every *marker* after the URL's own scheme
and host starts a candidate. Nested wrappers need no recursion: every level's marker is in
the same text.

- ``http:`` or ``https:`` (any case), with any run of ``/`` and ``\\`` or none
  (``https:host/``, ``http:3405803783/``: browsers read a host there), anywhere;
- ``www.`` (also ``www2.`` ...), anywhere, so also in a path: ``/web/2020/www.x.test/``;
- a host as a path segment followed by a path: ``host.tld``, dotted IPv4 or ``[IPv6]``,
  with an optional port. This is how AMP caches (``/c/s/<host>/<path>``, ``/i/s/``,
  ``/amp/s/``), image CDNs (``/<host>/<path>``), Thumbor (``/unsafe/<opts>/<host>/<path>``),
  media proxies (``/external/<sig>/https/<host>/<path>``), ``/proxy/<host>/`` and a
  protocol-relative URL in a path (``/out//host/``, ``/out/%2F%2Fhost``, ``/out/\\\\host``)
  carry a URL, on any host (their names vary, some are self-hosted). A host not followed
  by a path (``/tag/<host>``, a WHOIS page) is a mention, not a fetch: no candidate;
- at the start of a parameter value (after ``=``, ``?`` or ``&``, and any C0 controls and
  spaces browsers drop): ``//`` (protocol-relative, also ``\\\\`` and ``///``), Google's
  ``cache:`` operator, or a value that looks like a host followed by ``/ \\ ? # & :`` or the
  end. File names such as ``?file=report.pdf`` are candidates too: ``.zip`` and ``.mov`` are
  real TLDs, so there is no telling them apart. Such a candidate without a path is the
  host's root, which only an entry for the whole host matches.

Hosts may be written with the ideographic, full-width or halfwidth full stops that browsers
map to ``.``. A URL in another encoding is decoded, is a candidate itself, and is searched
again (``MAX_DECODED_LEVELS`` deep): base64 or base64url as a parameter value or path
segment (found by the base64 of ``http:/`` or ``https:``, any case), hex (camo, ``687474``
...), Proofpoint URL Defense v2 (``u=http-3A__host_path``) and v3 (``__http://host/path
__;<moved characters>!!``, its ``*`` replaced). Google Translate's proxy host
(``listed-example.translate.goog``) is read by the matcher.

Where an embedded URL ends, and what its ``?``, ``#`` and ``+`` mean, follows from how deeply
each was percent-encoded compared with the marker's container (the ``=`` or ``/`` before it,
depth c) and the embedded URL's own ``://`` (depth d >= c):

- An ``&`` encoded less deeply than the container ends the candidate (a parameter of an
  outer wrapper). One encoded as deeply as the container separates the container's
  parameters: when d > c the embedded URL was encoded as a whole, so that ``&`` is where it
  ends and its own ``&`` (encoded deeper) are kept, ``?u=http%3A%2F%2Fa.test%2Fv%3Fid%3D1
  %26p%3D2&x=3`` is ``http://a.test/v?id=1&p=2``; when d = c both readings are candidates.
  Deeper ones belong to the embedded URL. In the outer path an ``&`` separates nothing, and
  the outer query may belong to the embedded URL or not: both readings.
- A ``?`` or ``#`` encoded deeper than d is a character of the embedded URL's path, and is
  written escaped (``%3F``, ``%23``) so that canonicalization keeps it there.
- A ``+`` in a query value encoded less deeply than d (or as deeply as the container) is a
  space to a form decoder; the candidate with spaces is added.

A marker yields at most three ends, each with and without the form-decoded spaces.

Bound: no marker is skipped, and work is linear. A candidate is cut at
``MAX_CANDIDATE_CHARS`` and where the ``MARKER_WINDOW``-th marker after its own begins: a
listed URL does not hold eight markers of its own, so the cut never reaches its host, path
or query. Padding an embedded URL's path with segments that hold markers and are removed
again (``/www.a/../`` repeated) would reach it, so when a window or the length cap could
cut, the candidates are also read from the text with its dot segments resolved, where the
window and the cap count only what is left (:func:`_emit_resolved`). An input of n
characters gives at most ``4 * n`` candidates (a marker takes at least 3 characters and
yields at most six candidates, and six more from the resolved text); the raw ones hold at
most ``6 * MARKER_WINDOW * n`` characters in all, the resolved ones at most about
``MARKER_WINDOW + 1`` times as many again (three times that where bytes >= 0x80 are
written as %XX). Measured in CPython 3.13: a 64 KiB adversarial URL takes at most about 25
ms here, and the matcher's parse() of its candidates up to 100 ms more; a URL with no
marker takes about 0.5 us.

Not found: a host as a path segment written other than as a name or dotted IPv4 (a number,
``/3221225991/``, is a path segment everywhere); base64 that does not begin at a value or
segment or whose URL does not begin with its scheme; the exact query of an entry behind
more than ``MARKER_WINDOW`` path segments each padded with removed markers.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import itertools
import re
import string
import urllib.parse
from collections.abc import Callable, Hashable

from blocklist_addon.canonical import as_byte_string, unescape, unescape_by_level

__all__ = ["MARKER_WINDOW", "MAX_CANDIDATE_CHARS", "HostKey", "embedded_urls"]

#: No candidate is longer (browsers and servers refuse longer URLs anyway) ...
MAX_CANDIDATE_CHARS = 8192
#: ... or runs past where this many further markers begin, so total output stays linear.
MARKER_WINDOW = 8
#: A URL decoded from base64, hex or Proofpoint's encoding is searched again, this deep.
MAX_DECODED_LEVELS = 2

# The URL's own scheme and host, which are not embedded in it.
_OUTER = r"(?:[A-Za-z][A-Za-z0-9+.\-]*+:)?+[/\\]*+[^/\\?#%=&]*+"
# A host as a bare value or path segment: a name with a TLD (dots may be the ideographic,
# full-width or halfwidth full stops browsers map to "."), dotted IPv4, or bracketed IPv6.
_DOT = r"(?:\.|\xe3\x80\x82|\xef\xbc\x8e|\xef\xbd\xa1)"
_LABEL = rf"(?:[a-zA-Z0-9_\-]++|(?!{_DOT})[\x80-\xff])++"
_TLD = rf"(?:[a-zA-Z]{{2,63}}|[xX][nN]--[a-zA-Z0-9\-]{{1,59}}|(?:(?!{_DOT})[\x80-\xff]){{2,}})"
_HOST = (
    rf"(?:(?:{_LABEL}{_DOT})+{_TLD}{_DOT}?"
    r"|(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
    r"|\[[0-9a-fA-F:.]{2,45}\])"
)
# The first characters of "http:/" and "https:" (any case) in base64 and in hex: where an
# encoded URL may begin (at a parameter value or path segment).
_B64_SCHEMES = sorted(
    {
        base64.b64encode("".join(chars).encode()).decode()
        for scheme in ("http:/", "https:")
        for chars in itertools.product(*({c.lower(), c.upper()} for c in scheme))
    }
)
_HEX_SCHEME = r"[46]8[57]4[57]4[57]0(?:[57]3)?3[aA]2[fF]"
_HTTP = r"[hH][tT][tT][pP][sS]?:"
_REST_OF_HOST = r"[^/\\?#&]*+"
# (Case spelled out: re.IGNORECASE makes this search twice as slow.)
_B64 = r"(?=[aS][HF]R)(?P<b64%s>(?:" + "|".join(_B64_SCHEMES) + r")[A-Za-z0-9+/_\-]*+=*+)"
_HEXED = r"(?P<hex%s>" + _HEX_SCHEME + r"(?:[0-9a-fA-F]{2})*+)"
# Alternatives grouped by their first character, so that a position is tried once.
_MARKER = re.compile(
    # after "/" or "\": a URL in base64, base64url or hex (camo); or a host as a path
    # segment followed by a path: "/c/s/<host>/<path>" (AMP caches), "/unsafe/300x200/
    # <host>/<path>" (Thumbor), "/external/<sig>/https/<host>/<path>", "/proxy/<host>/",
    # "//<host>/" (protocol-relative); a mere mention ("/tag/<host>") is not one
    r"[/\\](?:"
    + _B64 % ""
    + "|"
    + _HEXED % ""
    + rf"|{_HOST}(?::[0-9]{{1,5}})?(?=[/\\]))"
    # at the start of a parameter value: the same encodings, Proofpoint URL Defense v2
    # ("u=http-3A__host_path"), and after leading C0 controls and spaces (which browsers
    # drop) protocol-relative, a host, or Google's cache: operator
    + r"|[=?&](?:"
    + _B64 % "_v"
    + "|"
    + _HEXED % "_v"
    + r"|(?P<pp2>[hH][tT][tT][pP][sS]?-3[aA]__[^&#\s]*+)"
    + r"|[\x00-\x20]*+(?:[/\\]{2,}+"
    + _REST_OF_HOST
    + rf"|{_HOST}(?=[/\\?#&:]|\Z)"
    + rf"|(?P<cache>[cC][aA][cC][hH][eE]:)(?:{_HOST}|(?={_HTTP}))))"
    # Proofpoint URL Defense v3 ("__http://host/path__;<replaced>!!"), a scheme as well
    + rf"|(?P<pp3>__)(?={_HTTP})"
    # a scheme, with or without slashes ("https:host/", "http:3405803783/"), and its host
    + "|"
    + _HTTP
    + r"(?:[/\\]++|(?=[a-zA-Z0-9\[]))"
    + _REST_OF_HOST
    + r"|[wW]{3}[0-9]{0,3}"
    + _DOT  # anywhere: "/web/2020/www.x.test/"
)
# Where a marker's candidate begins: after its "/", "=", "?" or "&" (or "cache:").
_LEADS = frozenset("/\\=?&")
_ENCODINGS = frozenset({"b64", "b64_v", "hex", "hex_v", "pp2", "pp3"})
_SKIP_OUTER = re.compile(_OUTER)
# Matches only strings in which _MARKER finds nothing after the outer host: the
# common case, decided by one fullmatch, several times cheaper than a _MARKER search. It
# may refuse more than it must (a refused URL takes the full search).
_PLAIN = re.compile(
    _OUTER
    + r"""(?:
        [^:wW=?&%./\\\[\t\n\r\x80-\xff]++  # characters that start nothing
      | [=?&](?![aS][HF]R|[46]8[57]4|[hH][tT][tT][pP][sS]?-  # a parameter value that
          |[\x00-\x20]*+(?:[/\\]|[a-zA-Z0-9_\-]++\.[a-zA-Z0-9_\-.]*?[a-zA-Z]  # starts no
                         |[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]))  # host, no "/" ...
          [^=?&#%/\\:wW\[\t\n\r\x80-\xff]*+(?![/\\%\[\x80-\xff])
      | [wW](?![wW])  # a "w" that does not start "ww"
      | (?<![pPsSeE]):  # a ":" that does not end "http", "https" or "cache"
      | \.(?![a-zA-Z][a-zA-Z0-9\-]*+\.?(?::[0-9]*+)?[/\\])  # not a TLD before a "/"
      | [/\\](?!(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]*+)?[/\\]|[aS][HF]R|[46]8[57]4)
    )*+""",
    re.VERBOSE,
)
_PP3_END = re.compile(r"__;([A-Za-z0-9_\-]*)!")
_HIGH_BYTES = re.compile(r"[\x80-\xff]+")

# -- encoding depth -----------------------------------------------------------------------
#
# Where an embedded URL ends, and what its "?" and "#" mean, depends on how many times each
# character was percent-encoded: in ``?u=http%3A%2F%2Fa.test%2Fv%3Fid%3D1%26p%3D2&x=3`` the
# "&" from "%26" belongs to the embedded URL, the raw one to the outer URL. Unescaping
# writes each structural character decoded in pass k as a stand-in outside latin-1 that
# records k (its depth); the raw ones keep depth 0. Depths from _DEEPEST on are not told
# apart (seven wrappers, each encoding the last once more).

_KINDS = "&?#+/\\:="
_DEEPEST = 7
_HEX = {f"{a}{b}": chr(int(a + b, 16)) for a in string.hexdigits for b in string.hexdigits}


def _tag(char: str, depth: int) -> str:
    return char if depth == 0 else chr(0x100 + 16 * _KINDS.index(char) + depth)


def _depth(char: str) -> int:
    code = ord(char)
    return (code - 0x100) & 15 if code >= 0x100 else 0


_LEVEL_TABLES = [
    {pair: _tag(char, depth) if char in _KINDS else char for pair, char in _HEX.items()}
    for depth in range(1, _DEEPEST + 1)
]
#: For a candidate whose own structure is at depth d: a "?" or "#" encoded deeper is a
#: character of its path, written escaped; everything else is itself.
_RENDER = [
    {
        ord(_tag(char, depth)): char if depth <= d else {"?": "%3F", "#": "%23"}.get(char, char)
        for char in _KINDS
        for depth in range(1, _DEEPEST + 1)
    }
    for d in range(_DEEPEST + 1)
]


@functools.cache
def _form_spaces(lo: int, hi: int) -> dict[int, str]:
    """A "+" encoded lo to hi times, which a form decoder turns into a space."""
    return {ord(_tag("+", depth)): " " for depth in range(lo, min(hi, _DEEPEST) + 1)}


@functools.cache
def _pluses(lo: int, hi: int) -> re.Pattern[str]:
    return re.compile("[" + "".join(map(chr, _form_spaces(lo, hi))) + "]")


_AMP = [_tag("&", depth) for depth in range(_DEEPEST + 1)]
_DOT_DOT = re.compile(r"[/\\]\.\.(?=[/\\]|\Z)")
_SEPARATOR = re.compile(r"[/\\]")
# A candidate's scheme and host: where its path (or query) begins.
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?[/\\\x00-\x20]*[^/\\?#]*")
#: A "?" or "#" encoded deeper than d.
_DEEP_MARKS = [
    re.compile("[" + "".join(_tag(ch, k) for ch in "?#" for k in range(d + 1, _DEEPEST + 1)) + "]")
    if d < _DEEPEST
    else re.compile("(?!)")
    for d in range(_DEEPEST + 1)
]


#: A host key: which listed hosts a candidate's host falls under (None: no listed one).
HostKey = Callable[[str], Hashable | None]


def embedded_urls(url: str, *, host_key: HostKey | None = None) -> list[str]:
    """URLs embedded in `url` (not including `url` itself), in order of first appearance,
    without duplicates, each an ASCII string for canonical.parse(). Never raises.

    ``host_key`` (the matcher's) tells what a candidate's host, as written with its scheme,
    matches in the list; it lets candidates that would share one long resolved tail be
    built once per key instead of once per host (see :func:`_emit_resolved`)."""
    if not isinstance(url, (str, bytes)):
        return []
    raw = url if isinstance(url, str) and url.isascii() else as_byte_string(url)
    if _PLAIN.fullmatch(raw):
        return []
    found: dict[str, None] = {}
    _candidates(found, raw, host_key, MAX_DECODED_LEVELS)
    return list(found)


def _candidates(found: dict[str, None], raw: str, host_key: HostKey | None, levels: int) -> None:
    text = unescape(raw) if "%" in raw else raw
    if "\t" in text or "\n" in text or "\r" in text:
        text = _drop_newlines(text)  # browsers drop them anywhere in a URL ("ht%09tp://")
    if text != raw and _PLAIN.fullmatch(text):
        return
    outer_end = _SKIP_OUTER.match(text).end()
    markers = list(_MARKER.finditer(text, outer_end))
    if not markers:
        return
    if any(m.lastgroup in _ENCODINGS for m in markers):
        encoded = [m for m in markers if m.lastgroup in _ENCODINGS]
        markers = [m for m in markers if m.lastgroup not in _ENCODINGS]
        for decoded in _decoded(text, encoded, outer_end) if levels else ():
            # A URL in base64, hex or Proofpoint's encoding: itself, and what it embeds.
            candidate = decoded[:MAX_CANDIDATE_CHARS]
            found.setdefault(candidate if candidate.isascii() else _ascii(candidate))
            if not _PLAIN.fullmatch(decoded):
                _candidates(found, decoded, host_key, levels - 1)
        if not markers:
            return
    # The same text with encoded structural characters as stand-ins (see above); a plain
    # comparison tells whether any was: the stand-ins are outside latin-1.
    tagged = _drop_newlines(unescape_by_level(raw, _LEVEL_TABLES)) if "%" in raw else text
    tags = tagged != text
    query_at = tagged.find("?")  # the outer URL's own query (a raw "?")
    starts = [
        m.end("cache") if m.lastgroup == "cache" else m.start() + (text[m.start()] in _LEADS)
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
            c = _depth(tagged[start - 1])
            end = markers[i].end()
            d = max([c, *map(_depth, tagged[start : min(end, start + 16)] + tagged[end : end + 1])])
            depths[i] = (c, d)
            ends = _ends(tagged, start, limit, c, d, query_at)
        else:  # _ends() with c = d = 0, inline: hostile input has a marker every 3 chars
            in_path = start < query_at or query_at < 0
            amp = text.find("&", start if query_at < 0 or not in_path else query_at, limit)
            ends = [limit] if amp == -1 else [limit, amp]
            if start < query_at < limit:
                ends.append(query_at)
        _emit(found, text, tagged, tags, start, ends, c, d, query_at)
    if (len(starts) > MARKER_WINDOW or len(text) > MAX_CANDIDATE_CHARS) and _DOT_DOT.search(
        text, outer_end
    ):
        _emit_resolved(found, text, tagged, tags, outer_end, starts, depths, query_at, host_key)


def _decoded(text: str, encoded: list[re.Match[str]], begin: int) -> list[str]:
    """The URLs that _MARKER found written in base64 or base64url, hex or Proofpoint's
    encodings in ``text``, each decoded to a byte string (latin-1 characters)."""
    out: list[str] = []
    pp3_ends: list[re.Match[str]] = []
    pp3_at: list[int] | None = None
    last_end = -1
    for m in encoded:
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind.startswith("b64"):
            # Also up to the first "/": base64url in a path, with more segments after it.
            for run in {value, value.split("/", 1)[0]}:
                if (url := _from_base64(run)) is not None:
                    out.append(url)
        elif kind.startswith("hex"):
            out.append(bytes.fromhex(value).decode("latin-1"))
        elif kind == "pp2":
            # "-" escapes as "%" does, "_" is "/"; unquoted once, as Proofpoint's decoder does
            out.append(urllib.parse.unquote(value.replace("-", "%").replace("_", "/"), "latin-1"))
        else:
            if pp3_at is None:
                pp3_ends = list(_PP3_END.finditer(text, begin))
                pp3_at = [e.start() for e in pp3_ends]
            start = m.end("pp3")
            k = bisect.bisect_left(pp3_at, start)
            if k < len(pp3_ends) and pp3_ends[k].start() != last_end:
                end = pp3_ends[k]
                last_end = end.start()
                out.append(_proofpoint_v3(text[start : end.start()], end.group(1)))
    return out


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


def _emit(
    found: dict[str, None],
    text: str,
    tagged: str,
    tags: bool,
    start: int,
    ends: list[int],
    c: int,
    d: int,
    query_at: int,
) -> None:
    """Add the candidates from ``start`` to each of ``ends``, written for canonical.parse()."""
    # A form decoder reads "+" as a space (urlencode() and HTML forms write "my file.html"
    # as "my+file.html"): a "+" encoded less deeply than the URL's own structure (a literal
    # one is encoded with it, as "%2B"), or as deeply as a container that is a parameter
    # value; never a raw one in the outer path.
    in_query = start > query_at >= 0
    value = start and (text[start - 1] in "=?&" or (c == 0 and in_query))
    spaces = (0 if in_query else 1, max(d - 1, c if value else -1))
    # The container decodes its value once before it uses it (a redirector reads its query
    # parameter), so a "?" or "#" encoded one level deeper than the container is the
    # embedded URL's own too, even where its "://" was not encoded: both readings.
    levels = (d,) if c + 1 <= d or not tags else (d, min(c + 1, _DEEPEST))
    for end in ends:
        for level in levels:
            candidate = text[start:end]
            if tags and _DEEP_MARKS[level].search(tagged, start, end):
                candidate = tagged[start:end].translate(_RENDER[level])
            candidates = [candidate]
            if spaces[0] <= spaces[1] and "+" in candidate:
                if not tags:
                    candidates.append(candidate.replace("+", " "))
                elif _pluses(*spaces).search(tagged, start, end):
                    piece = tagged[start:end].translate(_form_spaces(*spaces))
                    candidates.append(piece.translate(_RENDER[level]))
            for candidate in candidates:
                found.setdefault(candidate if candidate.isascii() else _ascii(candidate))


def _emit_resolved(
    found: dict[str, None],
    text: str,
    tagged: str,
    tags: bool,
    outer_end: int,
    starts: list[int],
    depths: list[tuple[int, int]],
    query_at: int,
    host_key: HostKey | None,
) -> None:
    """Candidates read from the text with its dot segments resolved, where the window and
    the length cap count what is left.

    Padding an embedded URL's path with segments that hold markers and are removed again
    (``/www.a/../`` eight times) would otherwise cut every candidate before the listed
    path. One stack pass over the segments after the outer host finds every segment a
    later ``..`` removes; a candidate's own resolution (from its host on) removes exactly
    these, as a segment before its host is never above one of its own on the stack. Each
    candidate is its marker's scheme and host as written, then the resolved text after
    them: so one whose host a ``..`` removes (which is a no-op at the root of its own
    path) still reads right. The raw candidates stay as well: the resolved text also
    removes dot segments in queries, which canonicalization would not.

    Markers inside removed segments all continue with the same resolved tail, which may be
    long: built for each of m such hosts that would be m times its length. So they are
    built once per ``host_key`` and tail (hosts under no listed host are not built, as they
    cannot match), or, with no ``host_key``, for at most ``MARKER_WINDOW`` hosts per tail.
    """
    removed = _removed_segments(text, outer_end)
    if not removed:
        return
    kept_text, kept_tagged, shift = [], [], [0]
    at = 0
    for begin, end in removed:
        kept_text.append(text[at:begin])
        kept_tagged.append(tagged[at:begin])
        shift.append(shift[-1] + end - begin)
        at = end
    kept_text.append(text[at:])
    kept_tagged.append(tagged[at:])
    r_text, r_tagged = "".join(kept_text), "".join(kept_tagged)
    begins = [begin for begin, _ in removed]

    def resolved(position: int) -> tuple[int, bool]:
        """Where ``position`` lands in the resolved text, and whether it was removed."""
        k = bisect.bisect_right(begins, position) - 1
        if k >= 0 and position < removed[k][1]:
            return removed[k][0] - shift[k], True
        return position - shift[k + 1], False

    where = [resolved(start) for start in starts]
    host_ends = [_AUTHORITY.match(text, start).end() for start in starts]
    for i in range(len(starts) - 1):
        host_ends[i] = min(host_ends[i], starts[i + 1])
    tails = [resolved(end)[0] for end in host_ends]
    live = [r for r, gone in where if not gone]
    # A removed host's tail is cut where MARKER_WINDOW further live markers or groups of
    # removed hosts (each with its own tail) begin, so each resolved character is in the
    # tails of at most MARKER_WINDOW + 1 groups.
    groups = sorted({tail for (_, gone), tail in zip(where, tails, strict=True) if gone})
    events = sorted(live + groups)
    r_query, query_gone = resolved(query_at) if query_at >= 0 else (-1, False)
    seen: dict[int, set[Hashable]] = {}  # resolved tail -> keys of removed hosts built
    for i, start in enumerate(starts):
        host_end, r_from = host_ends[i], tails[i]
        if where[i][1]:
            k = bisect.bisect_right(events, r_from) + MARKER_WINDOW - 1
            cut = events[k] if k < len(events) else len(r_text)
            keys = seen.setdefault(r_from, set())
            if host_key is not None:
                key = host_key(text[start:host_end])
                if key is None or key in keys:
                    continue
            else:
                key = text[start:host_end].lower()
                if key in keys or len(keys) >= MARKER_WINDOW:
                    continue
            keys.add(key)
        else:
            k = bisect.bisect_left(live, r_from) + MARKER_WINDOW - 1
            cut = live[k] if k < len(live) else len(r_text)
        head = host_end - start
        r_to = min(cut, r_from + MAX_CANDIDATE_CHARS - head)
        before = 1 if start else 0  # the container's character, which _ends() may read
        piece_text = text[start - before : host_end] + r_text[r_from:r_to]
        piece_tagged = tagged[start - before : host_end] + r_tagged[r_from:r_to]
        if query_at < 0 or query_gone:
            q = -1
        elif query_at < start:
            q = 0  # before the candidate: it is in the outer query
        else:
            q = before + head + r_query - r_from
        c, d = depths[i]
        ends = _ends(piece_tagged, before, len(piece_tagged), c, d, q)
        _emit(found, piece_text, piece_tagged, tags, before, ends, c, d, q)


def _drop_newlines(s: str) -> str:
    return s.replace("\t", "").replace("\n", "").replace("\r", "")


def _removed_segments(text: str, begin: int) -> list[tuple[int, int]]:
    """The spans that resolving dot segments removes from ``text[begin:]``, in order, none
    inside another: ``/segment/..`` (with whatever they enclose; the last one keeps its
    "/"), and, where another segment follows, ``/.``, empty segments and a ``..`` with
    nothing left to remove (no-ops everywhere, removed so that they part nothing)."""
    stack: list[int] = []  # where each segment still on the stack begins (its separator)
    removed: list[tuple[int, int]] = []
    separators = [m.start() for m in _SEPARATOR.finditer(text, begin)]
    last = len(separators) - 1
    for n, sep in enumerate(separators):
        end = separators[n + 1] if n < last else len(text)
        segment = text[sep + 1 : end]
        if segment == ".." and stack:
            top = stack.pop()
            while removed and removed[-1][0] >= top:
                removed.pop()
            removed.append((top if n < last else top + 1, end))
        elif segment in ("..", ".", ""):
            if n < last:
                removed.append((sep, end))
        else:
            stack.append(sep)
    return removed


def _ends(tagged: str, start: int, limit: int, c: int, d: int, query_at: int) -> list[int]:
    """Where the candidate at ``start`` may end (its container depth ``c``, its own ``d``).

    An "&" encoded less deeply than the container separates the container's container's
    parameters: a hard end. One encoded exactly as deeply as the container separates the
    container's parameters: where an embedded URL encoded more deeply than its container
    surely ends (its own "&" are encoded deeper), and otherwise one reading of two.
    Inside the outer path, the outer query may be the embedded URL's own or not.
    """
    for k in range(c):
        at = tagged.find(_AMP[k], start, limit)
        if at != -1:
            limit = at
    in_path = c == 0 and (query_at < 0 or start < query_at)
    amp = tagged.find(_AMP[c], start if not in_path or query_at < 0 else query_at, limit)
    if d > c and not in_path:
        ends = [limit if amp == -1 else amp]
    else:
        ends = [limit] if amp == -1 else [limit, amp]
    if start < query_at < limit:
        ends.append(query_at)
    return ends


def _ascii(candidate: str) -> str:
    """parse() takes a non-ASCII str for text and UTF-8-encodes it; bytes written as %XX
    reach it as the same bytes."""
    return _HIGH_BYTES.sub(lambda m: "%" + m.group().encode("latin-1").hex("%").upper(), candidate)
