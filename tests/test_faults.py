"""Faults under traffic, with real processes: Redis killed and restarted while clients keep
asking, and the proxy restarted in the middle of a sync. Clients never see an error or a
missed block, the list in force is always one complete version, and health says what is
true at each moment."""

from __future__ import annotations

import asyncio
import errno
import http.client
import pathlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from testlab.harness import SAMPLE_FEED, VENV_BIN, Proxy, feed_with, running, sync, wait_for
from testlab.origins import Origins, TestCA

LISTED = ["http://blocked.example.com/page.html", "http://whole-site.blocked.test/x"]
UNLISTED = ["http://unlisted.example.org/a", "http://blocked.example.com/other.html"]
#: Bound on the background load: it stops by itself even if the test never tells it to.
LOAD_SECONDS = 120.0


@dataclass
class Load:
    """One client thread per URL, asking again and again until stopped. Each request is a
    new connection: the tests' loopback routing (testlab/loopback_addon.py) rewrites server
    addresses, which keeps mitmproxy from reusing a server connection for a keep-alive
    client, so that it opens a new one per request and stalls after a few."""

    port: int
    urls: list[tuple[str, int]]  # (url, status it must get)
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[str, int | str]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for url, _ in self.urls:
            thread = threading.Thread(target=self._client, args=(url,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _client(self, url: str) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                conn.request("GET", url, headers={"Host": url.split("/")[2], "Connection": "close"})
                response = conn.getresponse()
                response.read()
                self.results.append((url, response.status))
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((url, type(exc).__name__))
            finally:
                conn.close()

    def wrong(self) -> list[tuple[str, int | str]]:
        expected = dict(self.urls)
        return [(url, got) for url, got in self.results if got != expected[url]]


def test_redis_killed_and_restarted_under_load(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    redis = redis_factory()
    data = tmp_path / "data"
    sync(redis.url, SAMPLE_FEED, data_dir=data)
    with running(make_proxy(redis.url)) as proxy:
        load = Load(proxy.port, [(u, 451) for u in LISTED] + [(u, 200) for u in UNLISTED])
        load.start()
        try:
            wait_for(lambda: len(load.results) > 50, 30, "traffic before the fault")
            redis.kill()
            wait_for(lambda: proxy.health()[1]["store"] == "down", 30, "health: store down")
            assert proxy.health()[0] == 200  # degraded, still enforcing
            during = len(load.results)
            wait_for(lambda: len(load.results) > during + 50, 30, "traffic while Redis is down")

            redis.start()
            fresh = "http://fresh.example.net/new.html"
            sync(redis.url, feed_with(tmp_path, fresh), data_dir=data)
            wait_for(lambda: proxy.get(fresh).status == 451, 60, "the new version after Redis")
            wait_for(lambda: proxy.health()[1]["status"] == "ok", 30, "health: ok again")
            after = len(load.results)
            wait_for(lambda: len(load.results) > after + 50, 30, "traffic after the fault")
        finally:
            load.finish()
        assert load.wrong() == []  # no error, no missed block, no false block
        assert len(load.results) > 150
        assert proxy.process is not None and proxy.process.poll() is None


class GatedFeed:
    """A feed server that sends half of a new feed, then waits until released."""

    def __init__(self, origins: Origins, body: bytes) -> None:
        self.body = body
        self.half_sent = threading.Event()
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/feed.txt", self.handle)
        self.origin = origins.start("feed", app=app)
        self.loop = origins.loop

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.content_length = len(self.body)
        await response.prepare(request)
        half = len(self.body) // 2
        await response.write(self.body[:half])
        self.half_sent.set()
        await asyncio.wait_for(self.release.wait(), 60)
        await response.write(self.body[half:])
        await response.write_eof()
        return response

    def open(self) -> None:
        self.loop.call_soon_threadsafe(self.release.set)


def test_proxy_restarted_during_a_sync(
    make_proxy: Callable[..., Proxy], ca: TestCA, tmp_path: pathlib.Path
) -> None:
    store = (tmp_path / "store").as_uri()
    data = tmp_path / "data"
    sync(store, SAMPLE_FEED, data_dir=data)
    fresh = "http://fresh.example.net/new.html"
    origins = Origins(ca)
    try:
        feed = GatedFeed(origins, feed_with(tmp_path, fresh).read_bytes())
        command = [
            str(VENV_BIN / "blocklist-sync"),
            *("--store", store, "--format", "text", "--name", "sample"),
            *("--feed-url", f"http://127.0.0.1:{feed.origin.port}/feed.txt"),
        ]
        env = {"BLOCKLIST_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
        syncing = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            assert feed.half_sent.wait(30)
            workdir = tmp_path / "proxy"
            with running(make_proxy(store, workdir=workdir)) as proxy:
                assert proxy.get(fresh).status == 200  # the old version, whole
            with running(make_proxy(store, workdir=workdir)) as proxy:  # restarted mid-sync
                assert proxy.get(fresh).status == 200
                assert proxy.get(LISTED[0]).status == 451
                assert proxy.health()[1]["entries"] == 5
                feed.open()
                assert syncing.wait(60) == 0, syncing.stdout.read() if syncing.stdout else ""
                wait_for(lambda: proxy.get(fresh).status == 451, 5, "the new version")
                assert proxy.health()[1]["entries"] == 6
        finally:
            if syncing.poll() is None:
                syncing.kill()
                syncing.wait(10)
    finally:
        origins.close()


@pytest.fixture
def tiny_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 64 KiB filesystem of its own (tmpfs; root only), unmounted afterwards."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)


def fill(directory: pathlib.Path) -> None:
    """Write until the filesystem says it is full."""
    with open(directory / "filler", "wb") as f:
        try:
            for _ in range(1024):  # bounded: 4 MiB at most, the disk is 64 KiB
                f.write(b"\0" * 4096)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return
    raise AssertionError("the small filesystem never filled up")


def test_a_full_disk_for_the_last_known_good_copy(
    make_proxy: Callable[..., Proxy], tiny_disk: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = (tmp_path / "store").as_uri()
    data = tmp_path / "data"
    sync(store, SAMPLE_FEED, data_dir=data)
    copy = tiny_disk / "lastgood.bin"
    with running(make_proxy(store, options={"blocklist_lastgood": str(copy)})) as proxy:
        wait_for(copy.exists, 10, "the first last-known-good copy")
        first = copy.read_bytes()
        fill(tiny_disk)

        fresh = "http://fresh.example.net/new.html"
        sync(store, feed_with(tmp_path, fresh), data_dir=data)
        wait_for(lambda: proxy.get(fresh).status == 451, 5, "the new version, disk full or not")
        wait_for(lambda: proxy.metric("blocklist_lastgood_errors_total") >= 1, 10, "the error")
        assert "cannot write the last-known-good copy" in proxy.log()
        assert proxy.health()[0] == 200
        assert copy.read_bytes() == first  # the old copy, whole: never a torn one
        assert [p.name for p in tiny_disk.iterdir()] == sorted(["filler", "lastgood.bin"])

        (tiny_disk / "filler").unlink()  # space again: the next version is kept
        later = "http://later.example.net/page.html"
        sync(store, feed_with(tmp_path, fresh, later), data_dir=data)
        wait_for(lambda: proxy.get(later).status == 451, 5, "the next version")
        wait_for(lambda: copy.read_bytes() != first, 10, "the copy to be replaced")
