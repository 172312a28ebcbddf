"""Encoding depth: how deeply each character was percent-encoded tells a candidate's ends.

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
"""

from __future__ import annotations

import functools
import itertools
import re
import string

__all__ = [
    "DEEPEST",
    "LEVEL_TABLES",
    "RENDER",
    "AsciiSlices",
    "JoinedSlices",
    "ascii_candidate",
    "candidate_ends",
    "deepest",
    "depth_of",
    "emit_candidates",
]

# Where an embedded URL ends, and what its "?" and "#" mean, depends on how many times each
# character was percent-encoded: in ``?u=http%3A%2F%2Fa.test%2Fv%3Fid%3D1%26p%3D2&x=3`` the
# "&" from "%26" belongs to the embedded URL, the raw one to the outer URL. Unescaping
# writes each structural character decoded in pass k as a stand-in outside latin-1 that
# records k (its depth); the raw ones keep depth 0. Depths from DEEPEST on are not told
# apart (seven wrappers, each encoding the last once more).

_KINDS = "&?#+/\\:="
DEEPEST = 7
_HEX = {f"{a}{b}": chr(int(a + b, 16)) for a in string.hexdigits for b in string.hexdigits}


def _tag(char: str, depth: int) -> str:
    return char if depth == 0 else chr(0x100 + 16 * _KINDS.index(char) + depth)


def depth_of(char: str) -> int:
    code = ord(char)
    return (code - 0x100) & 15 if code >= 0x100 else 0


class _Depths(dict[str, int]):
    def __missing__(self, char: str) -> int:
        return depth_of(char)


#: depth_of() of every character a tagged text holds (latin-1 and the stand-ins), looked up
#: in C: a hostile URL asks for about twenty a marker ("user info": 86,000 calls).
_DEPTHS = _Depths({chr(code): depth_of(chr(code)) for code in range(0x100 + 16 * len(_KINDS))})


def deepest(floor: int, chars: str) -> int:
    """``max(floor, *map(depth_of, chars))``."""
    return max([floor, *map(_DEPTHS.__getitem__, chars)])


LEVEL_TABLES = [
    {pair: _tag(char, depth) if char in _KINDS else char for pair, char in _HEX.items()}
    for depth in range(1, DEEPEST + 1)
]
#: For a candidate whose own structure is at depth d: a "?" or "#" encoded deeper is a
#: character of its path, written escaped; everything else is itself.
RENDER = [
    {
        ord(_tag(char, depth)): char if depth <= d else {"?": "%3F", "#": "%23"}.get(char, char)
        for char in _KINDS
        for depth in range(1, DEEPEST + 1)
    }
    for d in range(DEEPEST + 1)
]


@functools.cache
def _form_spaces(lo: int, hi: int) -> dict[int, str]:
    """A "+" encoded lo to hi times, which a form decoder turns into a space."""
    return {ord(_tag("+", depth)): " " for depth in range(lo, min(hi, DEEPEST) + 1)}


@functools.cache
def _pluses(lo: int, hi: int) -> re.Pattern[str]:
    return re.compile("[" + "".join(map(chr, _form_spaces(lo, hi))) + "]")


_AMP = [_tag("&", depth) for depth in range(DEEPEST + 1)]

#: A "?" or "#" encoded deeper than d.
_DEEP_MARKS = [
    re.compile("[" + "".join(_tag(ch, k) for ch in "?#" for k in range(d + 1, DEEPEST + 1)) + "]")
    if d < DEEPEST
    else re.compile("(?!)")
    for d in range(DEEPEST + 1)
]


def emit_candidates(
    found: dict[str, None],
    text: str,
    tagged: str,
    tags: bool,
    start: int,
    ends: list[int],
    c: int,
    d: int,
    query_at: int,
    slices: AsciiSlices | JoinedSlices | None = None,
) -> None:
    """Add the candidates from ``start`` to each of ``ends``, written for canonical.parse().

    ``slices`` (of ``text``) writes a candidate that is a slice of ``text`` as a slice of
    one conversion of the whole text; without it each candidate is converted by itself
    (:func:`ascii_candidate`, the reference: the same strings)."""
    # A form decoder reads "+" as a space (urlencode() and HTML forms write "my file.html"
    # as "my+file.html"): a "+" encoded less deeply than the URL's own structure (a literal
    # one is encoded with it, as "%2B"), or as deeply as a container that is a parameter
    # value; never a raw one in the outer path.
    in_query = start > query_at >= 0
    value = start and (text[start - 1] in "=?&" or (c == 0 and in_query))
    spaces = (0 if in_query else 1, max(d - 1, c if value else -1))
    if not tags:  # one level, nothing to render (hostile input has a marker every 3 chars)
        for end in ends:
            candidate = text[start:end]
            written = _written(candidate, start, end, slices)
            found.setdefault(written)
            if spaces[0] <= spaces[1] and "+" in candidate:
                if slices is None:  # the candidate with spaces, written by itself
                    spaced = candidate.replace("+", " ")
                    found.setdefault(spaced if spaced.isascii() else ascii_candidate(spaced))
                else:  # (ascii_candidate writes only bytes >= 0x80: it keeps "+" and " ")
                    found.setdefault(written.replace("+", " "))
        return
    # The container decodes its value once before it uses it (a redirector reads its query
    # parameter), so a "?" or "#" encoded one level deeper than the container is the
    # embedded URL's own too, even where its "://" was not encoded: both readings.
    levels = (d,) if c + 1 <= d else (d, min(c + 1, DEEPEST))
    for end in ends:
        for level in levels:
            if _DEEP_MARKS[level].search(tagged, start, end):
                candidate = tagged[start:end].translate(RENDER[level])
                written = candidate if candidate.isascii() else ascii_candidate(candidate)
            else:
                candidate = text[start:end]
                written = _written(candidate, start, end, slices)
            found.setdefault(written)
            if (
                spaces[0] <= spaces[1]
                and "+" in candidate
                and _pluses(*spaces).search(tagged, start, end)
            ):
                piece = tagged[start:end].translate(_form_spaces(*spaces))
                spaced = piece.translate(RENDER[level])
                found.setdefault(spaced if spaced.isascii() else ascii_candidate(spaced))


def candidate_ends(tagged: str, start: int, limit: int, c: int, d: int, query_at: int) -> list[int]:
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


_HIGH_BYTES = re.compile(r"[\x80-\xff]+")


def _written(
    candidate: str, start: int, end: int, slices: AsciiSlices | JoinedSlices | None
) -> str:
    """``candidate`` (``text[start:end]``) as written for the matcher: ASCII as it is, else
    its slice of the text converted once (``slices``), else converted by itself."""
    if candidate.isascii():
        return candidate
    if slices is not None:
        return slices.of(start, end)
    return ascii_candidate(candidate)


def ascii_candidate(candidate: str) -> str:
    """parse() takes a non-ASCII str for text and UTF-8-encodes it; bytes written as %XX
    reach it as the same bytes."""
    return _HIGH_BYTES.sub(_percent, candidate)


def _percent(m: re.Match[str]) -> str:
    return _percents(m.group())


def _percents(run: str) -> str:
    return "%" + run.encode("latin-1").hex("%").upper()


class _Runs(dict[str, str]):
    """Runs of bytes >= 0x80 as %XX, each distinct run written once."""

    def __missing__(self, run: str) -> str:
        written = self[run] = _percents(run)
        return written


_HIGH_RUNS = re.compile(r"([\x80-\xff]+)")


class AsciiSlices:
    """Slices of one text as :func:`ascii_candidate` writes them, each cut from one
    conversion of the whole text.

    A byte >= 0x80 of the text is in up to ``MARKER_WINDOW`` candidates (and their
    readings), and converting each candidate by itself costs Python calls for each run of
    such bytes in it: "/h\u3002test" repeated (an ideographic full stop in every host) made
    eight conversions of each run, two thirds of the whole search. Here the text is
    converted once, in a handful of calls however many runs it holds (the first time a
    candidate needs it), and a candidate is a slice of that: a byte >= 0x80 is written as
    three characters, any other character as itself."""

    __slots__ = ("_ascii", "_at", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._ascii = ""
        self._at: list[int] = []  # where each position of the text is in the conversion

    def of(self, start: int, end: int) -> str:
        """``ascii_candidate(text[start:end])``."""
        if not self._at:
            parts = _HIGH_RUNS.split(self._text)
            parts[1::2] = map(_Runs().__getitem__, parts[1::2])
            self._ascii = "".join(parts)
            # (a character above latin-1, which the text does not hold, would be itself)
            widths = self._text.encode("latin-1", "replace").translate(_WIDTHS)
            self._at = list(itertools.accumulate(widths, initial=0))
        return self._ascii[self._at[start] : self._at[end]]


_WIDTHS = bytes([1] * 0x80 + [3] * 0x80)


class JoinedSlices:
    """Slices of ``first``'s text from ``begin`` to ``middle`` followed by ``second``'s
    from ``second_begin`` on (a candidate built from two pieces: its user info dropped, or
    its host before a resolved path), as :func:`ascii_candidate` writes them."""

    __slots__ = ("_begin", "_first", "_middle", "_second", "_second_begin")

    def __init__(
        self, first: AsciiSlices, begin: int, middle: int, second: AsciiSlices, second_begin: int
    ) -> None:
        self._first, self._begin, self._middle = first, begin, middle
        self._second, self._second_begin = second, second_begin

    def of(self, start: int, end: int) -> str:
        """``ascii_candidate(joined[start:end])``."""
        cut = self._middle - self._begin
        if end <= cut:
            return self._first.of(self._begin + start, self._begin + end)
        at = self._second_begin - cut
        if start >= cut:
            return self._second.of(at + start, at + end)
        return self._first.of(self._begin + start, self._middle) + self._second.of(
            self._second_begin, at + end
        )


# -- where the embedded URL's own delimiters are, read at one depth ------------------------

_DELIMITERS = "/\\?#"
#: A delimiter that ends an authority or a path segment value, encoded at most r times.
_SHALLOW = [
    re.compile(
        "["
        + re.escape(_DELIMITERS)
        + "".join(_tag(ch, k) for ch in _DELIMITERS for k in range(1, r + 1))
        + "]"
    )
    for r in range(DEEPEST + 1)
]
_SEGMENT_ENDS = [
    re.compile("[/\\\\" + "".join(_tag(ch, k) for ch in "/\\" for k in range(1, c + 1)) + "]")
    for c in range(DEEPEST + 1)
]
_SCHEME_SLASHES = re.compile(r"(?:[hH][tT][tT][pP][sS]?:|[cC][aA][cC][hH][eE]:|[sS][sS][lL]:)?")
#: What may come between a scheme and its host: slashes, encoded or not, and C0 controls.
_SLASHES = frozenset("/\\\x00\x01\x02\x03\x04\x05\x06\x07\x08\t ") | frozenset(
    _tag(ch, k) for ch in "/\\" for k in range(1, DEEPEST + 1)
)
_PARAMETER_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def user_info(
    text: str, tagged: str, start: int, host_end: int, limit: int, c: int
) -> tuple[int, int] | None:
    """``(host, at)`` when the candidate's authority holds user info once read as a
    server reads it: ``?u=http://listed.test%252F@evil.test/``, decoded once by the
    redirector, is ``http://listed.test%2F@evil.test/``, whose host is evil.test (the
    "/" was encoded deeper than the container's value, so it is data, and the "@" ends
    the user info). ``host`` is where the authority begins, ``at`` the "@" that ends it.

    Read at depth r = max(c + 1, the depth of the candidate's own scheme and slashes):
    only when the delimiter after the host as the marker found it is encoded deeper."""
    if host_end >= limit:
        return None
    after = depth_of(tagged[host_end])
    if after == 0:
        return None
    scheme = _SCHEME_SLASHES.match(text, start).end()
    host = scheme
    while host < host_end and tagged[host] in _SLASHES:
        host += 1
    r = deepest(c + 1, tagged[scheme:host])
    if after <= r:
        return None
    end = _SHALLOW[min(r, DEEPEST)].search(tagged, host_end, limit)
    at = text.rfind("@", host_end, limit if end is None else end.start())
    return None if at == -1 else (host, at)


def path_parameter_end(text: str, tagged: str, start: int, limit: int, c: int) -> int | None:
    """Where a path parameter's value ends (``/RU=<escaped URL>/RK=2/...``): at the
    wrapper's own "/" (encoded at most as deeply as the "=" before the value), when the
    "=" ends a key that follows a "/" or ";" of the wrapper's path."""
    if start < 3 or text[start - 1] != "=":
        return None
    lo, key_end = max(0, start - 34), start - 1
    before = max(
        text.rfind("/", lo, key_end), text.rfind(";", lo, key_end), text.rfind("\\", lo, key_end)
    )
    if (
        before < 0
        or depth_of(tagged[before]) > c
        or not _PARAMETER_KEY.fullmatch(text, before + 1, start - 1)
    ):
        return None
    end = _SEGMENT_ENDS[c].search(tagged, start, limit)
    return None if end is None else end.start()
