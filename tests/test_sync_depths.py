"""Directory depths through the real ``blocklist-sync``, into the file store and Redis.

The sync records each listed host's deepest directory entry in the snapshot it publishes
(the metadata's ``depths``, as ``Blocklist.from_entries`` does), so the proxy walks a
path's directories only that deep (``WALK_FLOOR`` at least); a directory entry deeper than
the floor still matches below it. Feed entries kept by the previous release (BLFEED1, no
depths) still sync, unknown depth (every directory walked), and are compiled again, with
depths, by one full read of the feed on upgrade. Starts the sync as a process (and Redis).
"""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess

import pytest

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import open_store
from blocklist_addon.urls.matcher import WALK_FLOOR
from blocklist_addon.urls.snapshot import UNKNOWN_DEPTH, Snapshot, expression_digest
from sync import compiled
from sync.feeds import FeedEntry
from sync.worker import BUILT, feed_key
from testlab.harness import VENV_BIN

pytestmark = pytest.mark.net

DEEP_DIRS = "/".join(f"d{i}" for i in range(1, 21))  # 20 segments: depth 21 > WALK_FLOOR
FEED_LINES = [
    f"http://deep.example.com/{DEEP_DIRS}/",
    "shallow.example.net/a/",
    "http://pages.example.org/gallery/page.html",
    "whole-site.test/",
    "http://q.example.net/view.php?id=42",
    "mixed.example.org/x/y/page.html",
    "mixed.example.org/x/",
]
DEPTHS = {
    "deep.example.com": 21,
    "shallow.example.net": 2,
    "pages.example.org": 0,
    "whole-site.test": 1,
    "q.example.net": 0,
    "mixed.example.org": 2,
}
assert max(DEPTHS.values()) > WALK_FLOOR
BELOW = "/".join(f"e{i}" for i in range(40))  # 40 directories more

LISTED = [
    f"http://deep.example.com/{DEEP_DIRS}/{BELOW}/pic.jpg",
    f"https://www.shallow.example.net/a/{BELOW}/",
    f"http://whole-site.test/{BELOW}/{BELOW}/x.html",
    f"http://mixed.example.org/x/{BELOW}/page.html",
]
UNLISTED = [
    f"http://deep.example.com/{DEEP_DIRS.rsplit('/', 1)[0]}/other/{BELOW}/pic.jpg",
    f"http://deep.example.com/{BELOW}/{DEEP_DIRS}/pic.jpg",
    f"http://shallow.example.net/b/{BELOW}/a/",
    f"http://pages.example.org/gallery/{BELOW}/page.html",
    f"http://mixed.example.org/y/{BELOW}/x/",
]
#: What the previous release's state of a feed held (this one adds to it).
PREVIOUS_STATE = {"fetch", "entries", "invalid", "last_ok", "last_changed", "last_attempt"}


def blfeed1(entries: list[FeedEntry]) -> bytes:
    """``compiled.pack`` as the previous release wrote it: no depth byte."""
    records = b"".join(
        struct.pack("<8s4sB", e.digest, e.host_key or bytes(4), e.host_key is not None)
        for e in entries
    )
    ids = "\0".join(e.entry_id or "" for e in entries).encode("utf-8")
    return b"BLFEED1\n" + struct.pack("<I", len(entries)) + records + ids


def test_blfeed1_is_the_previous_releases_format() -> None:
    """The golden bytes of ``tests/test_sync_compiled.py``, packed by the previous release."""
    h = bytes([9, 10, 11, 12])
    entries = [
        FeedEntry(bytes(range(8)), h, "id-1"),
        FeedEntry(b"\xff" * 8, None, None),
        FeedEntry(bytes(range(8, 16)), h, "ü"),
    ]
    assert blfeed1(entries).hex() == (
        "424c46454544310a030000000001020304050607090a0b0c01ffffffffffffffff000000000008090a"
        "0b0c0d0e0f090a0b0c0169642d310000c3bc"
    )


def run_sync(tmp_path: pathlib.Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real ``blocklist-sync`` command, as cron runs it."""
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [str(VENV_BIN / "blocklist-sync"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def write_feed(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
    path.write_text("# a test list\n" + "".join(f"{line}\n" for line in lines))
    return path


def write_config(tmp_path: pathlib.Path, store_url: str, feeds: dict[str, pathlib.Path]) -> str:
    path = tmp_path / "sync.toml"
    text = f'store = "{store_url}"\n'
    for name, feed in feeds.items():
        text += f'[feeds.{name}]\nurl = "{feed.as_uri()}"\nformat = "text"\n'
    path.write_text(text)
    return str(path)


async def active_snapshot(store_url: str) -> tuple[int, Snapshot]:
    store = open_store(store_url)
    try:
        pair = await store.load_active()
    finally:
        await store.close()
    assert pair is not None
    return pair[0].version, Snapshot.from_bytes(pair[1])


def host_depths(snapshot: Snapshot, hosts: object = DEPTHS) -> dict[str, int]:
    return {h: snapshot.host_depth(h) for h in hosts}  # type: ignore[attr-defined]


def check_matching(snapshot: Snapshot) -> None:
    """Deep below a listed directory matches, deep anywhere else does not; the compiled
    lookups and the Python ones alike."""
    for compiled_lookups in (True, False):
        bl = Blocklist(snapshot, compiled=compiled_lookups)
        assert [url for url in LISTED if bl.match(url) is None] == []
        assert [url for url in UNLISTED if bl.match(url) is not None] == []


async def test_a_synced_list_holds_its_hosts_directory_depths(
    tmp_path: pathlib.Path, store_url: str
) -> None:
    feed = write_feed(tmp_path / "feed.txt", FEED_LINES)
    done = run_sync(
        tmp_path, "--store", store_url, "--feed-url", feed.as_uri(), "--format", "text",
        "--name", "iwf",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    version, snapshot = await active_snapshot(store_url)
    assert version == 1
    assert host_depths(snapshot) == DEPTHS
    # ... exactly what the library records for the same entries
    library = Blocklist.from_entries(FEED_LINES).snapshot
    assert host_depths(library) == DEPTHS
    check_matching(snapshot)
    # the directory entry deeper than the floor is found only because its depth is known:
    # walked to the floor alone, it is missed (the test can fail)
    assert not Blocklist(
        Snapshot.build([(expression_digest(f"deep.example.com/{DEEP_DIRS}/"), None, "l", None, 0)])
    ).match(LISTED[0])


async def as_previous_release(store_url: str, names: list[str]) -> int:
    """Rewrite a store this release synced as the previous release left it: each feed's
    kept entries in BLFEED1 (no depths), its state without what this release adds, and an
    active list built from them (no depths), recorded as built. Returns its version."""
    store = open_store(store_url)
    try:
        rows = []
        for name in names:
            key = feed_key(name)
            blob = await store.get_blob(key)
            assert blob is not None and blob.startswith(b"BLFEED2\n")
            kept = list(compiled.unpack(blob))
            await store.set_blob(key, blfeed1(kept))
            state = await store.get_state(key) or {}
            await store.set_state(key, {k: v for k, v in state.items() if k in PREVIOUS_STATE})
            rows += [(e.digest, e.host_key, name, e.entry_id) for e in kept]
        snapshot = Snapshot.build(rows, {"feeds": sorted(names)})
        info = await store.publish(
            snapshot.to_bytes(),
            checksum=snapshot.checksum,
            entries=len(snapshot),
            source="feeds: " + ", ".join(sorted(names)),
        )
        built = await store.get_state(BUILT) or {}
        await store.set_state(BUILT, {**built, "version": info.version})
        return info.version
    finally:
        await store.close()


async def kept_blob(store_url: str, name: str) -> bytes:
    store = open_store(store_url)
    try:
        blob = await store.get_blob(feed_key(name))
    finally:
        await store.close()
    assert blob is not None
    return blob


async def test_upgrade_compiles_the_kept_entries_again_with_depths(
    tmp_path: pathlib.Path, store_url: str
) -> None:
    """An unchanged feed (its validators kept) is read again once after an upgrade, so the
    list gets its depths without waiting for the hotline's next issue; then 304s again."""
    config = write_config(
        tmp_path, store_url, {"iwf": write_feed(tmp_path / "feed.txt", FEED_LINES)}
    )
    assert run_sync(tmp_path, "--config", config).returncode == 0
    version = await as_previous_release(store_url, ["iwf"])
    _, before = await active_snapshot(store_url)
    assert set(host_depths(before).values()) == {UNKNOWN_DEPTH}
    check_matching(before)  # every directory walked: matches as before the depths

    done = run_sync(tmp_path, "--config", config)
    assert done.returncode == 0, done.stderr
    assert "iwf: updated, 7 entries" in done.stdout, done.stdout
    assert (await kept_blob(store_url, "iwf")).startswith(b"BLFEED2\n")
    now, snapshot = await active_snapshot(store_url)
    assert now == version + 1
    assert host_depths(snapshot) == DEPTHS
    check_matching(snapshot)

    again = run_sync(tmp_path, "--config", config)
    assert again.returncode == 0, again.stderr
    assert "iwf: unchanged" in again.stdout, again.stdout
    assert (await active_snapshot(store_url))[0] == now


async def test_entries_kept_by_the_previous_release_stay_in_force(
    tmp_path: pathlib.Path, store_url: str
) -> None:
    """A feed down since the upgrade: its BLFEED1 entries are read and enforced, its hosts
    at unknown depth (every directory walked); the other feed's hosts get their depths."""
    old_feed = write_feed(tmp_path / "old.txt", FEED_LINES)
    new_feed = write_feed(tmp_path / "new.txt", ["other.example.com/p/q/"])
    config = write_config(tmp_path, store_url, {"old": old_feed, "new": new_feed})
    assert run_sync(tmp_path, "--config", config).returncode == 0
    await as_previous_release(store_url, ["old", "new"])
    old_feed.unlink()  # the feed is down
    write_feed(new_feed, ["other.example.com/p/q/", "other.example.com/r/"])

    done = run_sync(tmp_path, "--config", config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "old: FAILED" in done.stdout + done.stderr
    assert (await kept_blob(store_url, "old")).startswith(b"BLFEED1\n")  # kept as it was
    _, snapshot = await active_snapshot(store_url)
    assert len(snapshot) == len(FEED_LINES) + 2  # nothing lost
    assert set(host_depths(snapshot).values()) == {UNKNOWN_DEPTH}
    assert snapshot.host_depth("other.example.com") == 3
    check_matching(snapshot)
    bl = Blocklist(snapshot)
    assert bl.match(f"http://other.example.com/r/{BELOW}/x.html") is not None
    assert bl.match(f"http://other.example.com/p/{BELOW}/x.html") is None

    # suppressing an entry kept in BLFEED1 finds it
    entry = expression_digest("shallow.example.net/a/").hex()
    done = run_sync(tmp_path, "--config", config, "suppress", entry)
    assert done.returncode == 0, done.stdout + done.stderr
    _, snapshot = await active_snapshot(store_url)
    assert Blocklist(snapshot).match(LISTED[1]) is None
    assert Blocklist(snapshot).match(LISTED[0]) is not None
