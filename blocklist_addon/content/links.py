"""What an HTML or CSS text links to: the URLs a browser would fetch or follow, where each is
written, and what it resolves to (DESIGN "Matching semantics": embedded URLs in HTML and CSS).

The tokens are shared with the fast scan (``content.scan``), which finds the same links
faster; ``find_links`` here is the readable reference it is tested against. A small
tokenizer, not a full HTML parser: it knows tags, quoted and unquoted attribute values,
comments, and the raw-text elements (``script``, ``style``, ``textarea``, ``title``) whose
contents are not markup, which is what decides where a URL is. Work is linear in the page:
every regex is possessive or bounded, and an unterminated quote or comment ends the scan as
a browser would end the document.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterator
from typing import Literal, NamedTuple
from urllib.parse import urljoin, urlsplit

#: The reference (``find_links``, ``Found``), and the tokens and helpers the fast scan shares.
__all__ = [
    "ATTRIBUTE",
    "ATTRIBUTE_TEXTS",
    "CSS_ESCAPE",
    "CSS_URL",
    "END_TAGS",
    "NEXT_TAG",
    "RAW_TEXT",
    "REFRESH",
    "SCHEME",
    "SRCSET_URL",
    "URL_ATTRIBUTES",
    "WANTED",
    "Found",
    "Kind",
    "css_unescape",
    "document_base",
    "find_links",
    "resolve",
]

Kind = Literal["navigate", "resource"]

# (tag, attribute) -> kind; "srcset" attributes hold several URLs.
URL_ATTRIBUTES: dict[tuple[str, str], Kind] = {
    ("a", "href"): "navigate",
    ("area", "href"): "navigate",
    ("iframe", "src"): "navigate",
    ("frame", "src"): "navigate",
    ("form", "action"): "navigate",
    ("button", "formaction"): "navigate",
    ("input", "formaction"): "navigate",
    ("img", "src"): "resource",
    ("img", "srcset"): "resource",
    ("script", "src"): "resource",
    ("link", "href"): "resource",
    ("source", "src"): "resource",
    ("source", "srcset"): "resource",
    ("video", "src"): "resource",
    ("video", "poster"): "resource",
    ("audio", "src"): "resource",
    ("track", "src"): "resource",
    ("embed", "src"): "resource",
    ("object", "data"): "resource",
    ("input", "src"): "resource",
}
RAW_TEXT = {"script", "style", "textarea", "title", "xmp", "noembed", "noframes"}
#: What ends the raw text of each of those elements: its end tag.
END_TAGS = {name: re.compile(r"</" + name + r"[\s/>]", re.IGNORECASE) for name in RAW_TEXT}

# The tokenizer is one regex: it skips, inside the regex engine, everything that holds no
# URL (text, comments, end tags, declarations, and start tags of other elements that have
# no style attribute) and stops at the next start tag that may hold one. As in a browser,
# any character but space, "/" and ">" can start an attribute name, so a tag never ends
# inside a quoted value, and an unterminated quote leaves only attribute-looking text behind
# it, which is scanned too (more than the browser sees, never less). Unterminated comments
# run to the end of the document.
_NAME = r"""[^\s/>][^\s"'>/=]*+"""
_VALUE = r"""(?:"[^"]*+"|'[^']*+'|[^\s"'>][^\s>]*+)"""
_VALUE_PARTS = r"""(?:"([^"]*+)"|'([^']*+)'|([^\s"'>][^\s>]*+))"""  # the value in a group
_ANY_ATTRIBUTE = r"[\s/]*+" + _NAME + r"(?:\s*+=\s*+" + _VALUE + r")?"
_OTHER_ATTRIBUTE = r"[\s/]*+(?!style[\s/>=])" + _NAME + r"(?:\s*+=\s*+" + _VALUE + r")?"
WANTED = sorted({tag for tag, _ in URL_ATTRIBUTES} | {"meta"} | RAW_TEXT, key=len, reverse=True)
NEXT_TAG = re.compile(
    r"(?:[^<]++"  # text
    r"|<!--(?:.*?-->|.*+)"  # a comment
    r"|<[!?/][^>]*+>"  # an end tag, <!DOCTYPE>, <?...>
    r"|<(?!(?:" + "|".join(WANTED) + r")[\s/>])[a-zA-Z][a-zA-Z0-9:_-]*+"
    r"(?:" + _OTHER_ATTRIBUTE + r")*+[\s/]*+>"  # another element, without a style
    r"|<(?![a-zA-Z!?/])"  # a "<" that starts nothing ("a < b")
    r")*+"
    r"<([a-zA-Z][a-zA-Z0-9:_-]*+)((?:" + _ANY_ATTRIBUTE + r")*+)[\s/]*+>?",
    re.DOTALL | re.IGNORECASE,
)
ATTRIBUTE = re.compile(r"[\s/]*+(" + _NAME + r")(?:\s*+=\s*+" + _VALUE_PARTS + r")?")
# The same, for findall: name, "=" (empty: no value), and the value in one of three groups.
ATTRIBUTE_TEXTS = re.compile(r"[\s/]*+(" + _NAME + r")(?:\s*+(=)\s*+" + _VALUE_PARTS + r")?")
CSS_URL = re.compile(
    r"""url\(\s*+(?:"([^"]*+)"|'([^']*+)'|((?:\\[0-9a-fA-F]{1,6}\s?|\\.|[^\s"')\\])++))\s*+\)"""
    r"""|@import\s++(?:"([^"]*+)"|'([^']*+)')""",
    re.IGNORECASE,
)
SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*+:")
CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(.))", re.DOTALL)
SRCSET_URL = re.compile(r"[\s,]*+(\S+)[^,]*+")
REFRESH = re.compile(
    r"""\s*+[0-9.]*+\s*+[;,]?\s*+(?:url\s*+=\s*+)?(["']?)(.*?)\1\s*+$""", re.I | re.S
)
_BASE = re.compile(
    r"""<base\s[^>]*?href\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s>]++))""", re.IGNORECASE
)


class Found(NamedTuple):
    """A URL in the page: where its text is (``start``/``end``, in the scanned text), what it
    is, and the URL as the browser would resolve it."""

    start: int
    end: int
    kind: Kind
    url: str


def find_links(text: str, page_url: str, *, css: bool = False) -> Iterator[Found]:
    """Every URL a browser would fetch or follow in ``text`` (HTML, or CSS with ``css``),
    resolved against ``page_url`` and the first ``<base href>``."""
    if css:
        yield from _css_links(text, 0, len(text), page_url)
        return
    yield from _html_links(text, document_base(text, page_url))


def _html_links(text: str, base: str) -> Iterator[Found]:
    pos = 0
    while (tag := NEXT_TAG.match(text, pos)) is not None:
        pos = tag.end()
        name = tag.group(1).lower()
        attributes: dict[str, tuple[int, int]] = {}
        for attribute in ATTRIBUTE.finditer(text, *tag.span(2)):
            for group in (2, 3, 4):
                if attribute.group(group) is not None:
                    attributes.setdefault(attribute.group(1).lower(), attribute.span(group))
                    break
        yield from _tag_links(text, name, attributes, base)
        if name in RAW_TEXT:
            close = _find_end_tag(text, name, pos)
            if name == "style":
                yield from _css_links(text, pos, close, base)
            pos = close


def _tag_links(
    text: str, name: str, attributes: dict[str, tuple[int, int]], base: str
) -> Iterator[Found]:
    for key, (start, end) in attributes.items():
        kind = URL_ATTRIBUTES.get((name, key))
        if kind is not None:
            if key == "srcset":
                for candidate in SRCSET_URL.finditer(text, start, end):
                    url_start, url_end = candidate.span(1)
                    while url_end > url_start and text[url_end - 1] == ",":
                        url_end -= 1
                    yield from _found(text, url_start, url_end, kind, base)
            else:
                yield from _found(text, start, end, kind, base)
        elif key == "style":
            yield from _css_links(text, start, end, base, entities=True)
    if name == "meta" and "content" in attributes and "http-equiv" in attributes:
        start, end = attributes["http-equiv"]
        if text[start:end].strip().lower() == "refresh":
            start, end = attributes["content"]
            refresh = REFRESH.match(text, start, end)
            if refresh is not None and refresh.group(2):
                yield from _found(text, *refresh.span(2), "navigate", base)


def _css_links(
    text: str, start: int, end: int, base: str, *, entities: bool = False
) -> Iterator[Found]:
    """CSS URLs in ``text[start:end]``. With ``entities`` (a style attribute) character
    references are undone first; a URL found only then is reported as the whole attribute
    value (whose declarations a browser then ignores)."""
    if entities and "&" in text[start:end]:
        value = html.unescape(text[start:end])
        for found in _css_links(value, 0, len(value), base):
            yield Found(start, end, found.kind, found.url)
        return
    for found in CSS_URL.finditer(text, start, end):
        group = next(g for g in range(1, 6) if found.group(g) is not None)
        url_start, url_end = found.span(group)
        url = CSS_ESCAPE.sub(css_unescape, text[url_start:url_end])
        if (resolved := resolve(base, url)) is not None:
            yield Found(url_start, url_end, "resource", resolved)


def _found(text: str, start: int, end: int, kind: Kind, base: str) -> Iterator[Found]:
    if (resolved := resolve(base, html.unescape(text[start:end]))) is not None:
        yield Found(start, end, kind, resolved)


def resolve(base: str, url: str) -> str | None:
    """``url`` as the browser resolves it against ``base``, or None for nothing to check.
    Most links are absolute or root-relative: those skip urljoin (a few microseconds each);
    the matcher canonicalizes whatever spelling comes out."""
    url = url.strip()
    if not url or url[0] == "#":
        return None
    if SCHEME.match(url):
        return None if url[:5].lower() == "data:" else url
    if url[:2] in ("//", "\\\\", "/\\", "\\/"):
        return _base_parts(base)[0] + ":" + url
    if url[0] in "/\\":
        scheme, netloc = _base_parts(base)
        return f"{scheme}://{netloc}{url}"
    try:
        return urljoin(base, url)
    except ValueError:  # an invalid IPv6 literal and the like: check it as written
        return url


def document_base(text: str, page_url: str) -> str:
    """What relative links resolve against: the first ``<base href>`` resolved against the
    page's URL, or the page's URL itself when there is none, or when it is empty, only a
    fragment, or does not parse (WHATWG's fallback base URL): a base the scan could not
    use must never leave the page's relative links unchecked."""
    if (found := _BASE.search(text)) is None:
        return page_url
    base = resolve(page_url, html.unescape(_first(found.groups()) or ""))
    if base is None:
        return page_url
    try:
        _base_parts(base)
    except ValueError:  # an invalid IPv6 literal and the like
        return page_url
    return base


@functools.lru_cache(maxsize=64)
def _base_parts(base: str) -> tuple[str, str]:
    parts = urlsplit(base)
    return parts.scheme or "http", parts.netloc


def _find_end_tag(text: str, name: str, pos: int) -> int:
    """Where the raw text of ``<name>`` ends: its end tag, else the end of the document."""
    found = END_TAGS[name].search(text, pos)
    return len(text) if found is None else found.start()


def css_unescape(m: re.Match[str]) -> str:
    if m.group(1) is None:
        return m.group(2)
    code = int(m.group(1), 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _first(groups: tuple[str | None, ...]) -> str | None:
    return next((g for g in groups if g is not None), None)
