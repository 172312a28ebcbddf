"""``blocklist-divert run`` follows the list's announcements (issue 25, item 4): a host the
sync newly lists is diverted within seconds, not at the next scheduled resolution
(``interval``, 300 s by default; 3600 s here, so the schedule cannot explain it). Real
processes throughout: a private Redis locked down as the operator's guide does it (the
shipped users.acl; the sync, ``resolve`` and ``run`` as the ``blocklist-sync`` user that
divert.toml names, its password from $BLOCKLIST_REDIS_PASSWORD_FILE; the announcement on
its pub/sub), the real ``blocklist-sync`` with the divert key, ``run`` in a network
namespace this test makes with the shipped table, a DNS server and the proxy's /healthz
inside that namespace."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from test_deploy import hardened_conf, password_file, write_acl
from test_divert_run import HealthServer, eventually

from testlab.divert_lab import divert_key, load_table, pages_feed, set_contents, start_run
from testlab.dnsserver import DNSServer
from testlab.harness import sync
from testlab.netns import Lab, Namespace, unavailable

pytestmark = pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))

LISTED = ("listed-one.example.com", "203.0.113.31", "2001:db8:2::31")
ADDED = ("new-host.example.net", "203.0.113.32", "2001:db8:2::32")


@dataclass
class Gateway:
    ns: Namespace
    health: HealthServer
    dns: DNSServer

    def sets(self) -> set[str]:
        return set(set_contents(self.ns, "divert4")) | set(set_contents(self.ns, "divert6"))


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    with Lab() as lab:
        ns = lab.namespace("follow")
        load_table(ns, "lo")
        health = await HealthServer().start(ns.listen("127.0.0.1", 0))
        with ns.entered():
            dns = DNSServer().start()  # its sockets live in the namespace
        try:
            for name, a, aaaa in (LISTED, ADDED):  # answered before the host is listed
                dns.set(name, a=[a], aaaa=[aaaa])
            yield Gateway(ns, health, dns)
        finally:
            dns.stop()
            await health.stop()


async def test_a_newly_listed_host_is_diverted_seconds_after_the_sync(
    gateway: Gateway,
    tmp_path: pathlib.Path,
    redis_factory: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sync_file = password_file(tmp_path, "sync")
    _, proxy_file = password_file(tmp_path, "proxy")
    write_acl(tmp_path / "users.acl", sync_file, proxy_file)
    redis = redis_factory(config=hardened_conf(tmp_path, tmp_path / "users.acl"))
    # Its unix socket reaches it from any namespace; the user the guide's divert.toml names.
    store = f"unix://blocklist-sync@{redis.unix_socket}"  # type: ignore[attr-defined]
    monkeypatch.setenv("BLOCKLIST_REDIS_PASSWORD_FILE", str(sync_file))  # sync and run
    key = divert_key(tmp_path)
    env = {"BLOCKLIST_DIVERT_KEY_FILE": str(key)}
    sync(store, pages_feed(tmp_path, LISTED[0]), data_dir=tmp_path / "data", env=env)

    config = tmp_path / "divert.toml"
    config.write_text(
        f'store = "{store}"\nkey_file = "{key}"\n'
        f'resolvers = ["127.0.0.1:{gateway.dns.port}"]\n'
        f'health_url = "{gateway.health.url}"\nwithdraw_after = 1\ninterval = 3600\n'
    )
    log = tmp_path / "run.log"
    start_run(gateway.ns, config, tmp_path / "run" / "status.json", log)
    first = {LISTED[1], LISTED[2]}
    await eventually(lambda: gateway.sets() == first, "the first resolution applied", 30)

    # In a thread: the proxy's /healthz is served by this event loop, which must not stop
    # answering while the sync runs (run would withdraw the sets after withdraw_after).
    await asyncio.to_thread(
        sync, store, pages_feed(tmp_path, LISTED[0], ADDED[0]), data_dir=tmp_path / "data", env=env
    )
    synced = time.monotonic()
    both = first | {ADDED[1], ADDED[2]}
    await eventually(lambda: gateway.sets() == both, "the new host diverted", 10)
    print(f"new host diverted {time.monotonic() - synced:.2f} s after the sync returned")
    text = log.read_text()
    assert "resolving now" in text, text
    assert "WITHDRAWN" not in text, text
    # Followed through Redis' pub/sub with the shipped ACL, not the fallback of reading the
    # pointer after each refused SUBSCRIBE (which took up to a minute).
    assert "cannot follow" not in text, text
    assert gateway.dns.asked(ADDED[0]) >= 1
    for name in (LISTED[0], ADDED[0]):
        assert name not in text  # hosts by digest only, also in this new line
