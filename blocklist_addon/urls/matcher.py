"""Matching URLs, and the URLs embedded in them, against a compiled list.

The rule is Safe Browsing's host-suffix / path-prefix expressions, applied without the
spec's 5 x 6 cap (every suffix of the host and every directory above the path), so that an
entry blocks exactly what DESIGN promises: a page on its host and subdomains, a directory
and everything below it, or a whole host, and never a parent or a sibling.

Most URLs are decided by the host index alone: the host and its suffixes are looked up as
4-byte keys, and only a URL on a listed host pays for full canonicalization and the
expression digests.

Those lookups (hashing a host's suffixes and probing the host index; hashing a listed
URL's expressions and walking its directories) run in C (``_lookup.c``) when the extension
is built; the Python here and in ``snapshot.py`` is the reference it is tested against,
and what ``Blocklist(snapshot, compiled=False)`` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from blocklist_addon.urls.canonical import (
    MAX_SB_HOSTS,
    MAX_SB_PREFIXES,
    Canonical,
    canonical_host,
    dns_suffixes,
    host_suffixes,
    parse,
    path_prefixes,
)
from blocklist_addon.urls.embedded import embedded_urls
from blocklist_addon.urls.snapshot import (
    DIGEST_SIZE,
    UNKNOWN_DEPTH,
    Snapshot,
    expression_digest,
    host_key,
)

__all__ = [
    "Blocklist",
    "Entry",
    "HostListing",
    "Match",
    "compile_entry",
    "directory_depth",
    "exempt_hosts",
    "expression_of",
    "untranslated_host",
]

DEFAULT_LIST = "default"

#: The directories of a path on a listed host are looked up to the host's deepest directory
#: entry (the snapshot's ``depths``), but never fewer than this many: then the time a URL
#: takes tells nothing of how deep a host's entries go, unless one is deeper than this.
WALK_FLOOR = 16

# An ordinary http(s) URL, protocol-relative URL or host/path whose host is plain ASCII (no
# userinfo, IPv6 literal, escapes, whitespace or backslash), so the host can be read without
# the full parser and gives the same result (embedded candidates are mostly of these
# forms). RFC 3986's sub-delimiters are host characters the canonical form keeps as they
# are: a bare value running on past the wrapper's "&" ("h0.test&a=h1.test&a=...") is such a
# host, no listed one, and thousands of them in a hostile URL each cost a full parse (27 us).
# The other special schemes ("ftp:80" is scheme ftp and host 80, not host ftp and port 80)
# and anything else take the full parser.
_SIMPLE_AUTHORITY = re.compile(
    r"(?!(?i:wss?|ftp):)(?:[hH][tT][tT][pP][sS]?:)?(?://)?"
    r"([A-Za-z0-9._~!$&'()*+,;=\-]+)(?::[0-9]+)?(?=[/?#]|$)"
)


@dataclass(frozen=True, slots=True)
class Match:
    """Why a URL is blocked. Carries no listed text: only names, the opaque entry id and
    the digest of the expression that matched."""

    list_name: str
    entry_id: str
    digest: str  # hex of the matched expression's truncated SHA-256
    embedded: bool  # True when a URL embedded in the requested one matched


@dataclass(frozen=True, slots=True)
class HostListing:
    """What the list holds for a host before any URL is known (a CONNECT, a TLS client
    hello): whether a request there could match, and whether the host is listed whole."""

    entries: bool  # some entry is on this host or a parent domain: the URL decides
    whole: Match | None  # the host or a parent domain is listed as a whole

    @property
    def listed(self) -> bool:
        return self.entries or self.whole is not None


NOT_LISTED = HostListing(False, None)


@dataclass(frozen=True, slots=True)
class Entry:
    """One list entry as a feed gives it: a URL or host/path expression."""

    url: str
    id: str | None = None
    list_name: str = DEFAULT_LIST


def compile_entry(url: str) -> Canonical | None:
    """Canonicalize a feed entry exactly as requests are (None when it is not a URL)."""
    return parse(url.strip())


def directory_depth(c: Canonical) -> int:
    """A compiled entry's directory depth for ``Snapshot.build``: how many directory
    expressions of a URL on its host must be looked up for it to match (one more than its
    segments for a directory entry, ``host/`` 1; 0 for a page or query entry, which the
    walk never meets). The sync worker passes it with each entry's digest."""
    return c.path.count("/") if c.query is None and c.path.endswith("/") else 0


def expression_of(c: Canonical) -> str:
    """The expression a compiled entry is listed under (host, path and query, no scheme):
    the text whose digest the list stores; the sync worker digests feed entries with it."""
    query = "" if c.query is None else "?" + c.query
    return f"{c.host}{c.path}{query}"


class Blocklist:
    """An immutable, compiled list; ``match`` is safe to call from any thread."""

    __slots__ = ("_compiled", "_depth", "_find", "_hosts_listed", "snapshot")

    def __init__(self, snapshot: Snapshot, *, compiled: bool = True) -> None:
        self.snapshot = snapshot
        # The compiled lookups (None: the reference below, also when not built).
        self._compiled = snapshot.compiled_lookup(WALK_FLOOR) if compiled else None
        # The two lookups every match is made of (instance attributes, so that a test can
        # count them): the host index, one call for all the suffixes of a host, then the
        # expression digests of a URL on a listed host, one call for each listed host.
        self._hosts_listed = snapshot.listed_hosts
        self._find = snapshot.find_first
        self._depth = snapshot.host_depth

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[str | Entry],
        list_name: str = DEFAULT_LIST,
        meta: Mapping[str, object] | None = None,
        *,
        compiled: bool = True,
    ) -> Blocklist:
        """Compile URLs (or ``Entry`` objects) into a list. An entry that is not a URL is
        an error naming its position, never its text (the list is confidential)."""

        def entries_compiled() -> Iterable[tuple[bytes, bytes, str, str | None, int]]:
            for n, item in enumerate(entries, 1):
                entry = Entry(item, list_name=list_name) if isinstance(item, str) else item
                c = compile_entry(entry.url)
                if c is None:
                    raise ValueError(f"entry {n} is not a URL or host/path expression")
                yield (
                    expression_digest(expression_of(c)),
                    host_key(c.host),
                    entry.list_name,
                    entry.id,
                    directory_depth(c),
                )

        return cls(Snapshot.build(entries_compiled(), meta), compiled=compiled)

    @classmethod
    def from_bytes(cls, data: bytes, *, compiled: bool = True) -> Blocklist:
        return cls(Snapshot.from_bytes(data), compiled=compiled)

    @classmethod
    def load(cls, store_url: str | None = None) -> Blocklist:
        """The active list of a store (the data dir's embedded store by default). From
        async code, ``await Blocklist.aload(store_url)`` instead."""
        return asyncio.run(cls.aload(store_url))

    @classmethod
    async def aload(cls, store_url: str | None = None) -> Blocklist:
        from blocklist_addon.lists.store import StoreError, open_store

        store = open_store(store_url)
        try:
            pair = await store.load_active()
        finally:
            await store.close()
        if pair is None:
            raise StoreError(f"no list is active in {store.url}: run blocklist-sync first")
        return cls.from_bytes(pair[1])

    def to_bytes(self) -> bytes:
        return self.snapshot.to_bytes()

    def __len__(self) -> int:
        return len(self.snapshot)

    def match(self, url: str, *, embedded_exempt: Collection[str] = ()) -> Match | None:
        """The entry that blocks ``url`` or a URL embedded in it, or None.

        ``embedded_exempt``: hosts (and their subdomains) whose URLs are checked themselves
        but not for the URLs embedded in them, such as a hotline's report form, which
        carries the listed URL someone reports (blocking it would stop the report)."""
        found = self._match_url(url)
        if found is not None:
            return found
        inner = embedded_urls(url, host_key=self._host_key)
        if inner and embedded_exempt and _is_exempt(url, embedded_exempt):
            return None
        for candidate in inner:
            found = self._match_url(candidate, embedded=True)
            if found is not None:
                return found
        return None

    def host_listing(self, host: str) -> HostListing:
        """What the list holds for ``host`` (a name, an IPv4 address in any spelling, or an
        IPv6 address with or without brackets). Entries known only by digest (sha256 feeds)
        are found here only when they list a whole host: their pages need the URL."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        found = canonical_host(host.lower())
        if found is None:
            return NOT_LISTED
        listing = self._host_listing(*found)
        original = untranslated_host(found[0])
        if original is not None:  # Google Translate's proxy serves that host's pages
            other = self._host_listing(*original)
            listing = HostListing(listing.entries or other.entries, listing.whole or other.whole)
        return listing if listing.listed else NOT_LISTED

    # -- internals -----------------------------------------------------------------------

    def _host_listing(self, host: str, is_ip: bool) -> HostListing:
        listed = self._listed_hosts(host, is_ip)
        candidates = listed
        if self.snapshot.hostless:
            candidates = list(dict.fromkeys([*listed, *host_suffixes(host, is_ip, MAX_SB_HOSTS)]))
        whole = self._find_any(candidates, ["/"], embedded=False) if candidates else None
        return HostListing(bool(listed), whole)

    def _host_key(self, authority: str) -> tuple[str, ...] | None:
        """What a URL's scheme and host (as written) can match: the listed hosts it falls
        under (None: none, so no URL there matches). Entries known only by digest are
        not indexed by host: every host is its own key then."""
        if self._compiled is not None and not self.snapshot.hostless:
            listed = self._compiled.simple_hosts(authority)  # (None: read it here)
            if listed is not None:
                return tuple(listed) or None
        m = _SIMPLE_AUTHORITY.match(authority)
        found = canonical_host(m.group(1).lower()) if m is not None else None
        if found is None:  # (the fast reading's None is parse's too, as in _match_url)
            c = parse(authority) if m is None else None
            if c is None:
                return None
            found = c.host, c.is_ip
        if self.snapshot.hostless:
            return (found[0],)
        return tuple(self._listed_hosts(*found)) or None

    def _listed_hosts(self, host: str, is_ip: bool) -> list[str]:
        if self._compiled is not None:
            listed = self._compiled.listed_hosts(host, is_ip)
            if listed is not None:  # (None: not ASCII, which canonical hosts are)
                return listed
        return self._hosts_listed(dns_suffixes(host, is_ip))

    def _match_url(self, url: str, embedded: bool = False) -> Match | None:
        hosts: list[str] | None = None
        if self._compiled is not None and self.snapshot.hostless == 0:
            # The fast reading below, for a plain host, in one call (None: read it here).
            hosts = self._compiled.simple_hosts(url)
            if hosts is not None and not hosts:
                return None
        m = _SIMPLE_AUTHORITY.match(url) if hosts is None else None
        if m is not None and self.snapshot.hostless == 0:
            name = m.group(1).lower()
            host = canonical_host(name)
            if host is None:
                return None
            hosts = self._listed_hosts(*host)
            if not hosts and not name.endswith(_TRANSLATE_SUFFIXES):
                return None
        c = parse(url)
        if c is None:
            return None
        if c.host.endswith(_TRANSLATE_SUFFIXES) and not c.is_ip:
            found = self._match_translated(c, embedded)
            if found is not None:
                return found
        return self._match_canonical(c, hosts, embedded)

    def _match_translated(self, c: Canonical, embedded: bool) -> Match | None:
        """A page through Google Translate's proxy host: ``listed-example.translate.goog``
        serves ``listed.example``'s pages (its own ``_x_tr_`` parameters dropped)."""
        original = untranslated_host(c.host)
        if original is None:
            return None
        query = c.query
        if query is not None:
            query = "&".join(p for p in query.split("&") if not p.startswith("_x_tr_")) or None
        translated = c._replace(host=original[0], is_ip=original[1], query=query)
        return self._match_canonical(translated, None, embedded=True)

    def _match_canonical(
        self, c: Canonical, hosts: list[str] | None, embedded: bool
    ) -> Match | None:
        if hosts is None:
            hosts = self._listed_hosts(c.host, c.is_ip)
        if hosts:
            found = self._find_on_hosts(hosts, c, embedded)
            if found is not None:
                return found
        if self.snapshot.hostless:
            # Entries known only by digest: check the spec's 5 x 6 expressions of the URL.
            return self._find_any(
                host_suffixes(c.host, c.is_ip, MAX_SB_HOSTS),
                _paths(c, MAX_SB_PREFIXES),
                embedded,
            )
        return None

    def _find_on_hosts(self, hosts: list[str], c: Canonical, embedded: bool) -> Match | None:
        """``_find_any(hosts, _paths(c, None), embedded)`` in time linear in the path: the
        digests of the directory expressions are made by extending one hash, not by
        building and hashing each prefix whole (a 64 KiB path of 32,000 directories on a
        listed host took 1.9 s, on the event loop), and only down to the host's deepest
        directory entry (``WALK_FLOOR`` at least): no deeper one can match. Same
        expressions, same order; a host's are looked up in one call."""
        before, after = _exact_paths(c)
        if self._compiled is not None and c.path.startswith("/"):
            hit = self._compiled.find_on_hosts(hosts, before, c.path, after)
            if hit is None:
                return None
            list_name, entry_id = self.snapshot.entry(hit[0])
            return Match(list_name, entry_id, hit[1].hex(), embedded)
        segments = c.path.split("/")[1:-1]
        size = DIGEST_SIZE
        for h in hosts:
            digests = [expression_digest(h + p) for p in before]
            depth = self._depth(h)
            walk = segments if depth == UNKNOWN_DEPTH else segments[: max(depth, WALK_FLOOR) - 1]
            state = hashlib.sha256(h.encode("utf-8") + b"/")
            digests.append(state.copy().digest()[:size])
            for segment in walk:
                state.update(segment.encode("utf-8") + b"/")
                digests.append(state.copy().digest()[:size])
            digests += [expression_digest(h + p) for p in after]
            if (found := self._found(digests, embedded)) is not None:
                return found
        return None

    def _found(self, digests: list[bytes], embedded: bool) -> Match | None:
        hit = self._find(digests)
        if hit is None:
            return None
        at, index = hit
        list_name, entry_id = self.snapshot.entry(index)
        return Match(list_name, entry_id, digests[at].hex(), embedded)

    def _find_any(self, hosts: list[str], paths: list[str], embedded: bool) -> Match | None:
        digests = [expression_digest(h + p) for h in hosts for p in paths]
        return self._found(digests, embedded)


def _exact_paths(c: Canonical) -> tuple[list[str], list[str]]:
    """The path expressions a URL is matched by, but the directories of its path: those
    before the directories (the path with its query, the path) and those after (the
    page-as-directory spelling, Google's reading of an escaped "?"). The directories are
    walked apart (``_find_on_hosts`` extends one hash, ``_paths`` builds the spec's few):
    the directories of the escaped-"?" reading's head are the path's own, so one walk
    serves both readings."""
    before = ([f"{c.path}?{c.query}"] if c.query is not None else []) + [c.path]
    after = []
    if len(c.path) > 1 and c.path.endswith("/"):
        # "/page/" is the same resource as the listed page "/page" on most servers.
        after.append(c.path[:-1])
        if c.query is not None:
            after.append(f"{c.path[:-1]}?{c.query}")
    if "%3F" in c.path:
        # Canonicalization keeps an escaped "?" in the path, as browsers do; Google's
        # reference implementation (and a server that unescapes before it splits) starts
        # the query there, so "page.html%3Fid=1" is also the page "page.html".
        head, _, rest = c.path.partition("%3F")
        query = rest.replace("%3F", "?") + ("" if c.query is None else "?" + c.query)
        after += [f"{head}?{query}", head]
    return before, after


def _paths(c: Canonical, limit: int | None) -> list[str]:
    """The path expressions a URL is matched by (every directory with no ``limit``, else
    the spec's first ``limit``): ``_exact_paths`` around the directories of the path."""
    before, after = _exact_paths(c)
    directories = path_prefixes(c.path, None, limit)[1:]
    return before + directories + after


_TRANSLATE_SUFFIXES = (".translate.goog", ".translate.goog.")
_TRANSLATED_LABEL = re.compile(r"--|-")


def untranslated_host(host: str) -> tuple[str, bool] | None:
    """The canonical host a Google Translate proxy host stands for (its label before
    ``.translate.goog`` has "." written as "-" and "-" as "--"), or None."""
    if not host.endswith(_TRANSLATE_SUFFIXES):
        return None
    label = host.rstrip(".").removesuffix(".translate.goog").rpartition(".")[2]
    if not label:
        return None
    return canonical_host(_TRANSLATED_LABEL.sub(lambda m: "-" if m.group() == "--" else ".", label))


def exempt_hosts(text: str) -> frozenset[str]:
    """Canonical hosts from a comma-separated setting (``blocklist_embedded_exempt``).
    Raises ValueError naming an item that is not a host name or address."""
    hosts = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        found = canonical_host(item) if _HOST_ONLY.fullmatch(item) else None
        if found is None:
            raise ValueError(f"not a host name: {item!r}")
        hosts.add(found[0])
    return frozenset(hosts)


_HOST_ONLY = re.compile(r"[^/\\?#@:\s]+|\[[0-9A-Fa-f:.]+\]")


def _is_exempt(url: str, exempt: Collection[str]) -> bool:
    """Whether ``url``'s host is one of the ``exempt`` hosts or under one."""
    c = parse(url)
    if c is None:
        return False
    hosts = exempt_hosts(",".join(exempt))
    return any(h in hosts for h in dns_suffixes(c.host, c.is_ip))
