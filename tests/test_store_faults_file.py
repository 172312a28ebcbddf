"""Faults in the embedded file store as a proxy reads it: a directory others can write (a
local user then replaces the list), symlinks planted where the sync writes, and damaged
version files, with a real mitmdump and the real ``blocklist-sync``.

The proxy tests start a proxy each (a second or two).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest
from conftest import build_snapshot

from blocklist_addon.lists import lastgood
from blocklist_addon.lists.store import FileStore, StoreError, VersionInfo
from blocklist_addon.urls.snapshot import Snapshot
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


def publish(store: pathlib.Path, tag: str) -> VersionInfo:
    snap = build_snapshot(tag)

    async def run() -> VersionInfo:
        return await FileStore(store).publish(snap.data, **snap.publish_args(tag))

    return asyncio.run(run())


def damage(store: pathlib.Path, version: int, how: str, tmp_path: pathlib.Path) -> None:
    snap = store / "versions" / f"{version}.snap"
    raw = bytearray(snap.read_bytes())
    if how == "bit flipped":
        raw[len(raw) // 3] ^= 0x10
        snap.write_bytes(bytes(raw))
    elif how == "truncated":
        snap.write_bytes(bytes(raw[:-1]))
    elif how == "metadata garbled":
        (store / "versions" / f"{version}.json").write_bytes(b'{"version": 2, "chec')
    elif how == "a link to a fifo":  # planted by whoever could write versions/ once
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        snap.unlink()
        snap.symlink_to(fifo)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["bit flipped", "truncated", "metadata garbled", "a link to a fifo"]
)
def test_a_damaged_active_version_gives_the_copy_then_the_next_version(
    how: str, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """The active version's files damaged on disk: the proxy starts from its copy (never
    from the damage, never with nothing) and enforces the next whole version within
    seconds; a file that is not a regular file is not read (a FIFO would hang the reader)."""
    store = tmp_path / "store"
    first = publish(store, "one")
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    lastgood.write(workdir / "lastgood.bin", first, build_snapshot("one").data)
    publish(store, "two")
    damage(store, 2, how, tmp_path)
    options = {"blocklist_start_timeout": "2"}
    with running(make_proxy(store.as_uri(), workdir=workdir, options=options)) as proxy:
        doc = proxy.health()[1]
        assert (doc["source"], doc["version"]) == ("last-good", 1)
        assert proxy.get("http://one-0.listed.example/page.html").status == 451
        assert proxy.get("http://two-0.listed.example/page.html").status == 200
        assert "enforcing the last-known-good copy" in proxy.log()
        publish(store, "three")
        wait_for(
            lambda: proxy.get("http://three-0.listed.example/page.html").status == 451,
            5,
            "the next whole version",
        )
        assert proxy.health()[1]["version"] == 3


async def test_links_planted_where_the_sync_writes_are_never_written_through(
    tmp_path: pathlib.Path,
) -> None:
    """A link in place of the next version's file is replaced, not followed (the target
    keeps its bytes); one in place of a lock file is refused (its target is not created)."""
    store = FileStore(tmp_path / "store")
    snap = build_snapshot("a")
    await store.publish(snap.data, **snap.publish_args())
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (store.path / "versions" / "2.snap").symlink_to(victim)
    (store.path / "versions" / "2.json").symlink_to(victim)
    second = await store.publish(snap.data, **snap.publish_args())
    assert victim.read_bytes() == b"precious"
    assert await store.load_active() == (second, snap.data)
    assert [v.version for v in await store.versions()] == [second.version, 1]
    assert not any(p.is_symlink() for p in (store.path / "versions").iterdir())

    created = tmp_path / "created-by-the-sync"
    (store.path / "lock" / ".store").unlink()
    (store.path / "lock" / ".store").symlink_to(created)
    with pytest.raises(StoreError, match="symbolic links"):
        await store.publish(snap.data, **snap.publish_args())
    assert not created.exists()
    assert (await store.load_active())[0] == second


_KILLED_AT = """
import asyncio, os, signal, sys
from blocklist_addon.lists.store import FileStore

path, at, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.stdin.read())
calls = 0

def counted(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

for name in ("write", "fsync", "replace", "unlink", "rename"):
    setattr(os, name, counted(getattr(os, name)))
checksum, entries = sys.argv[3], int(sys.argv[4])
asyncio.run(FileStore(path, keep=1).publish(data, checksum=checksum, entries=entries, source="k"))
print(calls, flush=True)
"""


def test_a_publish_killed_at_any_step_leaves_one_whole_list_and_the_next_one_works(
    tmp_path: pathlib.Path,
) -> None:
    """SIGKILL at each write, fsync, rename and unlink of a publish (keep=1, so it prunes):
    the active list is always the old one or the new one, whole and matching its metadata,
    never none and never a mix, and the next publish completes."""
    store = FileStore(tmp_path / "store", keep=1)
    old, new = build_snapshot("old"), build_snapshot("new")
    step, completed = 0, False
    while not completed:
        step += 1
        assert step < 100, "the publish never completed"
        asyncio.run(store.publish(old.data, **old.publish_args()))
        run = subprocess.run(
            [sys.executable, "-c", _KILLED_AT, store.path, str(step), new.checksum, "3"],
            input=new.data.hex(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        completed = run.returncode == 0
        assert completed or run.returncode == -9, run.stderr
        info, data = asyncio.run(store.load_active())
        assert Snapshot.from_bytes(data).checksum == info.checksum
        assert info.checksum in (old.checksum, new.checksum)
        assert info.checksum == new.checksum or not completed
        after = asyncio.run(store.publish(old.data, **old.publish_args()))
        assert asyncio.run(store.load_active()) == (after, old.data)
    assert step > 10, step  # every step of the publish was a kill point once
    print(f"a publish killed at each of its {step - 1} steps")


async def test_a_garbled_pointer_is_refused_by_readers_and_mended_by_the_next_publish(
    tmp_path: pathlib.Path,
) -> None:
    store = FileStore(tmp_path / "store")
    snap = build_snapshot("a")
    await store.publish(snap.data, **snap.publish_args())
    (store.path / "active").write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match="the active pointer is corrupt"):
        await store.load_active()
    mended = await store.publish(snap.data, **snap.publish_args())
    assert mended.version == 2
    assert await store.load_active() == (mended, snap.data)
