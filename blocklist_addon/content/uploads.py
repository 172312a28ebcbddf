"""Listed URLs carried in what clients upload: form posts, multipart text fields, JSON, text.

A platform that accepts a post linking a listed page publishes that link to everyone who
reads it; in reverse mode the proxy refuses such posts before they reach the platform.
Pure functions: ``listed_in_body(body, content_type, check)`` returns the first match.

The text of every field is cut into tokens at whitespace, quotes, angle brackets,
parentheses and the like (so ``<a href="...">``, ``[url=...]`` and Markdown links give up
their URLs), and every token that could hold a URL (a dot, ``://`` or a percent-escape) is
checked by the matcher, which also finds URLs embedded in it, written in any of the ways it
understands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from urllib.parse import unquote_plus

from python_multipart.multipart import parse_options_header

from blocklist_addon.content import multipart
from blocklist_addon.urls.matcher import Match

__all__ = ["json_strings", "listed_in_body", "listed_in_text", "texts"]

_TOKEN = re.compile(r"""[^\s"'<>()\[\]{}|^`,;*]++""")
#: What a token needs to be worth a lookup: a scheme, a percent-escape, or a dot followed by
#: a label character (a host name or address). Prose has many tokens ending in a full stop
#: ("elit."); they are not looked up (a 2 KiB post of prose with 5 URLs made 36 lookups, now 8).
_URLISH = re.compile(r"://|%|[.。．｡]\w")  # noqa: RUF001
#: Quotes, brackets and sentence punctuation around a URL in prose, which linkifiers leave out
#: of the link ("see http://host/page.html." links page.html; so do 「...」 and «...»). The
#: token as written is checked first; stripped, it is checked again.
_OPENERS = "'«‘“「『〈《（"  # noqa: RUF001
_CLOSERS = ".!?:'»’”」』〉》）。．｡！？、，"  # noqa: RUF001
#: Sentence marks of CJK prose, which needs no space after a URL ("...page.html。谢谢"). Inside
#: a host an ideographic full stop is a dot; once the path has begun it ends the URL.
_CJK_END = re.compile("[。｡！？、，」』〉》）]")  # noqa: RUF001
#: Words of a script without spaces glued to the URL that follows ("请看blocked.example/..."). An
#: internationalised host can start the same way; it is then checked as written too.
_GLUED = re.compile(r"[^\x00-\x7f]+(?=[A-Za-z0-9])")
#: Nested JSON deeper than this is not walked (a real form never nests this far).
MAX_JSON_DEPTH = 64


def listed_in_body(
    body: bytes, content_type: str | None, check: Callable[[str], Match | None]
) -> Match | None:
    """The first listed URL in the body's text, or None."""
    for text in texts(body, content_type or ""):
        if (match := listed_in_text(text, check)) is not None:
            return match
    return None


def listed_in_text(text: str, check: Callable[[str], Match | None]) -> Match | None:
    for token in _TOKEN.findall(text):
        if not _URLISH.search(token):
            continue
        for candidate in _candidates(token):
            if match := check(candidate):
                return match
    return None


def _candidates(token: str) -> Iterator[str]:
    """The token as written, then as a linkifier would cut it out of the prose around it."""
    yield token
    host_end = _path_start(token)
    head = token if host_end < 0 else token[:host_end]
    cut = token[max(head.rfind(c) for c in _OPENERS) + 1 :]
    if glued := _GLUED.match(cut):
        cut = cut[glued.end() :]
    path = _path_start(cut)
    if path >= 0 and (end := _CJK_END.search(cut, path)):
        cut = cut[: end.start()]
    cut = cut.rstrip(_CLOSERS)
    # "url=http://..." (BBCode, a pasted field): the value on its own as well.
    _, equals, value = cut.partition("=")
    seen = {token}
    for candidate in (cut, value if equals and _URLISH.search(value) else ""):
        if candidate and candidate not in seen:
            seen.add(candidate)
            yield candidate


def _path_start(text: str) -> int:
    """Where a URL-ish token's path begins: its first "/" after any "//", or -1."""
    return text.find("/", text.find("//") + 2 if "//" in text else 0)


def texts(body: bytes, content_type: str) -> Iterator[str]:
    """The pieces of text a client sent: field names and values, JSON strings, or the body."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        for pair in body.decode("utf-8", "replace").split("&"):
            name, _, value = pair.partition("=")
            yield unquote_plus(name)
            yield unquote_plus(value)
    elif kind.startswith("multipart/"):
        for part in multipart.parts(body, content_type)[0]:
            yield part.header_text()  # the field's name and file name
            if not (_file(part) and _binary(part.headers.get(b"content-type", b""))):
                yield part.data.decode("utf-8", "replace")
    elif kind == "application/json" or kind.endswith("+json"):
        try:
            yield from json_strings(json.loads(body), 0)
        except (ValueError, RecursionError):
            yield body.decode("utf-8", "replace")  # not JSON after all: check it as text
    elif kind.startswith("text/") or not kind:
        yield body.decode("utf-8", "replace")


def json_strings(value: object, depth: int = 0) -> Iterator[str]:
    """Every key and string of a JSON document, to MAX_JSON_DEPTH."""
    if isinstance(value, str):
        yield value
    elif depth < MAX_JSON_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_strings(item, depth + 1)
    elif depth < MAX_JSON_DEPTH and isinstance(value, list):
        for item in value:
            yield from json_strings(item, depth + 1)


def _file(part: multipart.Part) -> bool:
    """Whether every parser hands ``part`` to the app as a file: its Content-Disposition
    has one ``filename`` parameter, not empty (not ``filename*``, not given twice, not the
    word inside another parameter's quotes). A part without one is a form field to PHP,
    Django and aiohttp whatever type it declares: read as text."""
    disposition = part.headers.get(b"content-disposition", b"")
    if disposition.lower().count(b"filename") != 1:
        return False
    return bool(parse_options_header(disposition)[1].get(b"filename"))


def _binary(content_type: bytes) -> bool:
    """A content type that is not text: an image, an archive (a file of it is not read)."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    return bool(kind) and not (
        kind.startswith(b"text/") or kind in (b"application/json", b"application/xml")
    )
