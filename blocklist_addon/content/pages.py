"""Links to listed URLs inside HTML and CSS, found and neutralized without touching the rest.

A page that embeds or links a listed page hands it to the browser as surely as a typed URL:
the proxy rewrites such links before the page reaches the user (DESIGN "Matching semantics":
embedded URLs in HTML and CSS bodies). Links and frames (``a``, ``area``, ``iframe``,
``frame``, ``form action``, ``formaction``, meta refresh) are pointed at the proxy's splash
page; resources (``img``, ``script``, ``link``, ``source``, ``video``, ``audio``, ``track``,
``embed``, ``object``, ``input type=image``, ``srcset``, ``poster``, CSS ``url()`` and
``@import``, in ``<style>`` and ``style=""``) are replaced by ``about:invalid#blocked``,
which no browser fetches. Every other byte of the page is kept as it was.

No I/O: ``neutralize(body, content_type, page_url, check, splash_url)``. The scanner is a
small tokenizer, not a full HTML parser: it knows tags, quoted and unquoted attribute
values, comments, and the raw-text elements (``script``, ``style``, ``textarea``,
``title``) whose contents are not markup, which is what decides where a URL is. Work is
linear in the page: every regex is possessive or bounded, and an unterminated quote or
comment ends the scan as a browser would end the document.

Two scanners with one result: ``find_links`` (every link, as a generator, the readable
reference) and the fast pass ``neutralize`` makes, which finds and checks together, checks
each distinct URL once a page and, given a list's ``Kept`` verdicts (``Verdicts.of``, held by
the page guard), checks a URL once while the same list is in force (``VERDICTS_KEPT``).
tests/test_pages_fast.py holds them to the same output on generated pages.
"""

from __future__ import annotations

import codecs
import functools
import html
import html.entities
import re
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple
from urllib.parse import urljoin, urlsplit

from blocklist_addon.urls.matcher import Blocklist, Match

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

Kind = Literal["navigate", "resource"]

# (tag, attribute) -> kind; "srcset" attributes hold several URLs.
_URL_ATTRIBUTES: dict[tuple[str, str], Kind] = {
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
_RAW_TEXT = {"script", "style", "textarea", "title", "xmp", "noembed", "noframes"}

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
_WANTED = sorted({tag for tag, _ in _URL_ATTRIBUTES} | {"meta"} | _RAW_TEXT, key=len, reverse=True)
_NEXT_TAG = re.compile(
    r"(?:[^<]++"  # text
    r"|<!--(?:.*?-->|.*+)"  # a comment
    r"|<[!?/][^>]*+>"  # an end tag, <!DOCTYPE>, <?...>
    r"|<(?!(?:" + "|".join(_WANTED) + r")[\s/>])[a-zA-Z][a-zA-Z0-9:_-]*+"
    r"(?:" + _OTHER_ATTRIBUTE + r")*+[\s/]*+>"  # another element, without a style
    r"|<(?![a-zA-Z!?/])"  # a "<" that starts nothing ("a < b")
    r")*+"
    r"<([a-zA-Z][a-zA-Z0-9:_-]*+)((?:" + _ANY_ATTRIBUTE + r")*+)[\s/]*+>?",
    re.DOTALL | re.IGNORECASE,
)
_ATTRIBUTE = re.compile(r"[\s/]*+(" + _NAME + r")(?:\s*+=\s*+" + _VALUE_PARTS + r")?")
# The same, for findall: name, "=" (empty: no value), and the value in one of three groups.
_ATTRIBUTE_TEXTS = re.compile(r"[\s/]*+(" + _NAME + r")(?:\s*+(=)\s*+" + _VALUE_PARTS + r")?")
_CSS_URL = re.compile(
    r"""url\(\s*+(?:"([^"]*+)"|'([^']*+)'|((?:\\[0-9a-fA-F]{1,6}\s?|\\.|[^\s"')\\])++))\s*+\)"""
    r"""|@import\s++(?:"([^"]*+)"|'([^']*+)')""",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*+:")
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(.))", re.DOTALL)
_SRCSET_URL = re.compile(r"[\s,]*+(\S+)[^,]*+")
_REFRESH = re.compile(
    r"""\s*+[0-9.]*+\s*+[;,]?\s*+(?:url\s*+=\s*+)?(["']?)(.*?)\1\s*+$""", re.I | re.S
)
_BASE = re.compile(
    r"""<base\s[^>]*?href\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s>]++))""", re.IGNORECASE
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_CSS_CHARSET = re.compile(rb'@charset\s+"([a-zA-Z0-9_.:-]+)"')
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


class Found(NamedTuple):
    """A URL in the page: where its text is (``start``/``end``, in the scanned text), what it
    is, and the URL as the browser would resolve it."""

    start: int
    end: int
    kind: Kind
    url: str


# -- charsets ----------------------------------------------------------------------------------


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


# -- finding -----------------------------------------------------------------------------------


def find_links(text: str, page_url: str, *, css: bool = False) -> Iterator[Found]:
    """Every URL a browser would fetch or follow in ``text`` (HTML, or CSS with ``css``),
    resolved against ``page_url`` and the first ``<base href>``."""
    if css:
        yield from _css_links(text, 0, len(text), page_url)
        return
    yield from _html_links(text, _document_base(text, page_url))


def _html_links(text: str, base: str) -> Iterator[Found]:
    pos = 0
    while (tag := _NEXT_TAG.match(text, pos)) is not None:
        pos = tag.end()
        name = tag.group(1).lower()
        attributes: dict[str, tuple[int, int]] = {}
        for attribute in _ATTRIBUTE.finditer(text, *tag.span(2)):
            for group in (2, 3, 4):
                if attribute.group(group) is not None:
                    attributes.setdefault(attribute.group(1).lower(), attribute.span(group))
                    break
        yield from _tag_links(text, name, attributes, base)
        if name in _RAW_TEXT:
            close = _find_end_tag(text, name, pos)
            if name == "style":
                yield from _css_links(text, pos, close, base)
            pos = close


def _tag_links(
    text: str, name: str, attributes: dict[str, tuple[int, int]], base: str
) -> Iterator[Found]:
    for key, (start, end) in attributes.items():
        kind = _URL_ATTRIBUTES.get((name, key))
        if kind is not None:
            if key == "srcset":
                for candidate in _SRCSET_URL.finditer(text, start, end):
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
            refresh = _REFRESH.match(text, start, end)
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
    for found in _CSS_URL.finditer(text, start, end):
        group = next(g for g in range(1, 6) if found.group(g) is not None)
        url_start, url_end = found.span(group)
        url = _CSS_ESCAPE.sub(_css_unescape, text[url_start:url_end])
        if (resolved := _resolve(base, url)) is not None:
            yield Found(url_start, url_end, "resource", resolved)


def _found(text: str, start: int, end: int, kind: Kind, base: str) -> Iterator[Found]:
    if (resolved := _resolve(base, html.unescape(text[start:end]))) is not None:
        yield Found(start, end, kind, resolved)


def _resolve(base: str, url: str) -> str | None:
    """``url`` as the browser resolves it against ``base``, or None for nothing to check.
    Most links are absolute or root-relative: those skip urljoin (a few microseconds each);
    the matcher canonicalizes whatever spelling comes out."""
    url = url.strip()
    if not url or url[0] == "#":
        return None
    if _SCHEME.match(url):
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


def _document_base(text: str, page_url: str) -> str:
    """What relative links resolve against: the first ``<base href>`` resolved against the
    page's URL, or the page's URL itself when there is none, or when it is empty, only a
    fragment, or does not parse (WHATWG's fallback base URL): a base the scan could not
    use must never leave the page's relative links unchecked."""
    if (found := _BASE.search(text)) is None:
        return page_url
    base = _resolve(page_url, html.unescape(_first(found.groups()) or ""))
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
    found = re.compile(r"</" + re.escape(name) + r"[\s/>]", re.IGNORECASE).search(text, pos)
    return len(text) if found is None else found.start()


def _css_unescape(m: re.Match[str]) -> str:
    if m.group(1) is None:
        return m.group(2)
    code = int(m.group(1), 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _first(groups: tuple[str | None, ...]) -> str | None:
    return next((g for g in groups if g is not None), None)


# -- the fast scan --------------------------------------------------------------------------
#
# ``neutralize`` does not go through ``find_links``: it finds and checks in one pass, with no
# generator or ``Found`` per link, each distinct attribute value resolved once a page and each
# distinct URL checked once (then remembered for the list in force). ``find_links`` stays the
# readable reference: tests/test_pages_fast.py holds the two to the same output on generated
# pages.

Verdict = Callable[[str], "Match | None"]
Hits = list[tuple[Found, Match]]
Links = dict[str, tuple[str, "Match | None"]]

# tag -> {attribute: what it holds}: a kind of URL, a srcset, CSS, or half of a meta refresh.
_STYLE, _SRCSET, _CONTENT, _HTTP_EQUIV = "style", "srcset", "content", "http-equiv"
_STYLE_ONLY: dict[str, str] = {"style": _STYLE}
_TAG_ATTRIBUTES: dict[str, dict[str, str]] = {
    "meta": {"style": _STYLE, "content": _CONTENT, "http-equiv": _HTTP_EQUIV}
}
for (_tag, _attribute), _kind in _URL_ATTRIBUTES.items():
    _TAG_ATTRIBUTES.setdefault(_tag, dict(_STYLE_ONLY))[_attribute] = (
        _SRCSET if _attribute == "srcset" else _kind
    )
_END_TAGS = {name: re.compile(r"</" + name + r"[\s/>]", re.IGNORECASE) for name in _RAW_TEXT}
_NOTHING = ("", None)  # a value with no URL to check, or one not listed


def _case_free(words: list[str]) -> str:
    """A regex for ``words`` in any ASCII case without re.IGNORECASE, as a trie."""
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[:1], []).append(word[1:])
    branches = []
    for first, rests in sorted(groups.items()):
        if not first:
            continue
        tail = _case_free([rest for rest in rests if rest])
        letter = f"[{first}{first.upper()}]" if first.isalpha() else re.escape(first)
        branches.append(
            letter + (("(?:" + tail + ")" + ("?" if "" in rests else "")) if tail else "")
        )
    return "|".join(branches)


# _NEXT_TAG for text of one byte a character (a page in an ASCII-compatible charset, held as
# latin-1): no latin-1 character folds to an ASCII letter, so the same tokens without
# re.IGNORECASE, whose case-folded name alternation cost a quarter of the whole tokenizer.
_WANTED_ALTERNATION = "(?:" + "|".join(_WANTED) + r")[\s/>]"
if _WANTED_ALTERNATION not in _NEXT_TAG.pattern or "(?!style[" not in _NEXT_TAG.pattern:
    raise RuntimeError("_NEXT_TAG changed: derive _NEXT_TAG_LATIN1 from it again")
_NEXT_TAG_LATIN1 = re.compile(
    _NEXT_TAG.pattern.replace(
        _WANTED_ALTERNATION, "(?:" + _case_free(_WANTED) + r")[\s/>]"
    ).replace("(?!style[", "(?![sS][tT][yY][lL][eE]["),
    re.DOTALL,
)
# html.unescape changes a value without ";" only at "&#" or at a legacy reference (a name
# HTML5 reads without its ";", such as "&not"): a value with neither is returned as it is,
# so "?a=1&b=2" is not run through it.
_LEGACY_REFERENCE = re.compile(
    "&(?:#|"
    + "|".join(
        sorted(
            (name for name in html.entities.html5 if not name.endswith(";")), key=len, reverse=True
        )
    )
    + ")"
)


def _unescape(value: str) -> str:
    """``html.unescape(value)``, without its cost for the common ``&`` of a query."""
    if "&" not in value or (";" not in value and _LEGACY_REFERENCE.search(value) is None):
        return value
    return html.unescape(value)


def _scan(
    text: str,
    page_url: str,
    css: bool,
    verdict: Verdict,
    latin1: bool = False,
    links: Links | None = None,
) -> Hits:
    """``[(found, match)]`` for the listed links of ``text``, in ``find_links``'s order;
    ``latin1``: ``text`` holds no character above U+00FF; ``links``: absolute links' verdicts
    kept from earlier pages (``_value``)."""
    if links is None:
        links = {}
    hits: Hits = []
    if css:
        _scan_css(text, 0, len(text), page_url, verdict, hits, {})
        return hits
    base = _document_base(text, page_url)
    values: dict[str, tuple[str, Match | None]] = {}  # attribute value -> (URL, match)
    styles: dict[str, tuple[str, Match | None]] = {}  # the same for CSS URLs
    next_tag = (_NEXT_TAG_LATIN1 if latin1 else _NEXT_TAG).match
    attributes = _ATTRIBUTE_TEXTS.findall
    raw_text = _RAW_TEXT
    pos = 0
    while (tag := next_tag(text, pos)) is not None:
        pos = tag.end()
        name = tag.group(1).lower()
        start, end = tag.span(2)
        if start != end:
            # The attributes' texts first (one call, no match objects): their positions are
            # only needed for a tag that holds a listed link, read again by _tag_hits.
            wanted = _TAG_ATTRIBUTES.get(name, _STYLE_ONLY)
            listed = False
            seen: list[str] | None = None
            refresh: dict[str, str] | None = None
            for key, equals, double, single, unquoted in attributes(text, start, end):
                if not equals:  # no value: not an attribute the browser reads a URL from
                    continue
                key = key.lower()
                what = wanted.get(key)
                if what is None:
                    continue
                if seen is None:
                    seen = [key]
                elif key in seen:  # the first of a repeated attribute counts
                    continue
                else:
                    seen.append(key)
                raw = double or single or unquoted
                if what is _STYLE:
                    scratch: Hits = []
                    _scan_css(raw, 0, len(raw), base, verdict, scratch, styles, True)
                    listed = listed or bool(scratch)
                elif what is _SRCSET:
                    for candidate in _SRCSET_URL.finditer(raw):
                        url = candidate.group(1).rstrip(",")
                        if (values.get(url) or _value(url, base, verdict, values, links))[
                            1
                        ] is not None:
                            listed = True
                elif what is _CONTENT or what is _HTTP_EQUIV:
                    if refresh is None:
                        refresh = {}
                    refresh[what] = raw
                elif (values.get(raw) or _value(raw, base, verdict, values, links))[1] is not None:
                    listed = True
            if (
                refresh is not None
                and len(refresh) == 2
                and refresh[_HTTP_EQUIV].strip().lower() == "refresh"
                and (found := _REFRESH.match(refresh[_CONTENT])) is not None
                and found.group(2)
            ):
                raw = found.group(2)
                if (values.get(raw) or _value(raw, base, verdict, values, links))[1] is not None:
                    listed = True
            if listed:
                _tag_hits(text, start, end, wanted, base, verdict, hits, values, styles, links)
        if name in raw_text:
            closed = _END_TAGS[name].search(text, pos)
            close = len(text) if closed is None else closed.start()
            if name == "style":
                _scan_css(text, pos, close, base, verdict, hits, styles)
            pos = close
    return hits


def _tag_hits(
    text: str,
    start: int,
    end: int,
    wanted: dict[str, str],
    base: str,
    verdict: Verdict,
    hits: Hits,
    values: dict[str, tuple[str, Match | None]],
    styles: dict[str, tuple[str, Match | None]],
    links: Links,
) -> None:
    """The listed links of the attributes ``text[start:end]`` of one tag, with their
    positions (``_tag_links``); the verdicts are the page's, remembered."""
    seen: list[str] | None = None
    refresh: dict[str, tuple[int, int]] | None = None
    for attribute in _ATTRIBUTE.finditer(text, start, end):
        group = attribute.lastindex
        if group == 1:
            continue
        key = attribute.group(1).lower()
        what = wanted.get(key)
        if what is None:
            continue
        if seen is None:
            seen = [key]
        elif key in seen:
            continue
        else:
            seen.append(key)
        value_start, value_end = attribute.span(group)
        if what is _STYLE:
            _scan_css(text, value_start, value_end, base, verdict, hits, styles, True)
        elif what is _SRCSET:
            for candidate in _SRCSET_URL.finditer(text, value_start, value_end):
                url_start, url_end = candidate.span(1)
                while url_end > url_start and text[url_end - 1] == ",":
                    url_end -= 1
                raw = text[url_start:url_end]
                known = values.get(raw) or _value(raw, base, verdict, values, links)
                if known[1] is not None:
                    hits.append((Found(url_start, url_end, "resource", known[0]), known[1]))
        elif what is _CONTENT or what is _HTTP_EQUIV:
            if refresh is None:
                refresh = {}
            refresh[what] = (value_start, value_end)
        else:
            raw = text[value_start:value_end]
            known = values.get(raw) or _value(raw, base, verdict, values, links)
            if known[1] is not None:
                hits.append((Found(value_start, value_end, what, known[0]), known[1]))  # type: ignore[arg-type]
    if (
        refresh is not None
        and len(refresh) == 2
        and text[slice(*refresh[_HTTP_EQUIV])].strip().lower() == "refresh"
    ):
        found = _REFRESH.match(text, *refresh[_CONTENT])
        if found is not None and found.group(2):
            url_start, url_end = found.span(2)
            raw = text[url_start:url_end]
            known = values.get(raw) or _value(raw, base, verdict, values, links)
            if known[1] is not None:
                hits.append((Found(url_start, url_end, "navigate", known[0]), known[1]))


def _value(
    raw: str,
    base: str,
    verdict: Verdict,
    values: dict[str, tuple[str, Match | None]],
    links: Links,
) -> tuple[str, Match | None]:
    """What an attribute value links to and its verdict (``_found``), remembered for the page,
    and for later pages when it names its scheme (so the page's URL does not enter into it)
    and is ASCII once its references are undone (so the page's charset does not either)."""
    known = links.get(raw)
    if known is not None:
        return known
    written = _unescape(raw)
    url = _resolve(base, written)
    known = values[raw] = _NOTHING if url is None else (url, verdict(url))
    if (
        url is not None
        and url == written.strip()
        and _SCHEME.match(url)
        and url.isascii()
        and len(raw) <= VERDICT_URL_CHARS
    ):
        if len(links) >= VERDICTS_KEPT:
            links.clear()
        links[raw] = known
    return known


def _scan_css(
    text: str,
    start: int,
    end: int,
    base: str,
    verdict: Verdict,
    hits: Hits,
    values: dict[str, tuple[str, Match | None]],
    entities: bool = False,
) -> None:
    """``_css_links`` and the checks of what it finds."""
    if entities and "&" in text[start:end]:
        value = _unescape(text[start:end])
        inner: Hits = []
        _scan_css(value, 0, len(value), base, verdict, inner, values)
        hits.extend((Found(start, end, found.kind, found.url), match) for found, match in inner)
        return
    for found in _CSS_URL.finditer(text, start, end):
        url_start, url_end = found.span(found.lastindex or 0)
        raw = text[url_start:url_end]
        known = values.get(raw)
        if known is None:
            url = _resolve(base, _CSS_ESCAPE.sub(_css_unescape, raw) if "\\" in raw else raw)
            known = values[raw] = _NOTHING if url is None else (url, verdict(url))
        if known[1] is not None:
            hits.append((Found(url_start, url_end, "resource", known[0]), known[1]))


# -- checking ----------------------------------------------------------------------------------

#: Verdicts kept for the list in force (a URL costs the matcher about 4 us on average on the
#: scan benchmark's page, more on a listed host; a remembered one a dict lookup): pages of a
#: site share their navigation, scripts and stylesheets. Bounded: at most this many URLs
#: (then forgotten all at once) ...
VERDICTS_KEPT = 4096
#: ... of at most this many characters each (URLs and the attribute values they were read
#: from: at worst about 12 MiB in all, for pages of 1 KiB links; under 1 MiB for usual ones).
VERDICT_URL_CHARS = 1024


class Kept:
    """One list's verdicts kept from page to page: ``urls`` (URL -> match) and ``links`` (an
    absolute link as written in an attribute -> (URL, match)), each bounded by
    ``VERDICTS_KEPT`` and ``VERDICT_URL_CHARS``. Only dict gets and sets: safe from the
    threads that scan big pages (a clear loses verdicts, never mixes them up)."""

    __slots__ = ("links", "urls")

    def __init__(self) -> None:
        self.urls: dict[str, Match | None] = {}
        self.links: Links = {}


class Verdicts:
    """The verdicts kept for the list in force: the matcher is a pure function of the URL
    and the immutable list, so they hold while it does; another list starts afresh."""

    def __init__(self) -> None:
        self._held: tuple[Blocklist, Kept] | None = None

    def of(self, blocklist: Blocklist) -> Kept:
        """The verdicts of ``blocklist`` (whose ``match`` the scan is given as its check)."""
        held = self._held
        if held is None or held[0] is not blocklist:
            held = self._held = (blocklist, Kept())
        return held[1]


_UNKNOWN = Match("", "", "", False)  # (a verdict not yet known)


def _verdicts(
    check: Callable[[str], Match | None], charset: str | None, kept: Kept | None
) -> tuple[Verdict, Links]:
    """``check`` of a URL found in a page, as ``neutralize`` always called it: a URL with
    bytes >= 0x80 decoded in the page's ``charset`` first (None: it already is). Each
    distinct URL is checked once a page, and once while ``kept`` holds its verdict."""
    kept = kept or Kept()
    cache = kept.urls

    def verdict(url: str) -> Match | None:
        if charset is not None and not url.isascii():
            url = url.encode("latin-1").decode(charset, "replace")
        match = cache.get(url, _UNKNOWN)
        if match is _UNKNOWN:
            match = check(url)
            if len(url) <= VERDICT_URL_CHARS:
                if len(cache) >= VERDICTS_KEPT:
                    cache.clear()
                cache[url] = match
        return match

    return verdict, kept.links


# -- neutralizing ------------------------------------------------------------------------------


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
        verdict, links = _verdicts(check, charset if as_bytes else None, kept)
        edits = _scan(text, page_url, css, verdict, latin1=as_bytes, links=links)
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
