"""The fast page scan: the listed links of an HTML or CSS text, found and checked in one pass.

``neutralize`` (``content.pages``) does not go through ``find_links``: this finds and checks
together, with no generator or ``Found`` per link, each distinct attribute value resolved
once a page and each distinct URL checked once (then remembered for the list in force,
``content.verdicts``). ``find_links`` (``content.links``) stays the readable reference:
tests/test_pages_fast.py holds the two to the same output on generated pages. Every module
global the loops read is bound here by ``from ... import``, never looked up as an attribute
of another module per tag or link.
"""

from __future__ import annotations

import html
import html.entities
import re

from blocklist_addon.content.links import (
    ATTRIBUTE,
    ATTRIBUTE_TEXTS,
    CSS_ESCAPE,
    CSS_URL,
    END_TAGS,
    NEXT_TAG,
    RAW_TEXT,
    REFRESH,
    SCHEME,
    SRCSET_URL,
    URL_ATTRIBUTES,
    WANTED,
    Found,
    css_unescape,
    document_base,
    resolve,
)
from blocklist_addon.content.verdicts import (
    VERDICT_URL_CHARS,
    VERDICTS_KEPT,
    Links,
    Tags,
    Verdict,
)
from blocklist_addon.urls.matcher import Match

__all__ = ["Hits", "listed_links"]

Hits = list[tuple[Found, Match]]

# tag -> {attribute: what it holds}: a kind of URL, a srcset, CSS, or half of a meta refresh.
_STYLE, _SRCSET, _CONTENT, _HTTP_EQUIV = "style", "srcset", "content", "http-equiv"
_STYLE_ONLY: dict[str, str] = {"style": _STYLE}
_TAG_ATTRIBUTES: dict[str, dict[str, str]] = {
    "meta": {"style": _STYLE, "content": _CONTENT, "http-equiv": _HTTP_EQUIV}
}
for (_tag, _attribute), _kind in URL_ATTRIBUTES.items():
    _TAG_ATTRIBUTES.setdefault(_tag, dict(_STYLE_ONLY))[_attribute] = (
        _SRCSET if _attribute == "srcset" else _kind
    )
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


# NEXT_TAG for text of one byte a character (a page in an ASCII-compatible charset, held as
# latin-1): no latin-1 character folds to an ASCII letter, so the same tokens without
# re.IGNORECASE, whose case-folded name alternation cost a quarter of the whole tokenizer.
_WANTED_ALTERNATION = "(?:" + "|".join(WANTED) + r")[\s/>]"
if _WANTED_ALTERNATION not in NEXT_TAG.pattern or "(?!style[" not in NEXT_TAG.pattern:
    raise RuntimeError("NEXT_TAG changed: derive _NEXT_TAG_LATIN1 from it again")
_NEXT_TAG_LATIN1 = re.compile(
    NEXT_TAG.pattern.replace(_WANTED_ALTERNATION, "(?:" + _case_free(WANTED) + r")[\s/>]").replace(
        "(?!style[", "(?![sS][tT][yY][lL][eE]["
    ),
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


def listed_links(
    text: str,
    page_url: str,
    css: bool,
    verdict: Verdict,
    latin1: bool = False,
    links: Links | None = None,
    tags: Tags | None = None,
) -> Hits:
    """``[(found, match)]`` for the listed links of ``text``, in ``find_links``'s order;
    ``latin1``: ``text`` holds no character above U+00FF; ``links``: absolute links' verdicts
    kept from earlier pages (``_value``); ``tags``: tags kept from earlier pages whose every
    URL is such a link and none listed (their attributes are not read again)."""
    if links is None:
        links = {}
    if tags is None:
        tags = set()
    hits: Hits = []
    if css:
        _scan_css(text, 0, len(text), page_url, verdict, hits, {})
        return hits
    base = document_base(text, page_url)
    values: dict[str, tuple[str, Match | None]] = {}  # attribute value -> (URL, match)
    styles: dict[str, tuple[str, Match | None]] = {}  # the same for CSS URLs
    next_tag = (_NEXT_TAG_LATIN1 if latin1 else NEXT_TAG).match
    attributes = ATTRIBUTE_TEXTS.findall
    raw_text = RAW_TEXT
    pos = 0
    while (tag := next_tag(text, pos)) is not None:
        pos = tag.end()
        name = tag.group(1).lower()
        start, end = tag.span(2)
        if start != end and (written := text[tag.start(1) : end]) not in tags:
            # The attributes' texts first (one call, no match objects): their positions are
            # only needed for a tag that holds a listed link, read again by _tag_hits.
            wanted = _TAG_ATTRIBUTES.get(name, _STYLE_ONLY)
            listed = False
            portable = True  # every URL an absolute link kept in links: the page's own not read
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
                    portable = False
                elif what is _SRCSET:
                    for candidate in SRCSET_URL.finditer(raw):
                        url = candidate.group(1).rstrip(",")
                        if (values.get(url) or _value(url, base, verdict, values, links))[
                            1
                        ] is not None:
                            listed = True
                        if url not in links:
                            portable = False
                elif what is _CONTENT or what is _HTTP_EQUIV:
                    if refresh is None:
                        refresh = {}
                    refresh[what] = raw
                    portable = False
                else:
                    if (values.get(raw) or _value(raw, base, verdict, values, links))[
                        1
                    ] is not None:
                        listed = True
                    if raw not in links:
                        portable = False
            if (
                refresh is not None
                and len(refresh) == 2
                and refresh[_HTTP_EQUIV].strip().lower() == "refresh"
                and (found := REFRESH.match(refresh[_CONTENT])) is not None
                and found.group(2)
            ):
                raw = found.group(2)
                if (values.get(raw) or _value(raw, base, verdict, values, links))[1] is not None:
                    listed = True
            if listed:
                _tag_hits(text, start, end, wanted, base, verdict, hits, values, styles, links)
            elif portable and len(written) <= VERDICT_URL_CHARS:
                if len(tags) >= VERDICTS_KEPT:
                    tags.clear()
                tags.add(written)
        if name in raw_text:
            closed = END_TAGS[name].search(text, pos)
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
    positions (``links._tag_links``); the verdicts are the page's, remembered."""
    seen: list[str] | None = None
    refresh: dict[str, tuple[int, int]] | None = None
    for attribute in ATTRIBUTE.finditer(text, start, end):
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
            for candidate in SRCSET_URL.finditer(text, value_start, value_end):
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
        found = REFRESH.match(text, *refresh[_CONTENT])
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
    """What an attribute value links to and its verdict (``links._found``), remembered for the page,
    and for later pages when it names its scheme (so the page's URL does not enter into it)
    and is ASCII once its references are undone (so the page's charset does not either)."""
    known = links.get(raw)
    if known is not None:
        return known
    written = _unescape(raw)
    url = resolve(base, written)
    known = values[raw] = _NOTHING if url is None else (url, verdict(url))
    if (
        url is not None
        and url == written.strip()
        and SCHEME.match(url)
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
    """``links._css_links`` and the checks of what it finds."""
    if entities and "&" in text[start:end]:
        value = _unescape(text[start:end])
        inner: Hits = []
        _scan_css(value, 0, len(value), base, verdict, inner, values)
        hits.extend((Found(start, end, found.kind, found.url), match) for found, match in inner)
        return
    for found in CSS_URL.finditer(text, start, end):
        url_start, url_end = found.span(found.lastindex or 0)
        raw = text[url_start:url_end]
        known = values.get(raw)
        if known is None:
            url = resolve(base, CSS_ESCAPE.sub(css_unescape, raw) if "\\" in raw else raw)
            known = values[raw] = _NOTHING if url is None else (url, verdict(url))
        if known[1] is not None:
            hits.append((Found(url_start, url_end, "resource", known[0]), known[1]))
