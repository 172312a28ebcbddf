"""The work of the embedded-URL search is linear in the URL, and bytes >= 0x80 add next to
nothing to it (issue 21, item 4): Python-level calls counted, never timed.

A call (of a Python function or of a builtin, as ``sys.setprofile`` reports them) is the unit
of work here: what the search does inside one call (a regex scan, a slice, a join) is C code
linear in its input, and the lengths of what it builds are bounded by tests/test_embedded.py.
Each candidate used to be written in ASCII by itself, a regex callback and four builtins for
each run of bytes >= 0x80 in it, and a byte is in up to MARKER_WINDOW candidates: the
"ideographic hosts" shape made 6.4 calls a byte, 4.4 of them for its full stops (U+3002).
Now a text is converted once and each candidate is a slice of that."""

from __future__ import annotations

import sys
from types import FrameType

from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist_addon.urls.canonical import as_byte_string
from blocklist_addon.urls.embedded import embedded_urls
from testlab.adversarial import ADVERSARIAL, N

#: Calls a byte on any URL. The worst of the adversarial shapes is "nested %25" at 7.0
#: (%25 nested 7 deep: each pass of the unescape by level over the whole text).
CALLS_A_BYTE = 8
#: What the search may add for a URL's bytes >= 0x80 over its ASCII twin (the same URL
#: with the same structure in ASCII): one slice for each candidate that holds some, and
#: the conversion of each distinct run once: at most about 1 a byte (two readings of each
#: candidate in an escaped value, a piece on each side of a resolved path); the "ideographic
#: hosts" shape adds 0.11, and added 4.4 when each candidate was converted by itself.
WIDE_CALLS_A_BYTE = 2
#: Calls whatever the length: the setup of a search and of a conversion.
FLOOR = 64


def calls(url: str) -> int:
    """The Python-level calls ``embedded_urls(url)`` makes (functions and builtins)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        embedded_urls(url)
    finally:
        sys.setprofile(before)
    return count - 1  # the setprofile() that ends the count


def size(url: str) -> int:
    return len(as_byte_string(url))


def test_every_adversarial_shape_is_linear() -> None:
    worst = max(ADVERSARIAL, key=lambda name: calls(ADVERSARIAL[name]) / size(ADVERSARIAL[name]))
    url = ADVERSARIAL[worst]
    assert calls(url) <= CALLS_A_BYTE * size(url) + FLOOR, worst


def test_ideographic_full_stops_cost_next_to_nothing() -> None:
    """bench/adversarial.py's worst shape before: "/h\u3002test" repeated, a candidate at each
    host and eight hosts in each, against its twin written with "."."""
    url = ADVERSARIAL["ideographic hosts"]
    twin = url.replace("\u3002", ".")
    assert url != twin
    assert calls(url) <= calls(twin) + WIDE_CALLS_A_BYTE * size(url) + FLOOR
    assert calls(url) <= 2 * size(url)


#: Pieces with bytes >= 0x80 (ideographic, full-width and halfwidth full stops, full-width
#: and accented letters, a symbol), each with an ASCII twin of the same role (a dot, a
#: label's letters; no twin makes a marker its piece does not, such as "www." or "http:").
WIDE = [
    ("/h\u3002test", "/h.test"),
    ("/h\uff0etest", "/h.test"),
    ("/h\uff61test/", "/h.test/"),
    ("/\uff48\u3002test", "/h.test"),
    ("/\u00e9\u00e9\u3002test/", "/ee.test/"),
    ("/\u2603\u3002test", "/sn.test"),
    ("www\u3002", "www."),
    ("www\u3002h\u3002test/", "www.h.test/"),
    ("=h\u3002test&", "=h.test&"),
    ("=\u00e9\u3002test/x&", "=e.test/x&"),
    ("a\u3002", "a."),
    ("\u3002", "."),
    ("http://h\uff0etest/", "http://h.test/"),
    ("//h\u3002test", "//h.test"),
]
#: The same in both: delimiters and what joins the pieces.
SAME = ["/", "?", "&", "=", "u=", "a/", "x", "/../", "http://", "listed.test/", "%2F", "a.test"]
PIECES = WIDE + [(piece, piece) for piece in SAME]
PREFIXES = ["http://r.example.net/?u=", "http://r.example.net/", "http://a.test/?", "http://"]


@st.composite
def wide_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A hostile URL with bytes >= 0x80 (pieces each repeated up to 400 times) and its twin."""
    prefix = draw(st.sampled_from(PREFIXES))
    parts = draw(st.lists(st.tuples(st.sampled_from(PIECES), st.integers(1, 400)), max_size=5))
    url = prefix + "".join(wide * k for (wide, _), k in parts)
    twin = prefix + "".join(ascii_piece * k for (_, ascii_piece), k in parts)
    return url, twin


#: The longest name a browser resolves.
MAX_NAME = 253


@settings(max_examples=60, deadline=None)
@given(wide_urls())
def test_bytes_above_ascii_add_a_bounded_cost(urls: tuple[str, str]) -> None:
    url, twin = urls
    assert twin.isascii()
    # the twin's structure is url's (its candidates may coincide: "h\u3002test", "h\uff0etest");
    # a name of more than 253 characters is no host a browser resolves, and the ideographic
    # spelling may drop it where the ASCII one keeps it as a bare value
    resolvable = [c for c in embedded_urls(twin) if len(c) <= MAX_NAME]
    assert len(embedded_urls(url)) >= len(resolvable)
    assert calls(url) <= calls(twin) + WIDE_CALLS_A_BYTE * size(url) + FLOOR
    assert calls(url) <= CALLS_A_BYTE * size(url) + FLOOR


def test_the_shapes_are_the_size_the_bounds_are_read_at() -> None:
    """(The bounds above are per byte: a shape cut short would pass them for nothing.)"""
    assert size(ADVERSARIAL["ideographic hosts"]) > N * 3 // 4
