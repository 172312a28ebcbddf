"""Faults in what a running proxy reloads from the store, with a real mitmdump, the real
``blocklist-sync`` and a real redis-server: a store that lost its data and numbers a new list
like the one in force, and a version whose bytes are not the ones its metadata describes.

Each test starts its own proxy (and Redis, for the Redis side): a few seconds each.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import time
from collections.abc import Callable

import pytest
import redis
from conftest import RedisServer, build_snapshot

from blocklist_addon.lists.store import open_store
from testlab.harness import SAMPLE_FEED, Proxy, feed_with, running, sync, wait_for

LISTED = "http://blocked.example.com/page.html"
FRESH = "http://fresh.example.net/new.html"
#: DESIGN: every proxy enforces a new version within seconds.
RELOAD_DEADLINE = 5.0


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_a_list_renumbered_after_the_store_lost_its_data_is_enforced(
    backend: str,
    make_proxy: Callable[..., Proxy],
    redis_factory: Callable[..., RedisServer],
    tmp_path: pathlib.Path,
) -> None:
    """FLUSHDB (or eviction, or a quick restart without persistence the proxy did not see),
    or the store directory removed: the next sync numbers its list 1 again. A proxy that
    enforced version 1 must load the new version 1, not keep the old list and call it fresh
    (the sync confirms "version 1" as current)."""
    if backend == "redis":
        server = redis_factory()
        store = server.url

        def lose_everything() -> None:
            with redis.Redis(host="127.0.0.1", port=server.port) as client:
                client.flushdb()

    else:
        directory = tmp_path / "store"
        store = directory.as_uri()

        def lose_everything() -> None:
            shutil.rmtree(directory)

    sync(store, SAMPLE_FEED, data_dir=tmp_path / "data")
    with running(make_proxy(store)) as proxy:
        assert proxy.health()[1]["version"] == 1
        assert proxy.get(FRESH).status == 200
        lose_everything()
        sync(store, feed_with(tmp_path, FRESH), data_dir=tmp_path / "data-after")
        wait_for(lambda: proxy.get(FRESH).status == 451, RELOAD_DEADLINE, "the renumbered list")
        status, doc = proxy.health()
        assert (status, doc["status"], doc["version"], doc["entries"]) == (200, "ok", 1, 6)
        assert proxy.get(LISTED).status == 451


def test_a_version_whose_bytes_are_not_its_metadatas_is_refused(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """The metadata names one checksum, the bytes (whole, self-consistent) are another list:
    a mix. It is refused like a corrupt version, the list in force stays, and the proxy's
    last-known-good copy is not replaced by one it would itself refuse at its next start."""
    store = (tmp_path / "store").as_uri()
    sync(store, SAMPLE_FEED, data_dir=tmp_path / "data")
    workdir = tmp_path / "proxy"
    copy = workdir / "lastgood.bin"
    with running(make_proxy(store, workdir=workdir)) as proxy:
        wait_for(copy.exists, 10, "the first last-known-good copy")
        good = copy.read_bytes()
        other = build_snapshot("mixed")
        checksum = "0" * len(other.checksum)

        async def publish() -> None:
            async with open_store(store) as target:
                await target.publish(other.data, checksum=checksum, entries=3, source="mix")

        asyncio.run(publish())
        wait_for(lambda: "version 2" in proxy.log(), RELOAD_DEADLINE, "version 2 to be read")
        wait_for(
            lambda: proxy.metric("blocklist_store_errors_total") >= 1, RELOAD_DEADLINE, "the error"
        )
        line = next(line for line in proxy.log().splitlines() if "version 2" in line)
        assert "checksum" in line and "keeping" in line, line
        assert proxy.health()[1]["version"] == 1
        assert proxy.get("http://mixed-0.listed.example/page.html").status == 200
        assert proxy.get(LISTED).status == 451
        assert copy.read_bytes() == good


def test_a_confirmation_of_another_list_under_the_same_number_is_not_freshness(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """The sync confirms "version 1 is current" (the synced state); when that state also
    names the list's checksum and it is not the one this proxy enforces (a store that lost
    its data numbered another list 1, which this proxy could not load), the proxy's list is
    not made fresh by it: it turns stale as its age says."""
    store = (tmp_path / "store").as_uri()
    sync(store, SAMPLE_FEED, data_dir=tmp_path / "data")

    async def confirm_another() -> None:
        async with open_store(store) as target:
            info = await target.active()
            assert info is not None
            await target.set_state(
                "synced", {"version": info.version, "fresh_at": time.time() + 3600,
                           "checksum": "0" * len(info.checksum)}
            )  # fmt: skip

    asyncio.run(confirm_another())
    with running(make_proxy(store, options={"blocklist_max_age": "2"})) as proxy:
        assert proxy.get(LISTED).status == 451
        wait_for(lambda: proxy.health()[1]["status"] == "stale", 15, "the list to turn stale")
