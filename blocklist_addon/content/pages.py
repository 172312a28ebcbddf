"""Links to listed URLs inside HTML and CSS, found and neutralized without touching the rest.

A page that embeds or links a listed page hands it to the browser as surely as a typed URL:
the proxy rewrites such links before the page reaches the user (DESIGN "Matching semantics":
embedded URLs in HTML and CSS bodies). Links and frames (``a``, ``area``, ``iframe``,
``frame``, ``form action``, ``formaction``, meta refresh) are pointed at the proxy's splash
page; resources (``img``, ``script``, ``link``, ``source``, ``video``, ``audio``, ``track``,
``embed``, ``object``, ``input type=image``, ``srcset``, ``poster``, CSS ``url()`` and
``@import``, in ``<style>`` and ``style=""``) are replaced by ``about:invalid#blocked``,
which no browser fetches. Every other byte of the page is kept as it was.

Pure functions, no I/O: ``neutralize(body, content_type, page_url, check, splash_url)``.
The scanner is a small tokenizer, not a full HTML parser: it knows tags, quoted and unquoted
attribute values, comments, and the raw-text elements (``script``, ``style``, ``textarea``,
``title``) whose contents are not markup, which is what decides where a URL is. Work is
linear in the page: every regex is possessive or bounded, and an unterminated quote or
comment ends the scan as a browser would end the document.
"""

from __future__ import annotations

import codecs
import functools
import html
import re
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple
from urllib.parse import urljoin, urlsplit

from blocklist_addon.urls.canonical import canonical_host, dns_suffixes
from blocklist_addon.urls.embedded.markers import PLAIN
from blocklist_addon.urls.matcher import Blocklist, Match

__all__ = ["BLOCKED_RESOURCE", "Found", "charset_of", "find_links", "neutralize"]

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
    base = page_url
    if (found := _BASE.search(text)) is not None:
        base = _resolve(page_url, html.unescape(_first(found.groups()) or ""))
    yield from _html_links(text, base)


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
# distinct URL checked once (then remembered for the list in force), and only links on a
# listed host, or carrying an embedded URL, sent to the matcher. ``find_links`` stays the
# readable reference: tests/test_pages_fast.py holds the two to the same output on generated
# pages.

Verdict = Callable[[str], "Match | None"]
Hits = list[tuple[Found, Match]]

# tag -> {attribute: what it holds}: a kind of URL, CSS ("style"), or half of a meta refresh.
_STYLE_ONLY: dict[str, str] = {"style": "style"}
_TAG_ATTRIBUTES: dict[str, dict[str, str]] = {
    "meta": {"style": "style", "content": "content", "http-equiv": "http-equiv"}
}
for (_tag, _attribute), _kind in _URL_ATTRIBUTES.items():
    _TAG_ATTRIBUTES.setdefault(_tag, dict(_STYLE_ONLY))[_attribute] = _kind
_END_TAGS = {name: re.compile(r"</" + name + r"[\s/>]", re.IGNORECASE) for name in _RAW_TEXT}
_NOTHING = ("", None)  # a value with no URL to check, or one not listed


def _scan(text: str, page_url: str, css: bool, verdict: Verdict) -> Hits:
    """``[(found, match)]`` for the listed links of ``text``, in ``find_links``'s order."""
    hits: Hits = []
    if css:
        _scan_css(text, 0, len(text), page_url, verdict, hits, {})
        return hits
    base = page_url
    if (found := _BASE.search(text)) is not None:
        base = _resolve(page_url, html.unescape(_first(found.groups()) or ""))
    values: dict[str, tuple[str, Match | None]] = {}  # attribute value -> (URL, match)
    styles: dict[str, tuple[str, Match | None]] = {}  # the same for CSS URLs
    next_tag = _NEXT_TAG.match
    attributes = _ATTRIBUTE.finditer
    pos = 0
    while (tag := next_tag(text, pos)) is not None:
        pos = tag.end()
        name = tag.group(1).lower()
        wanted = _TAG_ATTRIBUTES.get(name, _STYLE_ONLY)
        seen: set[str] = set()
        refresh: dict[str, tuple[int, int]] = {}
        start, end = tag.span(2)
        for attribute in attributes(text, start, end) if start != end else ():
            group = attribute.lastindex
            if group == 1:  # no value: not an attribute the browser reads a URL from
                continue
            key = attribute.group(1).lower()
            what = wanted.get(key)
            if what is None or key in seen:  # (the first of a repeated attribute counts)
                continue
            seen.add(key)
            value_start, value_end = attribute.span(group)
            if what == "style":
                _scan_css(text, value_start, value_end, base, verdict, hits, styles, True)
            elif what == "content" or what == "http-equiv":
                refresh[what] = (value_start, value_end)
            elif key == "srcset":
                for candidate in _SRCSET_URL.finditer(text, value_start, value_end):
                    url_start, url_end = candidate.span(1)
                    while url_end > url_start and text[url_end - 1] == ",":
                        url_end -= 1
                    _check_value(text, url_start, url_end, what, base, verdict, hits, values)  # type: ignore[arg-type]
            else:
                _check_value(text, value_start, value_end, what, base, verdict, hits, values)  # type: ignore[arg-type]
        if len(refresh) == 2 and text[slice(*refresh["http-equiv"])].strip().lower() == "refresh":
            found = _REFRESH.match(text, *refresh["content"])
            if found is not None and found.group(2):
                _check_value(text, *found.span(2), "navigate", base, verdict, hits, values)
        if name in _RAW_TEXT:
            closed = _END_TAGS[name].search(text, pos)
            close = len(text) if closed is None else closed.start()
            if name == "style":
                _scan_css(text, pos, close, base, verdict, hits, styles)
            pos = close
    return hits


def _check_value(
    text: str,
    start: int,
    end: int,
    kind: Kind,
    base: str,
    verdict: Verdict,
    hits: Hits,
    values: dict[str, tuple[str, Match | None]],
) -> None:
    """``_found`` and the check of what it finds, once for each distinct value of a page."""
    raw = text[start:end]
    known = values.get(raw)
    if known is None:
        url = _resolve(base, html.unescape(raw) if "&" in raw else raw)
        known = values[raw] = _NOTHING if url is None else (url, verdict(url))
    if known[1] is not None:
        hits.append((Found(start, end, kind, known[0]), known[1]))


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
        value = html.unescape(text[start:end])
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

#: Verdicts kept for the list in force (an unlisted URL costs the matcher 5 to 30 us, a
#: remembered one a dict lookup): pages of a site share their navigation, scripts and
#: stylesheets. Bounded: at most this many URLs (then forgotten all at once) ...
VERDICTS_KEPT = 4096
#: ... of at most this many characters each (under 5 MiB in all).
VERDICT_URL_CHARS = 1024

# An http(s) URL whose host is plain ASCII letters, digits and hyphens in non-empty labels
# (no user info, escape, trailing dot or IPv6): the matcher reads that host without its full
# parser (its _SIMPLE_AUTHORITY matches every such URL and takes the same host).
_PLAIN_HTTP_HOST = re.compile(
    r"[hH][tT][tT][pP][sS]?://([A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*+)(?::[0-9]++)?+(?=[/?#]|\Z)"
)
_TRANSLATE_HOST = ".translate.goog"  # Google Translate's proxy: the matcher reads its label

# The list whose verdicts are kept, those verdicts (URL -> match), and what its host index
# says of hosts (name -> on a listed host). Replaced whole when another list is in force.
_kept: tuple[Blocklist, dict[str, Match | None], dict[str, bool]] | None = None


def _verdicts(check: Callable[[str], Match | None], charset: str | None) -> Verdict:
    """``check`` of a URL found in a page, as ``neutralize`` always called it: a URL with
    bytes >= 0x80 decoded in the page's ``charset`` first (None: it already is).

    ``Blocklist.match`` itself gets two shortcuts, both exact: a URL it has answered for the
    same list is answered from memory, and a plain http(s) URL whose host has no listed
    suffix and which holds no embedded URL (the embedded-URL search's own fast refusal,
    ``PLAIN``) is not listed, as the matcher would find after more work (its host index is
    the same lookup). Any other ``check`` is called once for each distinct URL of a page."""
    global _kept
    blocklist = getattr(check, "__self__", None)
    if not (
        isinstance(blocklist, Blocklist) and getattr(check, "__func__", None) is Blocklist.match
    ):
        cache: dict[str, Match | None] = {}
        return _remembering(check, cache, charset, None, {})
    kept = _kept
    if kept is None or kept[0] is not blocklist:
        kept = _kept = (blocklist, {}, {})
    return _remembering(check, kept[1], charset, _host_index(blocklist), kept[2])


def _host_index(blocklist: Blocklist) -> Callable[[str, bool], bool] | None:
    """Whether a canonical host or a parent domain is in ``blocklist``'s host index, by the
    lookup the matcher makes (compiled when built); None for a list with entries known only
    by digest (no host index covers them)."""
    snapshot = blocklist.snapshot
    if snapshot.hostless:
        return None
    compiled = snapshot.compiled_lookup(0)
    listed_hosts = snapshot.listed_hosts

    def on_listed_host(host: str, is_ip: bool) -> bool:
        if compiled is not None and (listed := compiled.listed_hosts(host, is_ip)) is not None:
            return bool(listed)
        return bool(listed_hosts(dns_suffixes(host, is_ip)))

    return on_listed_host


def _remembering(
    check: Callable[[str], Match | None],
    cache: dict[str, Match | None],
    charset: str | None,
    host_index: Callable[[str, bool], bool] | None,
    hosts: dict[str, bool],
) -> Verdict:
    plain_host = _PLAIN_HTTP_HOST.match
    plain = PLAIN.fullmatch

    def on_listed_host(name: str) -> bool:
        assert host_index is not None
        found = canonical_host(name)
        listed = found is None or name.endswith(_TRANSLATE_HOST) or host_index(*found)
        if len(hosts) >= VERDICTS_KEPT:
            hosts.clear()
        hosts[name] = listed
        return listed

    def verdict(url: str) -> Match | None:
        if charset is not None and not url.isascii():
            url = url.encode("latin-1").decode(charset, "replace")
        try:
            return cache[url]
        except KeyError:
            pass
        match = None
        if (
            host_index is None
            or (m := plain_host(url)) is None
            or not url.isascii()
            or plain(url) is None
            or hosts.get(name := m.group(1).lower())
            or (name not in hosts and on_listed_host(name))
        ):
            match = check(url)
        if len(url) <= VERDICT_URL_CHARS:
            if len(cache) >= VERDICTS_KEPT:
                cache.clear()
            cache[url] = match
        return match

    return verdict


# -- neutralizing ------------------------------------------------------------------------------


def neutralize(
    body: bytes,
    content_type: str | None,
    page_url: str,
    check: Callable[[str], Match | None],
    splash_url: Callable[[Match], str],
) -> tuple[bytes, list[tuple[Found, Match]]]:
    """``body`` with every listed link neutralized, and what was found listed.

    ``check`` is the matcher (``Blocklist.match``); ``splash_url`` says where a neutralized
    link or frame points. A body that cannot be decoded exactly is returned unchanged.
    """
    return _neutralize(body, content_type, page_url, check, splash_url, fast=True)


def _neutralize(
    body: bytes,
    content_type: str | None,
    page_url: str,
    check: Callable[[str], Match | None],
    splash_url: Callable[[Match], str],
    *,
    fast: bool,
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
        edits = _scan(text, page_url, css, _verdicts(check, charset if as_bytes else None))
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
