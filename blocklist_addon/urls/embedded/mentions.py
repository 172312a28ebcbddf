"""A host named in another site's path: fetched through that site, or only mentioned.

``https://i0.cdn.example/<host>/<path>``, ``/c/s/<host>/<path>`` (AMP caches),
``/unsafe/300x200/smart/<host>/<path>`` (Thumbor), ``/external/<sig>/https/<host>/<path>``
and ``/proxy/<host>/<path>`` fetch the host's page; ``/tag/<host>/``, ``/tag/<host>/page/2/``,
``/tag/<host>/feed/`` and ``/website/<host>/`` are pages *about* the host, which a
whole-host entry must not block. The rule (docs/matching.md, "A host in another site's
path") reads the segment before the host and what follows the host:

- after a word that names a page about a host (:data:`MENTION_WORDS`: ``tag``,
  ``website``, ``domain``, ``whois`` ...), it is a mention, whatever follows;
- after any other word of letters (``/stuff/<host>/``) it is a mention when only the
  wrapper's own listing follows: nothing, ``/``, ``/page/<n>/``, ``/feed/`` and the like
  (:data:`_LISTING`); a path that names something (``/anything``, ``/a.jpg``) is a fetch;
- after a word proxies route fetches by (:data:`ROUTE_WORDS`: ``proxy``, ``amp``, ``https``,
  Thumbor's ``smart`` and ``unsafe`` ...), and after anything that is not a word (the
  wrapper's host: the first segment, ``//``, a one- or two-letter route such as
  ``/c/s/``, options such as ``300x200``, a signature, a date), it is a fetch.
"""

from __future__ import annotations

import re

__all__ = ["MENTION_WORDS", "ROUTE_WORDS", "is_mention"]

#: Segments before a host that make a page about it: tag and category archives, site
#: information, WHOIS, ranking and security-scan pages.
MENTION_WORDS = frozenset(
    [
        "tag",
        "tags",
        "category",
        "categories",
        "topic",
        "topics",
        "label",
        "labels",
        "keyword",
        "keywords",
        "author",
        "website",
        "websites",
        "site",
        "sites",
        "siteinfo",
        "site-info",
        "web-site",
        "domain",
        "domains",
        "domain-name",
        "whois",
        "info",
        "information",
        "lookup",
        "search",
        "results",
        "result",
        "scan",
        "report",
        "reports",
        "stats",
        "statistics",
        "rank",
        "ranking",
        "review",
        "reviews",
        "check",
        "checker",
        "status",
        "analysis",
        "traffic",
        "similar",
        "alternatives",
        "compare",
        "overview",
        "profile",
        "hosts",
        "host",
        "dns",
        "ip",
        "reputation",
        "safety",
        "seo",
    ]
)
#: Segments before a host by which proxies route a fetch, even of the host's root.
ROUTE_WORDS = frozenset(
    [
        "http",
        "https",
        "proxy",
        "amp",
        "unsafe",
        "smart",
        "fit-in",
        "adaptive-fit-in",
        "full-fit-in",
        "trim",
        "meta",
        "left",
        "center",
        "right",
        "top",
        "middle",
        "bottom",
        "external",
        "img",
        "image",
        "images",
        "fetch",
        "browse",
        "mirror",
        "cache",
        "raw",
        "view",
    ]
)
#: A path segment that is a word (letters, hyphens): its text, and the separator after it.
_WORD_SEGMENT = re.compile(r"[/\\]([A-Za-z]{3,24}(?:-[A-Za-z]{2,24}){0,3})(?=[/\\])")
#: What a wrapper's listing of a host adds after it: nothing, "/", a page number, a feed.
_LISTING = re.compile(
    r"(?:[/\\](?:page[/\\][0-9]{1,6}|feed|rss|atom|amp|embed|comments[/\\]feed))?[/\\]?"
    r"(?=[?#&]|\Z)",
    re.IGNORECASE,
)


def word_segments(text: str, begin: int) -> dict[int, str]:
    """The path segments of ``text`` after ``begin`` that are words, by the position of the
    separator after each (one pass, so that each host marker costs one lookup)."""
    return {m.end(): m.group(1).lower() for m in _WORD_SEGMENT.finditer(text, begin)}


def is_mention(text: str, slash: int, host_end: int, words: dict[int, str]) -> bool:
    """Whether the host between ``slash`` (the separator before it) and ``host_end`` is only
    named by the page ``text`` is (or holds), not fetched through it. ``words``: the
    text's :func:`word_segments`."""
    word = words.get(slash)
    if word is None or word in ROUTE_WORDS:
        return False
    return word in MENTION_WORDS or _LISTING.match(text, host_end) is not None
