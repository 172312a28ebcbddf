"""Links to listed URLs inside HTML and CSS, found and neutralized without touching the rest.

A page that embeds or links a listed page hands it to the browser as surely as a typed URL:
the proxy rewrites such links before the page reaches the user (DESIGN "Matching semantics":
embedded URLs in HTML and CSS bodies). Links and frames (``a``, ``area``, ``iframe``,
``frame``, ``form action``, ``formaction``, meta refresh) are pointed at the proxy's splash
page; resources (``img``, ``script``, ``link``, ``source``, ``video``, ``audio``, ``track``,
``embed``, ``object``, ``input type=image``, ``srcset``, ``poster``, CSS ``url()`` and
``@import``, in ``<style>`` and ``style=""``) are replaced by ``about:invalid#blocked``,
which no browser fetches. Every other byte of the page is kept as it was.

No I/O: ``neutralize(body, content_type, page_url, check, splash_url)`` decodes the body in
its charset, has the listed links found, and rewrites them. Finding is in three modules,
imported one way: ``content.links`` (what a page links to: the tokenizer and
``find_links``, the readable reference), ``content.verdicts`` (the matcher's verdicts kept
from page to page, ``Kept`` and ``Verdicts.of``, held by the page guard, ``VERDICTS_KEPT``)
and ``content.scan`` (the fast pass ``neutralize`` makes, which finds and checks together
and checks each distinct URL once a page, and once while the same list is in force).
tests/test_pages_fast.py holds the two scanners to the same output on generated pages.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

from blocklist_addon.content.links import Found, find_links
from blocklist_addon.content.scan import listed_links
from blocklist_addon.content.verdicts import Kept, Verdicts, page_verdicts
from blocklist_addon.urls.matcher import Match

__all__ = [
    "BLOCKED_RESOURCE",
    "Found",
    "Kept",
    "Verdicts",
    "charset_of",
    "find_links",
    "neutralize",
]

#: What a listed resource URL becomes: a URL no browser fetches.
BLOCKED_RESOURCE = "about:invalid#blocked"

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_CSS_CHARSET = re.compile(rb'@charset\s+"([a-zA-Z0-9_.:-]+)"')
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


def charset_of(content_type: str | None, body: bytes, *, css: bool = False) -> str:
    """The body's charset as a browser decides it: a byte order mark, then the Content-Type
    header, then ``<meta charset>`` (HTML) or ``@charset`` (CSS) near the start; else UTF-8."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if body.startswith(bom):
            return name
    for found in (
        _HEADER_CHARSET.search(content_type or ""),
        (_CSS_CHARSET if css else _META_CHARSET).search(body[:1024]),
    ):
        if found:
            name = found.group(1)
            name = name if isinstance(name, str) else name.decode("ascii")
            try:
                return codecs.lookup(name).name
            except LookupError:
                continue
    return "utf-8"


def _ascii_compatible(charset: str) -> bool:
    try:
        return "<a href='/'>".encode(charset) == b"<a href='/'>" and "utf-7" not in charset
    except (LookupError, UnicodeError):
        return False


def neutralize(
    body: bytes,
    content_type: str | None,
    page_url: str,
    check: Callable[[str], Match | None],
    splash_url: Callable[[Match], str],
    kept: Kept | None = None,
) -> tuple[bytes, list[tuple[Found, Match]]]:
    """``body`` with every listed link neutralized, and what was found listed.

    ``check`` is the matcher (``Blocklist.match``); ``splash_url`` says where a neutralized
    link or frame points; ``kept``, the verdicts of ``check``'s list from earlier pages
    (``Verdicts.of``), read and added to. A body that cannot be decoded exactly is returned
    unchanged.
    """
    return _neutralize(body, content_type, page_url, check, splash_url, fast=True, kept=kept)


def _neutralize(
    body: bytes,
    content_type: str | None,
    page_url: str,
    check: Callable[[str], Match | None],
    splash_url: Callable[[Match], str],
    *,
    fast: bool,
    kept: Kept | None = None,
) -> tuple[bytes, list[tuple[Found, Match]]]:
    """``neutralize``; with ``fast=False`` by ``find_links`` and a ``check`` of every link
    found, the reference the fast scan is tested against."""
    css = "css" in (content_type or "").lower()
    charset = charset_of(content_type, body, css=css)
    # Latin-1 maps each byte to one character: positions are byte offsets, and bytes outside
    # what the tokenizer looks at come back out exactly as they went in. A URL with bytes
    # >= 0x80 is then decoded in the page's own charset before it is checked.
    as_bytes = _ascii_compatible(charset)
    try:
        text = body.decode("latin-1" if as_bytes else charset)
    except (UnicodeDecodeError, LookupError):
        return body, []

    if fast:
        verdict, links, tags = page_verdicts(check, charset if as_bytes else None, kept)
        edits = listed_links(text, page_url, css, verdict, latin1=as_bytes, links=links, tags=tags)
    else:
        edits = []
        for found in find_links(text, page_url, css=css):
            url = found.url
            if as_bytes and not url.isascii():
                url = url.encode("latin-1").decode(charset, "replace")
            if (match := check(url)) is not None:
                edits.append((found, match))
    if not edits:
        return body, []
    edits.sort(key=lambda edit: edit[0].start)
    parts: list[str] = []
    last = 0
    for found, match in edits:
        if found.start < last:  # the same text found twice (an attribute given twice)
            continue
        parts.append(text[last : found.start])
        parts.append(splash_url(match) if found.kind == "navigate" else BLOCKED_RESOURCE)
        last = found.end
    parts.append(text[last:])
    return "".join(parts).encode("latin-1" if as_bytes else charset), edits
