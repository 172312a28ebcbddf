"""blocklist-proxy: enforce a licensed URL blocklist at the network edge.

The library API (DESIGN "Library API")::

    from blocklist_addon import Blocklist, canonicalize, expressions
    bl = Blocklist.from_entries(["http://listed.example/page.html"])
    bl.match("http://LISTED.example/page.html?x=1")  # -> Match(...)

For images (DESIGN "Image hash lists")::

    from blocklist_addon import HashList
    hl = HashList.load(store_url)  # or HashList.from_entries([{"id": "7", "pdq": "..."}])
    hl.match_bytes(upload)  # -> HashMatch(list_name, entry_id, kind, distance) or None
"""

from typing import TYPE_CHECKING

from blocklist_addon.urls.canonical import canonicalize, expressions
from blocklist_addon.urls.embedded import embedded_urls
from blocklist_addon.urls.matcher import Blocklist, Entry, Match

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashEntry, HashList, HashMatch

__all__ = [
    "Blocklist",
    "Entry",
    "HashEntry",
    "HashList",
    "HashMatch",
    "Match",
    "canonicalize",
    "embedded_urls",
    "expressions",
]


def __getattr__(name: str) -> object:
    """The hash list names on first use (they import numpy and Pillow)."""
    if name in ("HashEntry", "HashList", "HashMatch"):
        from blocklist_addon import hashes

        return getattr(hashes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
