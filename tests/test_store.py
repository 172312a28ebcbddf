"""The store contract (DESIGN "Data held in the store", "Failure behaviour"), run against
both backends, plus what only one backend can show: a file-store writer killed mid-write,
publishers in separate processes, Redis going down, and store URL parsing."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import stat
import sys
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer, SnapshotData, StoreFactory, delete_prefix, unique_prefix

from blocklist_addon.lists.store import (
    FileStore,
    RedisStore,
    Store,
    StoreError,
    VersionInfo,
    default_data_dir,
    open_store,
)
from blocklist_addon.urls.snapshot import Snapshot

MakeSnapshot = Callable[..., SnapshotData]
#: Bound for anything awaited in a test: far above normal, far below a hang.
DEADLINE = 10.0
PASSWORD = "test-only-Pa55word"


async def publish(store: Store, snap: SnapshotData, source: str = "test") -> VersionInfo:
    return await store.publish(snap.data, **snap.publish_args(source))


def assert_intact(info: VersionInfo, data: bytes) -> None:
    """The bytes are a complete snapshot and they are the version the info describes."""
    snapshot = Snapshot.from_bytes(data)
    assert snapshot.checksum == info.checksum
    assert len(snapshot) == info.entries


# -- versions --------------------------------------------------------------------------------


async def test_empty_store(store: Store) -> None:
    assert await store.active() is None
    assert await store.load_active() is None
    assert await store.versions() == []
    with pytest.raises(StoreError, match="version 1 is not kept"):
        await store.load(1)
    with pytest.raises(StoreError, match="no earlier version to roll back to"):
        await store.rollback()


async def test_publish_activates_a_loadable_version(store: Store, make_snapshot: MakeSnapshot):
    snap = make_snapshot("a")
    before = time.time()
    info = await publish(store, snap, "feeds: example")
    assert info.version >= 1
    assert (info.checksum, info.entries, info.source) == (snap.checksum, 3, "feeds: example")
    assert before <= info.created_at <= time.time()
    assert await store.active() == info
    assert await store.load_active() == (info, snap.data)
    assert await store.versions() == [info]
    assert await store.load(info.version) == snap.data
    assert_intact(info, snap.data)


async def test_version_numbers_strictly_increase(store: Store, make_snapshot: MakeSnapshot):
    published = [await publish(store, make_snapshot(tag)) for tag in "abc"]
    numbers = [info.version for info in published]
    assert numbers == sorted(set(numbers))
    assert await store.versions() == published[::-1]  # newest first
    assert await store.active() == published[-1]


async def test_pointer_never_moves_backwards(store: Store, make_snapshot: MakeSnapshot):
    a = await publish(store, make_snapshot("a"))
    b = await publish(store, make_snapshot("b"))
    assert await store._activate(a.version) is False
    assert await store.active() == b
    with pytest.raises(StoreError, match=f"cannot activate version {b.version + 100}"):
        await store._activate(b.version + 100)  # forward, but nothing stored under it
    assert await store.active() == b


async def test_stale_publisher_cannot_reactivate_an_older_list(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    """A slow publisher took its number first; a faster one activated a newer version
    before the slow one finished writing. The slow one's flip must change nothing."""
    slow, fast = store_factory(), store_factory()
    number = await slow._next_version()
    newer = await publish(fast, make_snapshot("fast"))
    old = make_snapshot("slow")
    await slow._write_version(VersionInfo(number, old.checksum, 3, time.time(), "slow"), old.data)
    assert await slow._activate(number) is False
    assert await slow.active() == newer
    assert await slow.load_active() == (newer, make_snapshot("fast").data)


async def test_keep_prunes_the_oldest(store_factory: StoreFactory, make_snapshot: MakeSnapshot):
    store = store_factory(keep=2)
    published = [await publish(store, make_snapshot(tag)) for tag in "abcd"]
    assert await store.versions() == published[:1:-1]
    with pytest.raises(StoreError, match="is not kept"):
        await store.load(published[0].version)
    assert await store.load(published[2].version) == make_snapshot("c").data


async def test_prune_never_removes_the_active_version(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    """Newer complete versions that were never activated (their publisher died before the
    flip) push the active one out of the newest ``keep``; it must stay."""
    store = store_factory(keep=1)
    active = await publish(store, make_snapshot("a"))
    unactivated = []
    for tag in ("b", "c"):
        snap = make_snapshot(tag)
        number = await store._next_version()
        unactivated.append(VersionInfo(number, snap.checksum, 3, time.time(), tag))
        await store._write_version(unactivated[-1], snap.data)
    await store._prune()
    assert await store.versions() == [unactivated[-1], active]
    assert await store.load_active() == (active, make_snapshot("a").data)


async def test_a_kept_version_with_garbage_metadata_is_left_out_of_versions_and_rollback(
    store: Store, store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    """One damaged kept version must not break ``blocklist-sync status`` (versions) nor
    rollback, which steps over it to the version before."""
    a, b, c = [await publish(store, make_snapshot(tag)) for tag in "abc"]
    if store_factory.backend == "file":
        (
            pathlib.Path(store_factory.url.removeprefix("file://"))
            / "versions"
            / f"{b.version}.json"
        ).write_bytes(b"\x00garbage")
    else:
        client = aioredis.from_url(store_factory.url)
        try:
            await client.set(f"{store_factory.prefix}version:{b.version}:info", b"\x00garbage")
        finally:
            await client.aclose()
    assert await store.versions() == [c, a]
    back = await store.rollback()
    assert (back.checksum, back.source) == (a.checksum, f"rollback to {a.version}")


async def test_rollback_publishes_a_copy_under_a_new_number(
    store: Store, make_snapshot: MakeSnapshot
) -> None:
    a, b, c = [await publish(store, make_snapshot(tag)) for tag in "abc"]
    back = await store.rollback()
    assert back.version > c.version
    assert (back.checksum, back.entries, back.source) == (b.checksum, 3, f"rollback to {b.version}")
    assert await store.load_active() == (back, make_snapshot("b").data)
    # Rolling back again steps further back instead of returning to c.
    again = await store.rollback()
    assert again.version > back.version
    assert (again.checksum, again.source) == (a.checksum, f"rollback to {a.version}")
    assert await store.load_active() == (again, make_snapshot("a").data)
    with pytest.raises(StoreError, match="no earlier version to roll back to"):
        await store.rollback()
    assert await store.active() == again


async def test_rollback_needs_an_earlier_version(store: Store, make_snapshot: MakeSnapshot):
    only = await publish(store, make_snapshot("a"))
    with pytest.raises(StoreError, match="no earlier version to roll back to"):
        await store.rollback()
    assert await store.versions() == [only]


async def test_concurrent_publishers_never_corrupt_anything(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    clients = [store_factory(keep=3) for _ in range(4)]
    snaps = {f"p{i}": make_snapshot(f"p{i}", 20) for i in range(len(clients))}
    returned: list[VersionInfo] = []
    for _ in range(3):
        rounds = [
            publish(client, snap, tag)
            for client, (tag, snap) in zip(clients, snaps.items(), strict=True)
        ]
        returned += await asyncio.gather(*rounds)
    numbers = [info.version for info in returned]
    assert len(set(numbers)) == len(numbers)
    info, data = await clients[0].load_active()
    assert info.version == max(numbers)
    assert data == snaps[info.source].data
    assert_intact(info, data)
    kept = await clients[1].versions()
    assert len(kept) == 3
    for version in kept:
        assert_intact(version, await clients[2].load(version.version))


# -- locks -------------------------------------------------------------------------------------


async def test_lock_is_exclusive_until_released(store_factory: StoreFactory) -> None:
    first, second = store_factory(), store_factory()
    async with first.lock("sync") as held:
        assert held is True
        async with second.lock("sync") as other:
            assert other is False
        async with second.lock("other-name") as unrelated:
            assert unrelated is True
    async with second.lock("sync") as after:
        assert after is True


async def test_lock_wait_succeeds_when_released_meanwhile(store_factory: StoreFactory):
    holder, waiter = store_factory(), store_factory()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with holder.lock("sync") as got:
            assert got
            held.set()
            await release.wait()

    async def acquire() -> bool:
        async with waiter.lock("sync", wait=DEADLINE) as got:
            return got

    holding = asyncio.create_task(hold())
    await asyncio.wait_for(held.wait(), DEADLINE)
    acquiring = asyncio.create_task(acquire())
    done, _ = await asyncio.wait({acquiring}, timeout=0.2)
    assert not done, "the waiter got a lock that was held"
    release.set()
    assert await asyncio.wait_for(acquiring, DEADLINE) is True
    await asyncio.wait_for(holding, DEADLINE)


async def test_lock_is_released_when_the_body_raises(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("sync") as held:
            assert held
            raise RuntimeError("boom")
    async with store.lock("sync") as again:
        assert again is True


_REDIS_LOCK_HOLDER = """
import asyncio, sys
from blocklist_addon.lists.store import open_store

async def main():
    async with open_store(sys.argv[1], prefix=sys.argv[2]).lock("sync", ttl=0.5) as held:
        print(held, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # hold until killed

asyncio.run(main())
"""


async def test_a_redis_lock_outlives_a_dead_holder_by_its_ttl_only(
    redis_store: RedisStore, redis_url: str
) -> None:
    """A holder SIGKILLed (OOM killer, a reboot) renews its lock no more: the next holder
    gets it once its ttl ran out, and the dead holder's token no longer releases it."""
    key = redis_store._key("lock", "sync")
    holder = await spawn(_REDIS_LOCK_HOLDER, redis_url, redis_store.prefix)
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), DEADLINE) == b"True\n"
        async with redis_store.lock("sync") as held:
            assert held is False
    finally:
        holder.kill()
        await holder.wait()
    async with aioredis.from_url(redis_url) as client:
        dead = await client.get(key)
        assert dead is not None and 0 < await client.pttl(key) <= 500
        async with redis_store.lock("sync", wait=DEADLINE) as held:
            assert held is True
            assert await redis_store._release(key, dead.decode()) is False
            assert await client.exists(key)
        assert not await client.exists(key)


async def test_a_long_running_holder_keeps_its_redis_lock_past_its_ttl(
    redis_store: RedisStore, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    ttl = 0.5
    key = redis_store._key("lock", "sync")
    other = open_store(redis_url, prefix=redis_store.prefix)
    async with aioredis.from_url(redis_url) as client:
        async with redis_store.lock("sync", ttl=ttl) as held:
            assert held is True
            token = await client.get(key)
            assert token is not None
            # The condition: still this holder's, never longer than its ttl, three ttls on.
            until = time.monotonic() + 3 * ttl
            while time.monotonic() < until:
                assert await client.get(key) == token
                assert 0 < await client.pttl(key) <= ttl * 1000
                await asyncio.sleep(0.02)  # poll interval
            async with other.lock("sync") as taken:
                assert taken is False
            await publish(redis_store, make_snapshot("held"))
        assert not await client.exists(key)  # released, and no renewal brings it back
        assert redis_store._held == {} and redis_store._lost == {}
    await other.close()
    active = await redis_store.active()
    assert active is not None and active.version == 1


async def test_a_renewal_never_extends_a_redis_lock_another_holder_took(
    redis_store: RedisStore, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    """A holder whose lock lapsed (it stalled past its ttl) and was taken by another: its
    renewal leaves the other's lock alone, it cannot publish, and its exit says so."""
    ttl = 0.5
    key = redis_store._key("lock", "sync")
    async with aioredis.from_url(redis_url) as client:
        with pytest.raises(StoreError, match="lost the lock 'sync'"):
            async with redis_store.lock("sync", ttl=ttl) as held:
                assert held is True
                await client.delete(key)  # as if it expired
                assert await client.set(key, "another-holder", nx=True, px=60_000)
                with pytest.raises(StoreError, match="lost the lock 'sync'"):
                    await publish(redis_store, make_snapshot("late"))  # the flip refuses
                deadline = time.monotonic() + DEADLINE
                while key not in redis_store._lost:  # until a renewal found it taken
                    assert time.monotonic() < deadline, "no renewal noticed the lock lost"
                    await asyncio.sleep(0.02)  # poll interval; the renewal is the condition
                assert await client.get(key) == b"another-holder"
                assert await client.pttl(key) > ttl * 1000  # not renewed to this holder's ttl
                with pytest.raises(StoreError, match="lost the lock 'sync'"):
                    await publish(redis_store, make_snapshot("later"))
        assert await client.get(key) == b"another-holder"  # its exit left the lock alone
        assert await client.pttl(key) > ttl * 1000
    assert await redis_store.active() is None


_LOCK_HOLDER = """
import asyncio, sys
from blocklist_addon.lists.store import FileStore

async def main():
    async with FileStore(sys.argv[1]).lock("sync") as held:
        print(held, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # hold until killed

asyncio.run(main())
"""


async def test_file_lock_is_released_by_the_holders_death(file_store: FileStore) -> None:
    holder = await spawn(_LOCK_HOLDER, file_store.path)
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), DEADLINE) == b"True\n"
        async with file_store.lock("sync") as held:
            assert held is False
    finally:
        holder.kill()
        await holder.wait()
    async with file_store.lock("sync", wait=DEADLINE) as held:
        assert held is True


# -- state and blobs -------------------------------------------------------------------------


async def test_state_round_trips(store_factory: StoreFactory) -> None:
    writer, reader = store_factory(), store_factory()
    assert await reader.get_state("feed:iwf") is None
    doc = {"etag": '"abc"', "fetched_at": 1.5, "entries": 3, "ids": ["x", "y"], "ok": True}
    await writer.set_state("feed:iwf", doc)
    assert await reader.get_state("feed:iwf") == doc
    await writer.set_state("feed:iwf", {"etag": None})
    assert await reader.get_state("feed:iwf") == {"etag": None}
    with pytest.raises(TypeError):
        await writer.set_state("feed:iwf", ["not", "a", "dict"])  # type: ignore[arg-type]


async def test_blob_round_trips(store_factory: StoreFactory) -> None:
    writer, reader = store_factory(), store_factory()
    assert await reader.get_blob("iwf") is None
    await writer.set_blob("iwf", b"\x00\x01" * 1000)
    assert await reader.get_blob("iwf") == b"\x00\x01" * 1000
    await writer.set_blob("iwf", b"")
    assert await reader.get_blob("iwf") == b""


async def test_blob_readers_never_see_a_mix(store_factory: StoreFactory) -> None:
    writer, reader = store_factory(), store_factory()
    old, new = b"o" * (2 << 20), b"n" * (3 << 20)
    await writer.set_blob("feed", old)

    async def write() -> None:
        for i in range(12):
            await writer.set_blob("feed", new if i % 2 == 0 else old)

    writing = asyncio.create_task(write())
    seen = set()
    for _ in range(1000):  # bounded; the writer finishes long before
        data = await reader.get_blob("feed")
        assert data in (old, new)
        seen.add(data[:1])
        if writing.done():
            break
    await asyncio.wait_for(writing, DEADLINE)
    assert seen


@pytest.mark.parametrize(
    "key", ["", "a/b", ".", "..", "../x", ".hidden", "-x", "a b", "a\x00b", "x" * 201]
)
async def test_keys_that_could_escape_are_refused(store: Store, key: str) -> None:
    with pytest.raises(StoreError, match="invalid"):
        await store.set_state(key, {})
    with pytest.raises(StoreError, match="invalid"):
        await store.get_state(key)
    with pytest.raises(StoreError, match="invalid"):
        await store.set_blob(key, b"")
    with pytest.raises(StoreError, match="invalid"):
        await store.get_blob(key)
    with pytest.raises(StoreError, match="invalid lock name"):
        async with store.lock(key):
            pass


async def test_keys_a_sync_uses_are_accepted(store: Store) -> None:
    keys = ("feed:iwf", "feed:partner.list-2", "feed:a..b", "suppressed", "x" * 200)
    for key in keys:
        await store.set_state(key, {"key": key})
        await store.set_blob(key, key.encode())
    for key in keys:
        assert await store.get_state(key) == {"key": key}
        assert await store.get_blob(key) == key.encode()


# -- watch -----------------------------------------------------------------------------------


async def test_watch_yields_versions_published_by_another_client(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    publisher, watcher = store_factory(), store_factory()
    first = await publish(publisher, make_snapshot("a"))
    # For Redis the poll is far longer than the deadline: only the announcement can be on time.
    poll = 0.05 if store_factory.backend == "file" else 60.0
    versions = watcher.watch(poll_interval=poll)
    try:
        assert await asyncio.wait_for(anext(versions), DEADLINE) == first.version
        second = await publish(publisher, make_snapshot("b"))
        assert await asyncio.wait_for(anext(versions), DEADLINE) == second.version
    finally:
        await versions.aclose()


async def test_watch_starts_silent_on_an_empty_store(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    publisher, watcher = store_factory(), store_factory()
    versions = watcher.watch(poll_interval=0.05)
    try:
        pending = asyncio.ensure_future(anext(versions))
        done, _ = await asyncio.wait({pending}, timeout=0.2)
        assert not done
        first = await publish(publisher, make_snapshot("a"))
        assert await asyncio.wait_for(pending, DEADLINE) == first.version
    finally:
        await versions.aclose()


async def test_redis_watch_polls_when_a_notice_is_lost(
    redis_store: RedisStore, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    first = await publish(redis_store, make_snapshot("a"))
    versions = redis_store.watch(poll_interval=0.05)
    try:
        assert await asyncio.wait_for(anext(versions), DEADLINE) == first.version
        snap = make_snapshot("b")
        number = await redis_store._next_version()
        await redis_store._write_version(
            VersionInfo(number, snap.checksum, 3, time.time(), "b"), snap.data
        )
        client = aioredis.from_url(redis_url)
        try:
            await client.set(redis_store._key("active"), number)  # flipped, never announced
        finally:
            await client.aclose()
        assert await asyncio.wait_for(anext(versions), DEADLINE) == number
    finally:
        await versions.aclose()


# -- the embedded store on disk -------------------------------------------------------------


async def spawn(code: str, *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *map(str, args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


_KILLED_WRITER = """
import asyncio, os, sys
from blocklist_addon.lists.store import FileStore

real_write = os.write

def write(fd, data):
    written = real_write(fd, data)
    if len(data) >= 1 << 20:  # a chunk of the version's bytes: report, then stall until killed
        print("writing", flush=True)
        sys.stdin.read()
    return written

os.write = write
data = b"\\x00" * (8 << 20)
asyncio.run(FileStore(sys.argv[1]).publish(data, checksum="00", entries=0, source="killed"))
"""


async def test_file_writer_killed_mid_version_leaves_the_previous_one_active(
    file_store: FileStore, make_snapshot: MakeSnapshot
) -> None:
    previous = await publish(file_store, make_snapshot("a"))
    writer = await spawn(_KILLED_WRITER, file_store.path)
    try:
        assert await asyncio.wait_for(writer.stdout.readline(), DEADLINE) == b"writing\n"
    finally:
        writer.kill()
        await writer.wait()
    strays = [p for p in (file_store.path / "versions").iterdir() if p.name.endswith(".tmp")]
    assert len(strays) == 1 and strays[0].stat().st_size >= 1 << 20
    assert await file_store.load_active() == (previous, make_snapshot("a").data)
    assert await file_store.versions() == [previous]
    # The next publish cleans the leftover once it is past the grace that protects a writer
    # between creating its file and locking it.
    old = time.time() - 3600
    os.utime(strays[0], (old, old))
    after = await publish(file_store, make_snapshot("b"))
    assert after.version > previous.version + 1  # the killed writer's number is never reused
    assert not strays[0].exists()
    assert await file_store.load_active() == (after, make_snapshot("b").data)


async def test_file_orphaned_bytes_are_not_a_version(
    file_store: FileStore, make_snapshot: MakeSnapshot
) -> None:
    """Bytes without their metadata (a writer killed between the two renames) are ignored
    and pruned; bytes a live writer still holds locked are left alone."""
    import fcntl

    first = await publish(file_store, make_snapshot("a"))
    versions_dir = file_store.path / "versions"
    dead, live = versions_dir / "90.snap", versions_dir / "91.snap"
    dead.write_bytes(b"x")
    live.write_bytes(b"y")
    assert await file_store.versions() == [first]
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = await publish(file_store, make_snapshot("b"))
        assert second.version > 91
        assert not dead.exists()
        assert live.exists()
    assert await file_store.versions() == [second, first]


_PUBLISHER = """
import asyncio, sys
from blocklist_addon import Blocklist
from blocklist_addon.urls.snapshot import Snapshot
from blocklist_addon.lists.store import FileStore

async def main(path, tag, count):
    store = FileStore(path, keep=3)
    sys.stdin.readline()  # start together
    for i in range(count):
        urls = [f"http://{tag}-{i}-{j}.listed.example/page.html" for j in range(200)]
        data = Blocklist.from_entries(urls).to_bytes()
        snap = Snapshot.from_bytes(data)
        info = await store.publish(data, checksum=snap.checksum, entries=len(snap), source=tag)
        print(info.version, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_file_publishers_in_two_processes_never_corrupt_anything(file_store: FileStore):
    procs = [await spawn(_PUBLISHER, file_store.path, tag, 6) for tag in ("one", "two")]
    for proc in procs:
        proc.stdin.write(b"go\n")
    outputs = await asyncio.wait_for(
        asyncio.gather(*(proc.communicate() for proc in procs)), DEADLINE * 3
    )
    assert [proc.returncode for proc in procs] == [0, 0]
    numbers = [int(line) for out, _ in outputs for line in out.split()]
    assert len(numbers) == 12 and len(set(numbers)) == 12
    info, data = await file_store.load_active()
    assert info.version == max(numbers)
    assert_intact(info, data)
    kept = await file_store.versions()
    assert [v.version for v in kept] == sorted(numbers)[-3:][::-1]
    for version in kept:
        assert_intact(version, await file_store.load(version.version))
    leftovers = [p.name for p in (file_store.path / "versions").iterdir()]
    assert sorted(leftovers) == sorted(f"{v.version}.{s}" for v in kept for s in ("snap", "json"))


async def test_file_store_is_private(file_store: FileStore, make_snapshot: MakeSnapshot):
    await publish(file_store, make_snapshot("a"))
    await file_store.set_state("feed:iwf", {"etag": "x"})
    await file_store.set_blob("iwf", b"digests")
    async with file_store.lock("sync"):
        pass
    for path in [file_store.path, *file_store.path.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


# -- Redis going down ------------------------------------------------------------------------


async def test_redis_down_gives_a_quick_clear_error_and_recovers(
    redis_factory: Callable[..., RedisServer], make_snapshot: MakeSnapshot
) -> None:
    server = redis_factory()
    store = open_store(server.url)
    try:
        await publish(store, make_snapshot("a"))
        watching = store.watch(poll_interval=0.05)
        await asyncio.wait_for(anext(watching), DEADLINE)
        server.kill()
        operations = [
            store.active,
            store.load_active,
            store.versions,
            store.rollback,
            lambda: store.load(1),
            lambda: publish(store, make_snapshot("b")),
            lambda: store.get_state("feed"),
            lambda: store.set_blob("feed", b"x"),
            lambda: anext(watching),
        ]
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(StoreError) as caught:
                await asyncio.wait_for(operation(), DEADLINE)
            assert time.monotonic() - started < 5
            assert (
                str(caught.value)
                == f"redis at 127.0.0.1:{server.port} unreachable: Connection refused"
            )
        with pytest.raises(StoreError, match="unreachable"):
            async with store.lock("sync"):
                pass
        server.start()  # back, empty: nothing was persisted
        assert await store.active() is None
        info = await publish(store, make_snapshot("c"))
        assert (await store.active()) == info
    finally:
        await store.close()


async def test_redis_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = open_store(
            f"redis://127.0.0.1:{port}/0?socket_timeout=0.3&socket_connect_timeout=0.3"
        )
        try:
            started = time.monotonic()
            with pytest.raises(
                StoreError, match=f"redis at 127.0.0.1:{port} unreachable: timed out"
            ):
                await asyncio.wait_for(store.active(), DEADLINE)
            assert time.monotonic() - started < 3
        finally:
            await store.close()


# -- namespaces ------------------------------------------------------------------------------


async def test_namespaces_are_separate_stores(
    store_factory: StoreFactory, make_snapshot: MakeSnapshot
) -> None:
    """A hash list or the diversion set lives beside the URL list without touching it:
    its own versions, pointer, announcements, state, blobs and locks."""
    main = store_factory()
    other = open_store(store_factory.url, prefix=store_factory.prefix, namespace="hashes")
    store_factory.opened.append(other)
    a = await publish(main, make_snapshot("a"))
    assert await other.active() is None
    b = await publish(other, make_snapshot("b"))
    assert b.version == 1
    assert (await main.active()) == a
    assert (await other.load_active())[1] == make_snapshot("b").data
    await other.set_state("feed:x", {"n": 1})
    await other.set_blob("feed:x", b"bytes")
    assert await main.get_state("feed:x") is None
    assert await main.get_blob("feed:x") is None
    async with main.lock("sync") as first, other.lock("sync") as second:
        assert first and second
    watched = other.watch(poll_interval=0.05)
    assert await asyncio.wait_for(anext(watched), DEADLINE) == b.version
    await publish(main, make_snapshot("c"))  # the main list's notices are not the other's
    c = await publish(main, make_snapshot("e"))
    d = await publish(other, make_snapshot("d"))
    assert (c.version, d.version) == (3, 2)
    assert await asyncio.wait_for(anext(watched), DEADLINE) == d.version
    await watched.aclose()


@pytest.mark.parametrize("name", ["", "Hashes", "a/b", "..", "versions", "lock", "x" * 33])
def test_namespace_names_are_checked(name: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="invalid store namespace"):
        open_store(tmp_path.as_uri(), namespace=name)


def test_namespace_locations(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_store(tmp_path.as_uri(), namespace="divert").path == tmp_path / "divert"
    assert open_store("redis://127.0.0.1/0", namespace="divert").prefix == "blocklist:divert:"
    monkeypatch.setenv("BLOCKLIST_DATA_DIR", str(tmp_path / "data"))
    assert open_store(namespace="hashes").path == tmp_path / "data" / "hashes"


# -- store URLs --------------------------------------------------------------------------------


def test_open_store_redis_urls() -> None:
    store = open_store("redis://127.0.0.1:6379/2")
    assert isinstance(store, RedisStore)
    assert store.url == "redis://127.0.0.1:6379/2"
    assert store._redis.connection_pool.connection_kwargs["db"] == 2

    tls = open_store("rediss://sync:secret-in-url@cache.example.net:6380/1", prefix="bl:")
    assert isinstance(tls, RedisStore)
    assert tls.url == "rediss://sync@cache.example.net:6380/1"
    assert tls.prefix == "bl:"
    assert tls._redis.connection_pool.connection_class.__name__ == "SSLConnection"

    unix = open_store("unix:///run/redis/redis.sock?db=3&password=secret-in-query")
    assert isinstance(unix, RedisStore)
    assert unix.url == "unix:///run/redis/redis.sock?db=3"
    kwargs = unix._redis.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"]) == ("/run/redis/redis.sock", 3)


def test_open_store_file_urls(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store((tmp_path / "a dir").as_uri(), keep=2)
    assert isinstance(store, FileStore)
    assert (store.path, store.keep) == (tmp_path / "a dir", 2)
    assert open_store(f"file://localhost{tmp_path}").path == tmp_path
    with pytest.raises(StoreError, match="file:///"):
        open_store("file://host.example/srv/blocklist")

    monkeypatch.setenv("BLOCKLIST_DATA_DIR", str(tmp_path / "data"))
    default = open_store()
    assert isinstance(default, FileStore)
    assert default.path == default_data_dir() == tmp_path / "data"


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("BLOCKLIST_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "blocklist-proxy"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "blocklist-proxy"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret-in-url@example.com/",
        "memcached://127.0.0.1:11211",
        "/var/lib/blocklist",
        "",
        "redis:/no-authority",
    ],
)
def test_open_store_refuses_other_schemes(url: str) -> None:
    with pytest.raises(StoreError, match="use one of redis://, rediss://, unix://, file://") as e:
        open_store(url)
    assert "secret" not in str(e.value)


def test_open_store_keep_must_be_positive(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        open_store(tmp_path.as_uri(), keep=0)


async def test_unix_socket_url(redis_server: RedisServer, make_snapshot: MakeSnapshot):
    prefix = unique_prefix()
    store = open_store(f"unix://{redis_server.unix_socket}?db=0", prefix=prefix)
    try:
        info = await publish(store, make_snapshot("a"))
        assert await store.active() == info
    finally:
        await store.close()
        await delete_prefix(redis_server.url, prefix)


async def test_redis_password_from_env_or_file_never_shown(
    redis_factory: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    make_snapshot: MakeSnapshot,
) -> None:
    server = redis_factory("--requirepass", PASSWORD)
    monkeypatch.delenv("BLOCKLIST_REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("BLOCKLIST_REDIS_PASSWORD_FILE", raising=False)

    async def check(url: str) -> VersionInfo | StoreError:
        store = open_store(url)
        try:
            assert PASSWORD not in store.url and "wrong-Pa55" not in store.url
            return await publish(store, make_snapshot("a"))
        except StoreError as exc:
            assert PASSWORD not in str(exc) and "wrong-Pa55" not in str(exc)
            return exc
        finally:
            await store.close()

    missing = await check(server.url)
    assert isinstance(missing, StoreError)
    assert "rejected authentication" in str(missing)
    assert isinstance(await check(f"redis://:wrong-Pa55@127.0.0.1:{server.port}/0"), StoreError)
    assert isinstance(await check(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"), VersionInfo)

    monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD", PASSWORD)
    assert isinstance(await check(server.url), VersionInfo)
    # A password in the URL wins over the environment.
    assert isinstance(await check(f"redis://:wrong-Pa55@127.0.0.1:{server.port}/0"), StoreError)

    monkeypatch.delenv("BLOCKLIST_REDIS_PASSWORD")
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(PASSWORD + "\n")
    monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(secret_file))
    assert isinstance(await check(server.url), VersionInfo)

    monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(StoreError, match=r"cannot read \$BLOCKLIST_REDIS_PASSWORD_FILE"):
        open_store(server.url)
