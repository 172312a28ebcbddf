"""Redis misbehaving under a proxy, with a real redis-server, mitmdump and ``blocklist-sync``:
connections reset in the middle of every large reply (the output buffer limit), and a server
that answers nothing for a while (stopped: CLIENT PAUSE would block the unpause too) while
the proxy starts (both were safe when written: they pin what the review tried); and a
Sentinel store that is down, told once rather than at every retry (it was told every second).

Each test starts its own Redis and proxy: a few seconds each.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import time
from collections.abc import Callable

import pytest
import redis
from conftest import RedisServer

from blocklist_addon import Blocklist
from blocklist_addon.lists import lastgood
from blocklist_addon.lists.store import VersionInfo, open_store
from blocklist_addon.urls.snapshot import Snapshot
from testlab.harness import (
    SAMPLE_FEED,
    Proxy,
    feed_entries,
    feed_with,
    free_port,
    running,
    sync,
    wait_for,
)

LISTED = "http://blocked.example.com/page.html"
#: Enough entries that the version is far larger than the reset limit below.
EXTRA = [f"http://bulk-{i}.example.net/page.html" for i in range(3000)]


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def publish(url: str, entries: list[str]) -> None:
    """A version published as the sync does (the sync itself reads large replies back)."""
    snapshot = Snapshot.from_bytes(Blocklist.from_entries(entries).to_bytes())

    async def run() -> None:
        async with open_store(url) as store:
            await store.publish(
                snapshot.to_bytes(), checksum=snapshot.checksum, entries=len(snapshot), source="big"
            )

    asyncio.run(run())


def test_connections_reset_in_every_large_reply_keep_the_list_and_recover(
    make_proxy: Callable[..., Proxy],
    redis_factory: Callable[..., RedisServer],
    tmp_path: pathlib.Path,
) -> None:
    """Redis closes a client's connection once a reply outgrows 16 KiB: every load of the
    new version breaks off mid-reply, while the pointer (a few bytes) still answers. The
    proxy keeps version 1 whole, says so once, and loads version 2 once replies get through;
    a proxy started meanwhile starts from its last-known-good copy."""
    server = redis_factory()
    data = tmp_path / "data"
    sync(server.url, SAMPLE_FEED, data_dir=data)
    workdir = tmp_path / "proxy"
    with running(make_proxy(server.url, workdir=workdir)) as proxy:
        wait_for((workdir / "lastgood.bin").exists, 10, "the last-known-good copy")
        with admin(server) as client:
            client.config_set("client-output-buffer-limit", "normal 16kb 0 0")
        publish(server.url, feed_entries(SAMPLE_FEED) + EXTRA)
        wait_for(lambda: proxy.health()[1]["store"] == "down", 15, "the failed load")
        assert proxy.get(EXTRA[0]).status == 200
        assert proxy.get(LISTED).status == 451
        status, doc = proxy.health()
        assert (status, doc["status"], doc["version"]) == (200, "degraded", 1)
        assert sum("Connection closed" in line for line in proxy.log().splitlines()) == 1

        with running(make_proxy(server.url, workdir=workdir)) as second:
            assert second.health()[1]["source"] == "last-good"
            assert second.get(LISTED).status == 451

        with admin(server) as client:
            client.config_set("client-output-buffer-limit", "normal 0 0 0")
        wait_for(lambda: proxy.get(EXTRA[0]).status == 451, 15, "version 2 once it gets through")
        wait_for(lambda: proxy.health()[1]["status"] == "ok", 10, "health ok again")
        assert proxy.health()[1]["version"] == 2


def test_a_stalled_redis_at_start_gives_the_copy_then_the_store(
    make_proxy: Callable[..., Proxy],
    redis_factory: Callable[..., RedisServer],
    tmp_path: pathlib.Path,
) -> None:
    """redis-server stopped (SIGSTOP): connections are accepted by the kernel, nothing is
    answered. The proxy gives up after blocklist_start_timeout, enforces its copy, and
    follows the store once it answers (the abandoned read must not leave a connection that
    answers the next command with the old reply)."""
    server = redis_factory()
    data = tmp_path / "data"
    sync(server.url, SAMPLE_FEED, data_dir=data)
    workdir = tmp_path / "proxy"
    with running(make_proxy(server.url, workdir=workdir)):
        wait_for((workdir / "lastgood.bin").exists, 10, "the last-known-good copy")
    sync(server.url, feed_with(tmp_path, "http://fresh.example.net/new.html"), data_dir=data)
    assert server.process is not None
    options = {"blocklist_start_timeout": "1"}
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        with running(make_proxy(server.url, workdir=workdir, options=options)) as proxy:
            doc = proxy.health()[1]
            assert (doc["source"], doc["version"], doc["store"]) == ("last-good", 1, "down")
            assert proxy.get(LISTED).status == 451
            os.kill(server.process.pid, signal.SIGCONT)
            wait_for(lambda: proxy.health()[1]["source"] == "store", 30, "the store, answering")
            assert proxy.get("http://fresh.example.net/new.html").status == 451
            assert proxy.health()[1]["version"] == 2
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_a_sentinel_store_down_is_told_once_not_at_every_retry(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Behind Sentinel the follower retries every 0.5-1 s (a failover is over in seconds):
    the outage is still one line in the log, not one a second."""
    snapshot = Snapshot.from_bytes(Blocklist.from_entries([LISTED]).to_bytes())
    info = VersionInfo(1, snapshot.checksum, 1, time.time(), "test")
    workdir = tmp_path / "proxy"
    lastgood.write(workdir / "lastgood.bin", info, snapshot.to_bytes())
    nobody = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    options = {"blocklist_start_timeout": "1"}
    with running(make_proxy(nobody, workdir=workdir, options=options)) as proxy:
        assert proxy.get(LISTED).status == 451
        wait_for(lambda: proxy.metric("blocklist_store_errors_total") >= 5, 20, "5 retries")
        told = [line for line in proxy.log().splitlines() if "no sentinel" in line]
        assert 1 <= len(told) <= 2, "\n".join(told)  # the start's line, maybe the follower's


def publish_snapshot(url: str, tag: str) -> None:
    publish(url, [f"http://{tag}-{i}.listed.example/page.html" for i in range(3)])


@pytest.mark.parametrize("what", ["bytes", "metadata", "pointer", "a hash as the bytes"])
def test_garbage_under_the_lists_keys_keeps_the_list_and_the_next_publish_mends_it(
    what: str,
    make_proxy: Callable[..., Proxy],
    redis_factory: Callable[..., RedisServer],
    tmp_path: pathlib.Path,
) -> None:
    """Garbage written under the active version's keys (by hand, or by a bug): a running
    proxy keeps version 1 whole and says so in one line; the next publish is enforced."""
    server = redis_factory()
    publish_snapshot(server.url, "one")
    with running(make_proxy(server.url)) as proxy:
        assert proxy.get("http://one-0.listed.example/page.html").status == 451
        with admin(server) as client:
            if what == "pointer":
                client.set("blocklist:active", b"\x00garbage")
            else:
                two = Snapshot.from_bytes(
                    Blocklist.from_entries(["http://two.example/"]).to_bytes()
                )
                info = VersionInfo(2, two.checksum, 1, time.time(), "by hand")
                client.set("blocklist:version:2:info", info.to_json(len(two.to_bytes())))
                client.set("blocklist:version:2", two.to_bytes())
                if what == "bytes":
                    client.setrange("blocklist:version:2", 40, b"\xff\xfe")
                elif what == "metadata":
                    client.set("blocklist:version:2:info", b'{"version": 2, "checks')
                else:
                    client.delete("blocklist:version:2")
                    client.hset("blocklist:version:2", "data", b"x")
                client.set("blocklist:active", 2)

        def said() -> list[str]:
            lines = proxy.log().splitlines()
            return [x for x in lines if "still enforcing version 1" in x or "keeping the old" in x]

        wait_for(said, 10, "the damage told")
        if what == "pointer":  # the store is retried: still one line
            wait_for(lambda: proxy.metric("blocklist_store_errors_total") >= 3, 20, "retries")
        else:  # a damaged version: the store is up, the next version awaited
            assert proxy.health()[1]["store"] == "up"
        assert proxy.get("http://one-0.listed.example/page.html").status == 451
        assert proxy.health()[1]["version"] == 1
        publish_snapshot(server.url, "three")
        wait_for(
            lambda: proxy.get("http://three-0.listed.example/page.html").status == 451,
            10,
            "the next version",
        )
        assert proxy.get("http://one-0.listed.example/page.html").status == 200
        assert len(said()) == 1, proxy.log()


def test_a_sync_replaces_an_active_version_whose_metadata_is_garbage(
    redis_factory: Callable[..., RedisServer], tmp_path: pathlib.Path
) -> None:
    """The real sync reads the active version first: garbage there must not stop it from
    publishing the version that replaces it (as with the file store, where it did not)."""
    server = redis_factory()
    data = tmp_path / "data"
    sync(server.url, SAMPLE_FEED, data_dir=data)
    with admin(server) as client:
        client.set("blocklist:version:1:info", b'{"version": 1, "chec')
    sync(server.url, feed_with(tmp_path, "http://fresh.example.net/new.html"), data_dir=data)

    async def active() -> VersionInfo | None:
        async with open_store(server.url) as store:
            return await store.active()

    info = asyncio.run(active())
    assert info is not None and info.version == 2 and info.entries == 6
