"""Dot-segment padding: candidates read again from the text with its dot segments resolved.

``/www.a/../`` repeated in an embedded URL's path would otherwise push the listed path past
the window and the length cap of :mod:`blocklist_addon.urls.embedded` (see :func:`emit_resolved`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Hashable

from blocklist_addon.urls.embedded.depth import (
    AsciiSlices,
    JoinedSlices,
    candidate_ends,
    emit_candidates,
)
from blocklist_addon.urls.embedded.markers import MARKER_WINDOW, MAX_CANDIDATE_CHARS

__all__ = ["DOT_DOT", "HostKey", "emit_resolved"]

DOT_DOT = re.compile(r"[/\\]\.\.(?=[/\\]|\Z)")
_SEPARATOR = re.compile(r"[/\\]")
# A candidate's scheme and host: where its path (or query) begins.
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?[/\\\x00-\x20]*[^/\\?#]*")

#: A host key: which listed hosts a candidate's host falls under (None: no listed one).
HostKey = Callable[[str], Hashable | None]


def emit_resolved(
    found: dict[str, None],
    text: str,
    tagged: str,
    tags: bool,
    outer_end: int,
    starts: list[int],
    depths: list[tuple[int, int]],
    query_at: int,
    host_key: HostKey | None,
    slices: AsciiSlices | None = None,
) -> None:
    """Candidates read from the text with its dot segments resolved, where the window and
    the length cap count what is left. ``slices``: of ``text``, for the candidates' ASCII
    (see :class:`embedded_depth.AsciiSlices`; without it each is written by itself).

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
    r_slices = AsciiSlices(r_text) if slices is not None else None
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
    known: dict[str, object] = {}  # authority -> its host_key
    for i, start in enumerate(starts):
        host_end, r_from = host_ends[i], tails[i]
        if where[i][1]:
            keys = seen.setdefault(r_from, set())
            if host_key is not None:
                authority = text[start:host_end]  # padding repeats one ("/www.a/../")
                if (key := known.get(authority, known)) is known:
                    key = known[authority] = host_key(authority)
                if key is None or key in keys:
                    continue
            else:
                key = text[start:host_end].lower()
                if key in keys or len(keys) >= MARKER_WINDOW:
                    continue
            keys.add(key)
            k = bisect.bisect_right(events, r_from) + MARKER_WINDOW - 1
            cut = events[k] if k < len(events) else len(r_text)
        else:
            k = bisect.bisect_left(live, r_from) + MARKER_WINDOW - 1
            cut = live[k] if k < len(live) else len(r_text)
        head = host_end - start
        r_to = min(cut, r_from + MAX_CANDIDATE_CHARS - head)
        # the container's character, which candidate_ends() may read
        before = 1 if start else 0
        piece_text = text[start - before : host_end] + r_text[r_from:r_to]
        piece_tagged = tagged[start - before : host_end] + r_tagged[r_from:r_to]
        if query_at < 0 or query_gone:
            q = -1
        elif query_at < start:
            q = 0  # before the candidate: it is in the outer query
        else:
            q = before + head + r_query - r_from
        c, d = depths[i]
        ends = candidate_ends(piece_tagged, before, len(piece_tagged), c, d, q)
        joined = None
        if slices is not None and r_slices is not None:
            joined = JoinedSlices(slices, start - before, host_end, r_slices, r_from)
        emit_candidates(found, piece_text, piece_tagged, tags, before, ends, c, d, q, joined)


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
