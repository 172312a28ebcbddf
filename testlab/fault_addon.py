"""Test-only mitmproxy addon: injects failures into the blocklist addon running in the same
mitmdump, so that the tests drive its error paths through the live proxy.

``--set fault_file=PATH`` names a JSON object the test writes, and rewrites while the proxy
runs (no file, or a key absent: no fault):

- ``"match": "text"``: ``Blocklist.match`` raises for URLs containing ``text``;
- ``"host": "text"``: ``Blocklist.host_listing`` raises for hosts containing ``text``;
- ``"render": true``: the splash page and the refused-upload answer cannot be rendered;
- ``"scan": true``: the page scanner (``pages.neutralize``) raises;
- ``"image": true``: checking an upload against the image hash list raises (its exact
  hashes or its pixels);
- ``"load": true``: making a ``Blocklist`` of a loaded snapshot raises (a version that
  cannot be loaded);
- ``"load_delay": seconds``: making one takes that much longer (a slow start);
- ``"watch": true``: the store's ``watch`` raises an error the store does not wrap;
- ``"blocklog": true``: writing a block event raises (a bug after a check, outside the
  check's own error handling: the addon's last net has to catch it).

Each injected error's message quotes what it was given (a URL, a host), so a test can check
that the proxy's log never repeats it. The patches replace the functions by name in the
modules the addon calls them through; the originals run whenever no fault applies.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

from mitmproxy import ctx

from blocklist_addon.content import pages
from blocklist_addon.hashes.hashlist import HashList
from blocklist_addon.lists.store import FileStore, RedisStore
from blocklist_addon.ops import splash
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.urls import matcher


class InjectedFault(RuntimeError):
    pass


class Faults:
    def __init__(self) -> None:
        self.path: pathlib.Path | None = None

    def load(self, loader) -> None:
        loader.add_option("fault_file", str, "", "JSON file of faults to inject (tests only).")
        _patch(self)

    def configure(self, updated: set[str]) -> None:
        if "fault_file" in updated:
            self.path = pathlib.Path(ctx.options.fault_file) if ctx.options.fault_file else None

    def get(self, name: str) -> Any:
        if self.path is None:
            return None
        try:
            return json.loads(self.path.read_text()).get(name)
        except (OSError, ValueError):
            return None  # no file, or one being rewritten: no fault


def _patch(faults: Faults) -> None:
    original_match = matcher.Blocklist.match
    original_host = matcher.Blocklist.host_listing
    original_init = matcher.Blocklist.__init__
    original_render = splash.render
    original_refused = splash.refused_upload
    original_neutralize = pages.neutralize
    original_exact = HashList.match_exact_bytes
    original_pixels = HashList.check_pixels

    def match(self, url: str, **kwargs):
        text = faults.get("match")
        if text and text in url:
            raise InjectedFault(f"injected lookup fault for {url}")
        return original_match(self, url, **kwargs)

    def host_listing(self, host: str):
        text = faults.get("host")
        if text and text in host:
            raise InjectedFault(f"injected host fault for {host}")
        return original_host(self, host)

    def init(self, *args, **kwargs) -> None:
        if faults.get("load"):
            raise InjectedFault("injected load fault")
        if delay := faults.get("load_delay"):
            time.sleep(delay)  # in the loader's worker thread, as a slow load would be
        original_init(self, *args, **kwargs)

    def render(*args, **kwargs):
        if faults.get("render"):
            raise InjectedFault(f"injected render fault for {kwargs.get('url')}")
        return original_render(*args, **kwargs)

    def refused_upload(*args, **kwargs):
        if faults.get("render"):
            raise InjectedFault("injected render fault")
        return original_refused(*args, **kwargs)

    def neutralize(body, content_type, page_url, *args, **kwargs):
        if faults.get("scan"):
            raise InjectedFault(f"injected scan fault for {page_url}")
        return original_neutralize(body, content_type, page_url, *args, **kwargs)

    def match_exact_bytes(self, data: bytes):
        if faults.get("image"):
            raise InjectedFault("injected image check fault")
        return original_exact(self, data)

    def check_pixels(self, data: bytes):
        if faults.get("image"):
            raise InjectedFault("injected image check fault")
        return original_pixels(self, data)

    original_write = BlockLog.write

    def write(self, event) -> None:
        if faults.get("blocklog"):
            raise InjectedFault("injected block log fault")
        original_write(self, event)

    BlockLog.write = write  # type: ignore[method-assign]
    HashList.match_exact_bytes = match_exact_bytes  # type: ignore[method-assign]
    HashList.check_pixels = check_pixels  # type: ignore[method-assign]
    matcher.Blocklist.match = match  # type: ignore[method-assign]
    matcher.Blocklist.host_listing = host_listing  # type: ignore[method-assign]
    matcher.Blocklist.__init__ = init  # type: ignore[method-assign]
    splash.render = render
    splash.refused_upload = refused_upload
    pages.neutralize = neutralize

    for store_class in (FileStore, RedisStore):
        original_watch = store_class.watch

        async def watch(
            self, *, poll_interval: float = 1.0, _watch=original_watch
        ) -> AsyncIterator[int]:
            if faults.get("watch"):
                raise InjectedFault("injected follower fault")
            async for number in _watch(self, poll_interval=poll_interval):
                if faults.get("watch"):
                    raise InjectedFault("injected follower fault")
                yield number

        store_class.watch = watch  # type: ignore[method-assign]


addons = [Faults()]
