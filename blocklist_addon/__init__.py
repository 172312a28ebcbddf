"""blocklist-proxy: enforce a licensed URL blocklist at the network edge.

The library API (DESIGN "Library API")::

    from blocklist_addon import Blocklist, canonicalize, expressions
    bl = Blocklist.from_entries(["http://listed.example/page.html"])
    bl.match("http://LISTED.example/page.html?x=1")  # -> Match(...)
"""

from blocklist_addon.canonical import canonicalize, expressions
from blocklist_addon.embedded import embedded_urls
from blocklist_addon.matcher import Blocklist, Entry, Match

__all__ = ["Blocklist", "Entry", "Match", "canonicalize", "embedded_urls", "expressions"]
