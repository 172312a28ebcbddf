"""The machine under the sync breaking: a download that outlasts the lock, the disk filling
up mid-publish, the sync killed mid-publish. The real ``blocklist-sync`` (in a process of
its own where it is killed or limited) against a real file store or Redis; the active list
must stay the old one or become the new one, whole, and the next run must recover by
itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from conftest import RedisServer

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import open_store
from blocklist_addon.lists.store.base import LOCK_TTL
from blocklist_addon.lists.store.redis_store import RedisStore
from sync import cli
from testlab.drip import drip as dripping
from testlab.harness import VENV_BIN

LIMIT = 20.0  # seconds any one sync may take here


def entries(tag: str, count: int) -> list[str]:
    return [f"http://{tag}{i}.example.com/gallery/{i}.html" for i in range(count)]


def write_feed(path: pathlib.Path, urls: list[str]) -> pathlib.Path:
    path.write_text("".join(f"{url}\n" for url in urls))
    return path


def write_config(tmp_path: pathlib.Path, store: str, feeds: dict[str, str]) -> pathlib.Path:
    """``feeds``: name -> URL (text format); settings that keep failures quick."""
    text = f'store = "{store}"\n'
    for name, url in feeds.items():
        text += f'[feeds.{name}]\nurl = "{url}"\nformat = "text"\nread_timeout = 5\nretries = 0\n'
    path = tmp_path / "sync.toml"
    path.write_text(text)
    return path


#: Sets RLIMIT_FSIZE, then becomes the command (argv[2:]). Not ``preexec_fn``: Python code
#: between fork and exec deadlocks when another thread held a lock at the fork (this runs
#: in a worker thread of the test's loop), and then the parent waits for good.
WITH_FILE_LIMIT = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def run_sync(
    config: pathlib.Path, *, file_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command, as cron runs it (``file_limit``: RLIMIT_FSIZE, a disk that fills)."""
    command = [str(VENV_BIN / "blocklist-sync"), "--config", str(config), "--quiet"]
    if file_limit is not None:
        command = [sys.executable, "-c", WITH_FILE_LIMIT, str(file_limit), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=LIMIT)


async def active(store_url: str) -> tuple[int, Blocklist] | None:
    """The active version, loaded whole (a part missing or truncated raises)."""
    store = open_store(store_url)
    try:
        pair = await store.load_active()
        return None if pair is None else (pair[0].version, Blocklist.from_bytes(pair[1]))
    finally:
        await store.close()


def lists(bl: Blocklist, urls: list[str]) -> bool:
    return all(bl.match(url) is not None for url in urls)


# -- the lock against a download that lasts ------------------------------------------------


@pytest.fixture
async def drip() -> AsyncIterator[str]:
    """A feed that sends a byte every 50 ms and never ends."""
    stop = asyncio.Event()
    app = web.Application()
    app.router.add_get("/list.txt", dripping(stop))
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/list.txt"
    stop.set()
    await runner.cleanup()


async def test_the_sync_keeps_its_short_lock_while_its_downloads_last(
    tmp_path: pathlib.Path,
    redis_factory: Callable[..., RedisServer],
    drip: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Redis lock expires after its ttl unless renewed: a sync still downloading past it
    would overlap the next cron run (two publishers, the older list activated last). The
    sync renews its lock, never longer than the short ttl, for as long as it runs."""
    assert RedisStore.lock_ttl == LOCK_TTL <= 60  # what a sync killed holding it leaves
    ttl = 0.5
    monkeypatch.setattr(RedisStore, "lock_ttl", ttl)  # the lifetime, small to keep this quick
    server = redis_factory()
    config = write_config(tmp_path, server.url, {"slow": drip})
    config.write_text(config.read_text() + "timeout = 1000\n")
    args = cli.build_parser().parse_args(["--config", str(config), "--quiet"])
    task = asyncio.create_task(cli.run(args))
    client = aioredis.from_url(server.url)
    try:
        deadline = time.monotonic() + LIMIT
        while (token := await client.get("blocklist:lock:sync")) is None:
            assert time.monotonic() < deadline, "the sync never took its lock"
            assert not task.done(), task.result()
            await asyncio.sleep(0.02)  # poll interval; the key is the condition
        until = time.monotonic() + 3 * ttl  # the condition: still held, three ttls on
        while time.monotonic() < until:
            assert not task.done(), task.result()
            assert await client.get("blocklist:lock:sync") == token
            assert 0 < await client.pttl("blocklist:lock:sync") <= ttl * 1000
            await asyncio.sleep(0.02)  # poll interval
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


async def test_a_download_that_never_ends_fails_the_run_by_its_deadline(
    tmp_path: pathlib.Path, drip: str
) -> None:
    store = (tmp_path / "store").as_uri()
    good = write_feed(tmp_path / "good.txt", entries("old", 50))
    assert run_sync(write_config(tmp_path, store, {"iwf": good.as_uri()})).returncode == 0
    config = write_config(tmp_path, store, {"iwf": drip})
    config.write_text(config.read_text() + "timeout = 1\n")
    started = time.monotonic()
    done = await asyncio.to_thread(run_sync, config)
    assert time.monotonic() - started < LIMIT / 2
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"iwf: FAILED: timed out: {drip} did not finish within 1s; "
        "its last good entries stay in force\n"
    )
    found = await active(store)
    assert found is not None and found[0] == 1


# -- the disk filling up, the sync killed -----------------------------------------------------


@pytest.fixture
def two_feeds(tmp_path: pathlib.Path) -> tuple[str, pathlib.Path, list[str], list[str]]:
    """A file store holding version 1 from feed ``big``; feed ``small`` added to the
    config. Its entries (15 bytes each) fit any file limit the big feed's already do, the
    union of both does not."""
    store = (tmp_path / "store").as_uri()
    big, small = entries("old", 20_000), entries("new", 1_000)
    feeds = {"big": write_feed(tmp_path / "big.txt", big).as_uri()}
    assert run_sync(write_config(tmp_path, store, feeds)).returncode == 0
    feeds["small"] = write_feed(tmp_path / "small.txt", small).as_uri()
    return store, write_config(tmp_path, store, feeds), big, small


async def test_disk_full_mid_publish_keeps_the_old_list_and_the_next_run_recovers(
    two_feeds: tuple[str, pathlib.Path, list[str], list[str]],
) -> None:
    store, config, big, small = two_feeds
    path = pathlib.Path(store.removeprefix("file://"))
    kept_blob = (path / "blob" / "feed:big").stat().st_size
    snapshot = (path / "versions" / "1.snap").stat().st_size
    limit = kept_blob + 2_000  # the small feed's entries fit, the new version does not
    assert snapshot < limit < snapshot + len(small) * 14

    done = await asyncio.to_thread(run_sync, config, file_limit=limit)
    assert done.returncode == 1
    assert "File too large" in done.stderr and "previous list stays active" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    found = await active(store)
    assert found is not None and found[0] == 1 and lists(found[1], big[:100])
    assert not lists(found[1], small[:1])
    assert (path / "blob" / "feed:small").exists()  # its entries were kept, not published
    assert not [p for p in (path / "versions").iterdir() if p.name.endswith(".tmp")]

    again = await asyncio.to_thread(run_sync, config)  # disk space is back
    assert again.returncode == 0, again.stderr
    found = await active(store)
    assert found is not None and lists(found[1], big[:100] + small)


async def test_sigkill_between_saving_and_publishing_recovers_on_the_next_run(
    two_feeds: tuple[str, pathlib.Path, list[str], list[str]],
) -> None:
    store, config, big, small = two_feeds
    path = pathlib.Path(store.removeprefix("file://"))
    process = subprocess.Popen(
        [str(VENV_BIN / "blocklist-sync"), "--config", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + LIMIT
        while not (path / "blob" / "feed:small").exists():
            assert process.poll() is None, "the sync ended before it saved the feed"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)  # poll interval; the blob is the condition
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(LIMIT)
    found = await active(store)
    assert found is not None and lists(found[1], big[:100])  # old or new, whole
    again = await asyncio.to_thread(run_sync, config)
    assert again.returncode == 0, again.stderr
    found = await active(store)
    assert found is not None and lists(found[1], big[:100] + small)


# -- a feed's kept entries lost from the store -------------------------------------------------


async def lose_blob(store_url: str, name: str) -> None:
    """What an evicting Redis (maxmemory-policy allkeys-lru), a restore from an older dump
    or a hand-cleaned directory does to a feed's kept entries."""
    if store_url.startswith("file://"):
        (pathlib.Path(store_url.removeprefix("file://")) / "blob" / f"feed:{name}").unlink()
        return
    client = aioredis.from_url(store_url)
    try:
        assert await client.delete(f"blocklist:blob:feed:{name}") == 1
    finally:
        await client.aclose()


async def test_lost_kept_entries_never_leave_the_list_without_that_feed(
    tmp_path: pathlib.Path, store_url: str
) -> None:
    """Feed a's kept entries vanish from the store while its feed is unchanged; feed b
    changes. The list rebuilt for b must not silently drop every entry of a (no shrink
    gate sees it: a's own state still counts its entries): a is read again in full."""
    a, b = entries("a", 50), entries("b", 50)
    feeds = {
        "a": write_feed(tmp_path / "a.txt", a).as_uri(),
        "b": write_feed(tmp_path / "b.txt", b).as_uri(),
    }
    config = write_config(tmp_path, store_url, feeds)
    assert (await asyncio.to_thread(run_sync, config)).returncode == 0
    await lose_blob(store_url, "a")
    b = b + entries("b-new", 5)
    write_feed(tmp_path / "b.txt", b)
    for _ in range(2):  # at most one run may fail, with the old list in force
        done = await asyncio.to_thread(run_sync, config)
        found = await active(store_url)
        assert found is not None and lists(found[1], a), done.stdout + done.stderr
        if done.returncode == 0:
            break
        assert done.stderr == (
            "blocklist-sync: feed a: its kept entries are missing from the store; the next "
            "run reads the feed again in full; the previous list stays active\n"
        )
    assert done.returncode == 0, done.stderr
    assert lists(found[1], a + b)


async def test_redis_killed_mid_sync_keeps_the_old_list_and_the_next_run_recovers(
    tmp_path: pathlib.Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """Redis (with an append-only file, as a production one persists) dies by SIGKILL once
    the new feed's entries are saved, while the list is being built for publishing: the
    sync fails with one line, Redis comes back with version 1 whole, and the next run
    (once the dead run's lock is gone) publishes the new list from the kept entries."""
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    big, small = entries("old", 20_000), entries("new", 1_000)
    feeds = {"big": write_feed(tmp_path / "big.txt", big).as_uri()}
    assert run_sync(write_config(tmp_path, server.url, feeds)).returncode == 0
    feeds["small"] = write_feed(tmp_path / "small.txt", small).as_uri()
    config = write_config(tmp_path, server.url, feeds)
    process = subprocess.Popen(
        [str(VENV_BIN / "blocklist-sync"), "--config", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = aioredis.from_url(server.url)
    try:
        deadline = time.monotonic() + LIMIT
        while not await client.exists("blocklist:blob:feed:small"):
            assert process.poll() is None, "the sync ended before it saved the feed"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)  # poll interval; the saved entries are the condition
        server.kill()
        _, stderr = await asyncio.to_thread(process.communicate, timeout=LIMIT)
    finally:
        process.kill()
        await client.aclose()
    assert process.returncode == 1, stderr
    assert len(stderr.splitlines()) == 1 and "unreachable" in stderr, stderr
    server.start()  # the same port and directory: its append-only file is read back
    found = await active(server.url)
    assert found is not None and found[0] == 1 and lists(found[1], big[:100])
    # The dead sync's lock came back with the append-only file: the next runs skip until
    # its short ttl ends (test_a_lock_left_by_a_dead_sync_does_not_hold_up_the_next_runs).
    async with aioredis.from_url(server.url) as again_client:
        assert await again_client.delete("blocklist:lock:sync") == 1
    again = await asyncio.to_thread(run_sync, config)
    assert again.returncode == 0, again.stderr
    found = await active(server.url)
    assert found is not None and lists(found[1], big[:100] + small)


#: The real command, its lock's lifetime made small (the default, LOCK_TTL, is 30 s).
_SHORT_LOCK_SYNC = """
import sys
from blocklist_addon.lists.store.redis_store import RedisStore
from sync.cli import main

RedisStore.lock_ttl = float(sys.argv.pop(1))
sys.argv[0] = "blocklist-sync"
sys.exit(main())
"""


async def test_a_lock_left_by_a_dead_sync_does_not_hold_up_the_next_runs(
    tmp_path: pathlib.Path, redis_factory: Callable[..., RedisServer], drip: str
) -> None:
    """A sync SIGKILLed (OOM killer, a reboot) while it holds the Redis lock: no one renews
    it, so it holds up the next runs ("skipped", nothing with --quiet, exit 0, the list not
    synced) for its short ttl only, not for the longest a sync may take."""
    ttl = 1.0
    server = redis_factory()
    config = write_config(tmp_path, server.url, {"iwf": drip})
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", _SHORT_LOCK_SYNC, str(ttl), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = aioredis.from_url(server.url)
    try:
        deadline = time.monotonic() + LIMIT
        while not await client.exists("blocklist:lock:sync"):
            assert process.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.01)  # poll interval; the lock is the condition
        process.kill()
        process.wait(LIMIT)
        assert 0 < await client.pttl("blocklist:lock:sync") <= ttl * 1000
    finally:
        process.kill()
        await client.aclose()
    good = write_feed(tmp_path / "good.txt", entries("good", 20))
    config = write_config(tmp_path, server.url, {"iwf": good.as_uri()})
    config.write_text(f"lock_wait = {LIMIT / 2}\n" + config.read_text())  # a later cron run
    started = time.monotonic()
    done = await asyncio.to_thread(run_sync, config)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < LIMIT / 2
    found = await active(server.url)
    assert found is not None and lists(found[1], entries("good", 20))
