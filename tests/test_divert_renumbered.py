"""``blocklist-divert run`` after its store lost its data (a Redis FLUSHDB or a restart
without persistence, a removed store directory): the next publish numbers its set 1 again,
the same number as the set ``run`` applies or a lower one. ``run`` must apply that set, not
keep the old one because the number is not new. Real processes throughout: ``run`` in a
network namespace this test makes with the shipped table, the proxy's /healthz served by a
real aiohttp server inside it, the store a file store or a real redis-server."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from conftest import RedisServer
from test_divert_faults import Gateway
from test_divert_run import HealthServer, eventually

from blocklist_addon.lists.store import open_store
from divert.dataset import DiversionSet
from testlab.divert_lab import divert_key, load_table, pages_feed, publish
from testlab.dnsserver import DNSServer
from testlab.harness import sync
from testlab.netns import Lab, unavailable

pytestmark = [
    pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft"))),
    pytest.mark.net,
]

OLD = DiversionSet.build({"h0": ["198.51.100.40"]})
A = DiversionSet.build({"h1": ["203.0.113.40", "2001:db8:2::40"]})
B = DiversionSet.build({"h2": ["203.0.113.41"], "h3": ["198.51.100.41", "2001:db8:2::41"]})
C = DiversionSet.build({"h4": ["192.0.2.42", "2001:db8:2::42"]})
#: Listed hosts (name, A, AAAA), answered by a DNS server in the namespace.
FIRST = ("first-listed.example.com", "203.0.113.43", "2001:db8:2::43")
SECOND = ("second-listed.example.net", "203.0.113.44", "2001:db8:2::44")
#: run reads the store every poll (0.2 s at withdraw_after 1 s): a new set is applied well
#: within this.
APPLY_DEADLINE = 5.0


@pytest.fixture
async def gateway(tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    with Lab() as lab:
        ns = lab.namespace("renum")
        load_table(ns, "sub0")
        health = await HealthServer().start(ns.listen("127.0.0.1", 0))
        try:
            yield Gateway(ns, health, tmp_path)
        finally:
            await health.stop()


@pytest.fixture
def dns(gateway: Gateway) -> Iterator[DNSServer]:
    with gateway.ns.entered():
        server = DNSServer().start()  # its sockets live in the namespace
    try:
        for name, a, aaaa in (FIRST, SECOND):
            server.set(name, a=[a], aaaa=[aaaa])
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["file", "redis"])
async def test_a_set_renumbered_after_the_store_lost_its_data_is_applied(
    backend: str,
    gateway: Gateway,
    tmp_path: pathlib.Path,
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Set A as version 2 is applied; the store loses everything and B is published as
    version 1 (a lower number), then again C as version 1 (the same number): each is applied
    within seconds, and the status file and metrics say which set the plane holds."""
    if backend == "redis":
        server = redis_factory()
        store = f"unix://{server.unix_socket}?db=0"  # reaches it from inside the namespace

        def lose_everything() -> None:
            with redis.Redis(unix_socket_path=str(server.unix_socket)) as client:
                client.flushdb()

    else:
        directory = tmp_path / "store"
        store = directory.as_uri()

        def lose_everything() -> None:
            shutil.rmtree(directory)

    await publish(store, OLD)
    await publish(store, A)  # version 2
    gateway.start_run(store)
    await eventually(lambda: gateway.sets() == A.addresses, "A applied", timeout=30)
    await eventually(lambda: consistent(gateway, A, 2), "the status of A", APPLY_DEADLINE)

    for dset, what in ((B, "B, version 1 (lower)"), (C, "C, version 1 (the same number)")):
        lose_everything()
        await publish(store, dset)
        await eventually(lambda d=dset: gateway.sets() == d.addresses, what, APPLY_DEADLINE)
        await eventually(lambda d=dset: consistent(gateway, d, 1), f"the status of {what}", 5)
    assert "WITHDRAWN" not in gateway.log.read_text()


async def test_a_set_whose_bytes_are_not_its_metadatas_is_refused(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    """A version whose bytes are a whole set, but not the one its metadata names (a store
    mixed up by a restore or a hand): run keeps the set it applied and says why, as the
    proxy does for its lists; the next good version is applied."""
    store = (tmp_path / "store").as_uri()
    await publish(store, A)
    gateway.start_run(store)
    await eventually(lambda: gateway.sets() == A.addresses, "A applied", timeout=30)
    async with open_store(store, namespace="divert") as divert:
        await divert.publish(B.to_bytes(), checksum=C.checksum, entries=len(B), source="test")
    await eventually(
        lambda: "not the set its metadata names" in gateway.log.read_text(), "the refusal", 5
    )
    assert gateway.sets() == A.addresses
    await publish(store, C)
    await eventually(lambda: gateway.sets() == C.addresses, "C applied", APPLY_DEADLINE)


def consistent(gateway: Gateway, dset: DiversionSet, version: int) -> bool:
    """The status file and the metrics name ``dset``, as store version ``version``, as the
    set applied and held."""
    status = gateway.status()
    if status is None or status["applied"] is None or status["held"] is None:
        return False
    return (
        status["active_version"] == version
        and status["active_checksum"] == dset.checksum
        and status["applied"]["checksum"] == dset.checksum
        and (status["held"]["ipv4"], status["held"]["ipv6"]) == (len(dset.ipv4), len(dset.ipv6))
        and status["in_sync"] is True
        and gateway.metric("blocklist_divert_active_version") == version
        and gateway.metric('blocklist_divert_addresses{family="ipv4"}') == len(dset.ipv4)
        and gateway.metric("blocklist_divert_in_sync") == 1
    )


async def test_a_list_renumbered_after_the_store_lost_its_data_is_resolved_at_once(
    gateway: Gateway,
    dns: DNSServer,
    tmp_path: pathlib.Path,
    redis_factory: Callable[..., RedisServer],
) -> None:
    """run resolves (with the hostname key) and follows the list's announcements. Redis is
    flushed and the sync publishes another list, again as version 1: run resolves it at once
    (not at the next scheduled resolution, an hour away) and applies the set that resolution
    publishes, itself version 1 again like the set applied before."""
    server = redis_factory()
    store = f"unix://{server.unix_socket}?db=0"
    env = {"BLOCKLIST_DIVERT_KEY_FILE": str(divert_key(tmp_path))}
    sync(store, pages_feed(tmp_path, FIRST[0]), data_dir=tmp_path / "data", env=env)
    gateway.start_run(
        store,
        key_file=env["BLOCKLIST_DIVERT_KEY_FILE"],
        resolvers=[f"127.0.0.1:{dns.port}"],
        interval=3600,
    )
    first = {FIRST[1], FIRST[2]}
    await eventually(lambda: gateway.sets() == first, "the first resolution applied", 30)
    status = gateway.status()
    assert status is not None and status["active_version"] == 1, status

    with redis.Redis(unix_socket_path=str(server.unix_socket)) as client:
        client.flushdb()
    # In a thread: /healthz is served by this event loop (run withdraws after 1 s without it).
    feed = pages_feed(tmp_path, SECOND[0])
    await asyncio.to_thread(sync, store, feed, data_dir=tmp_path / "data", env=env)
    second = {SECOND[1], SECOND[2]}
    await eventually(lambda: gateway.sets() == second, "the renumbered list's hosts", 10)
    text = gateway.log.read_text()
    assert text.count("resolving now") == 1, text
    assert "WITHDRAWN" not in text, text
    status = gateway.status()
    assert status is not None and status["active_version"] == 1, status
    assert status["active_checksum"] == status["applied"]["checksum"], status
