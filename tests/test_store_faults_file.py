"""Faults in the embedded file store as a proxy reads it: a directory others can write (a
local user then replaces the list), symlinks planted where the sync writes, and damaged
version files, with a real mitmdump and the real ``blocklist-sync``.

The proxy tests start a proxy each (a second or two).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable

import pytest
from conftest import build_snapshot

from blocklist_addon.lists.store import FileStore, StoreError, VersionInfo
from testlab.harness import SAMPLE_FEED, Proxy, running, sync, wait_for

LISTED = "http://blocked.example.com/page.html"


def forge(store: pathlib.Path, version: int, tag: str) -> None:
    """Replace version ``version`` by a whole, self-consistent list of other names, as a
    local user who can write ``versions/`` would (the metadata matching the bytes)."""
    other = build_snapshot(tag)

    async def write() -> None:
        info = FileStore(store)._read_info(version)
        assert info is not None
        forged = VersionInfo(version, other.checksum, other.entries, info.created_at, "forged")
        (store / "versions" / f"{version}.snap").write_bytes(other.data)
        (store / "versions" / f"{version}.json").write_bytes(forged.to_json(len(other.data)))

    asyncio.run(write())


@pytest.mark.parametrize("where", ["", "versions"])
def test_a_store_directory_others_can_write_is_not_trusted(
    where: str, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """A store directory writable by group or others (a chmod by mistake, or one a local
    user made in /tmp before the first sync): anyone could have replaced the list (here by
    one that lists none of the feed's pages). The proxy does not read it: it enforces its
    last-known-good copy and says why in one line naming the directory."""
    store = tmp_path / "store"
    sync(store.as_uri(), SAMPLE_FEED, data_dir=tmp_path / "data")
    workdir = tmp_path / "proxy"
    with running(make_proxy(store.as_uri(), workdir=workdir)) as proxy:
        assert proxy.get(LISTED).status == 451
        wait_for((workdir / "lastgood.bin").exists, 10, "the last-known-good copy")
    (store / where).chmod(0o777)
    forge(store, 1, "forged")
    with running(make_proxy(store.as_uri(), workdir=workdir)) as proxy:
        assert proxy.get(LISTED).status == 451
        assert proxy.get("http://forged-0.listed.example/page.html").status == 200
        status, doc = proxy.health()
        assert (status, doc["source"], doc["store"]) == (200, "last-good", "down")
        told = [line for line in proxy.log().splitlines() if "writable by others" in line]
        lines = [line for line in told if "hash list" not in line]  # its own line, its own list
        assert len(lines) == 1 and f"{store / where} is writable" in lines[0], proxy.log()


async def test_a_store_others_can_write_is_not_written_either(tmp_path: pathlib.Path) -> None:
    """The sync does not publish into it either (a planted version could ride along)."""
    store = FileStore(tmp_path / "store")
    snap = build_snapshot("a")
    await store.publish(snap.data, checksum=snap.checksum, entries=3, source="a")
    (store.path / "state").chmod(0o770)
    with pytest.raises(StoreError, match=r"store/state is writable by others \(mode 0770\)"):
        await store.publish(snap.data, checksum=snap.checksum, entries=3, source="b")
    with pytest.raises(StoreError, match="writable by others"):
        await store.get_state("feed:a")
    (store.path / "state").chmod(0o700)
    assert (await store.load_active())[0].version == 1
