"""The matcher's verdicts on a page's URLs, remembered from page to page while one list is in
force (``Verdicts.of``, held by the page guard): the fast scan (``content.scan``) checks a
URL once a page, and once a list when the verdict is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from blocklist_addon.urls.matcher import Blocklist, Match

__all__ = [
    "VERDICTS_KEPT",
    "VERDICT_URL_CHARS",
    "Kept",
    "Links",
    "Tags",
    "Verdict",
    "Verdicts",
    "page_verdicts",
]

#: A URL found in a page -> its match, or None when it is not listed.
Verdict = Callable[[str], "Match | None"]
#: An absolute link as written in an attribute -> (the URL it resolves to, its match).
Links = dict[str, tuple[str, "Match | None"]]
#: Tags as written (name and attributes) whose every URL is such a link, none listed.
Tags = set[str]

#: Verdicts kept for the list in force (a URL costs the matcher about 4 us on average on the
#: scan benchmark's page, more on a listed host; a remembered one a dict lookup): pages of a
#: site share their navigation, scripts and stylesheets. Bounded: at most this many URLs
#: (then forgotten all at once) ...
VERDICTS_KEPT = 4096
#: ... of at most this many characters each (URLs and the attribute values they were read
#: from: at worst about 12 MiB in all, for pages of 1 KiB links; under 1 MiB for usual ones).
VERDICT_URL_CHARS = 1024


class Kept:
    """One list's verdicts kept from page to page: ``urls`` (URL -> match), ``links`` (an
    absolute link as written in an attribute -> (URL, match)) and ``tags`` (a tag as written
    whose every URL is in ``links``, none listed: a site's pages repeat their navigation,
    scripts and stylesheets tag for tag), each bounded by ``VERDICTS_KEPT`` and
    ``VERDICT_URL_CHARS``. Only dict and set gets and sets: safe from the threads that scan
    big pages (a clear loses verdicts, never mixes them up)."""

    __slots__ = ("links", "tags", "urls")

    def __init__(self) -> None:
        self.urls: dict[str, Match | None] = {}
        self.links: Links = {}
        self.tags: Tags = set()


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


def page_verdicts(
    check: Callable[[str], Match | None], charset: str | None, kept: Kept | None
) -> tuple[Verdict, Links, Tags]:
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

    return verdict, kept.links, kept.tags
