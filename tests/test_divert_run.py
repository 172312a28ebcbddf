"""``blocklist-divert run``: the health gate (a table), the health probe against a real HTTP
server, and the loop against a real store and real nftables sets in a namespace this test
creates (the shipped table), with the proxy's health served by a real aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import ClientSession, web

from blocklist_addon.lists.store import Store, open_store
from divert import DivertError
from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.health import HealthGate, Phase, poll_interval, probe_health
from divert.planes import nft
from divert.run import Runner, resolve_wait
from testlab.divert_lab import load_table, set_contents
from testlab.netns import Lab, Namespace, unavailable

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "blocklist-divert.service"
WITHDRAW_AFTER = 30.0
A = DiversionSet.build({"h1": ["203.0.113.20", "2001:db8:2::20"]})
B = DiversionSet.build({"h1": ["203.0.113.21"], "h2": ["203.0.113.22"]})
needs_nft = pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))


# -- the gate -----------------------------------------------------------------------------------

#: (seconds since start, healthy) observations -> the phase after each one.
GATE_CASES = [
    ([(0, True)], [Phase.DIVERTING]),
    ([(0, False), (29, False), (30, False)], [Phase.STARTING, Phase.STARTING, Phase.WITHDRAWN]),
    ([(0, True), (1, False), (30, False), (31, False)], [Phase.DIVERTING] * 3 + [Phase.WITHDRAWN]),
    # One good answer starts the count again.
    (
        [(0, True), (1, False), (20, True), (21, False), (50, False), (51, False)],
        [Phase.DIVERTING] * 5 + [Phase.WITHDRAWN],
    ),
    # Restored at the first good answer after a withdrawal.
    (
        [(0, False), (30, False), (31, False), (32, True)],
        [Phase.STARTING, Phase.WITHDRAWN, Phase.WITHDRAWN, Phase.DIVERTING],
    ),
]


@pytest.mark.parametrize(("observations", "phases"), GATE_CASES)
def test_health_gate(observations: list[tuple[float, bool]], phases: list[Phase]) -> None:
    gate = HealthGate(WITHDRAW_AFTER)
    seen = []
    for now, healthy in observations:
        gate.observe(healthy, 1000.0 + now)
        seen.append(gate.phase)
    assert seen == phases


def test_health_gate_reports_each_change_once() -> None:
    gate = HealthGate(WITHDRAW_AFTER)
    changes = [gate.observe(ok, t) for t, ok in [(0, True), (1, True), (2, False), (40, False)]]
    changes += [gate.observe(False, 41), gate.observe(True, 42), gate.observe(True, 43)]
    assert changes == [Phase.DIVERTING, None, None, Phase.WITHDRAWN, None, Phase.DIVERTING, None]


def test_poll_interval_is_a_tenth_of_withdraw_after_within_bounds() -> None:
    assert poll_interval(30) == 3.0
    assert poll_interval(1) == 0.2
    assert poll_interval(3600) == 5.0


def test_resolutions_are_spread_at_random_around_the_interval() -> None:
    """A fixed 300 s rhythm of the listed hostnames' DNS queries stands out on the wire."""
    waits = [resolve_wait(300.0) for _ in range(200)]
    assert all(240.0 <= w <= 360.0 for w in waits)
    assert max(waits) - min(waits) > 60.0  # spread, not one value


# -- the probe: a real HTTP server playing the proxy's /healthz ----------------------------------


class HealthServer:
    """The proxy's status endpoint as a real aiohttp server; tests set what it answers."""

    def __init__(self) -> None:
        self.code, self.doc, self.delay = 200, {"status": "ok"}, 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    def answer(self, code: int, status: str | None, *, delay: float = 0.0) -> None:
        self.code, self.delay = code, delay
        self.doc = {"status": status} if status is not None else {}

    async def _health(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)  # a hung proxy, when a test asks for one
        return web.json_response(self.doc, status=self.code)

    async def start(self, sock: socket.socket | None = None) -> HealthServer:
        """On 127.0.0.1, or on ``sock`` (one made inside a namespace, for a ``run`` there)."""
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        if sock is None:
            site: web.BaseSite = web.TCPSite(self.runner, "127.0.0.1", 0)
        else:
            site = web.SockSite(self.runner, sock)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/healthz"
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def health() -> AsyncIterator[HealthServer]:
    server = await HealthServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("code", "status", "healthy"),
    [
        (200, "ok", True),
        (200, "degraded", True),  # store down, list in memory still enforced
        (503, "stale", True),  # an old list is still enforced: withdrawing enforces nothing
        (503, "no-list", False),
        (503, "starting", False),
        (500, None, False),
        (404, "ok", False),
    ],
)
async def test_probe_reads_the_proxys_verdict(
    health: HealthServer, code: int, status: str | None, healthy: bool
) -> None:
    health.answer(code, status)
    async with ClientSession() as session:
        ok, why = await probe_health(session, health.url, 2.0)
    assert ok is healthy, why


async def test_probe_fails_on_no_answer_within_the_timeout(health: HealthServer) -> None:
    health.answer(200, "ok", delay=1.5)
    async with ClientSession() as session:
        started = time.monotonic()
        ok, why = await probe_health(session, health.url, 0.3)
        assert not ok and "no answer" in why
        assert time.monotonic() - started < 1.2
        await health.stop()
        ok, why = await probe_health(session, health.url, 0.3)
        assert not ok and "no answer" in why


# -- the loop, against real nft sets -------------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[Namespace]:
    with Lab() as lab:
        ns = lab.namespace("run")
        load_table(ns, "sub0")
        yield ns


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    opened = open_store((tmp_path / "store").as_uri(), namespace="divert")
    try:
        yield opened
    finally:
        await opened.close()


async def publish(store: Store, dset: DiversionSet) -> None:
    await store.publish(dset.to_bytes(), checksum=dset.checksum, entries=len(dset), source="test")


def sets(ns: Namespace) -> set[str]:
    return set(set_contents(ns, "divert4")) | set(set_contents(ns, "divert6"))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_runner(
    gateway: Namespace,
    store: Store,
    health: HealthServer,
    session: ClientSession,
    tmp_path: pathlib.Path,
    resolve: Callable[[], Awaitable[str]] | None = None,
    **config: float,
) -> Runner:
    async def no_resolve() -> str:
        return "nothing to resolve"

    return Runner(
        DivertConfig(**{"health_url": health.url, "withdraw_after": WITHDRAW_AFTER, **config}),
        store,
        resolve or no_resolve,
        functools.partial(nft.apply, nft=[*gateway.exec_prefix(), "nft"]),
        functools.partial(probe_health, session, health.url, 2.0),
        functools.partial(nft.read, nft=[*gateway.exec_prefix(), "nft"]),
        status_file=tmp_path / "run" / "status.json",
        metrics_file=tmp_path / "run" / "metrics.prom",
    )


@needs_nft
async def test_the_sets_are_emptied_after_withdraw_after_of_ill_health_and_refilled(
    gateway: Namespace,
    store: Store,
    health: HealthServer,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await publish(store, A)
    async with ClientSession() as session:
        runner = make_runner(gateway, store, health, session, tmp_path)
        runner.clock = clock = Clock()
        status = lambda: json.loads(runner.status_file.read_text())  # noqa: E731
        await runner.tick()
        assert sets(gateway) == A.addresses
        assert status()["phase"] == "diverting"

        health.answer(503, "no-list")
        await runner.tick()
        clock.now += WITHDRAW_AFTER - 1
        await runner.tick()
        assert sets(gateway) == A.addresses  # not yet: a short failure changes nothing
        assert "withdrawn" not in caplog.text.lower()
        clock.now += 1
        with caplog.at_level(logging.ERROR, logger="blocklist-divert"):
            await runner.tick()
        assert sets(gateway) == set()
        assert "WITHDRAWN" in caplog.text and "UNFILTERED" in caplog.text
        assert status()["phase"] == "withdrawn"
        assert status()["proxy"]["healthy"] is False
        metrics = runner.metrics_file.read_text()
        assert "blocklist_divert_withdrawn 1\n" in metrics
        assert "blocklist_divert_withdrawals_total 1\n" in metrics

        # A set published meanwhile is not applied while withdrawn...
        await publish(store, B)
        clock.now += 5
        await runner.tick()
        assert sets(gateway) == set()
        # ...and is what comes back when the proxy is healthy again.
        health.answer(200, "ok")
        clock.now += 1
        await runner.tick()
        assert sets(gateway) == B.addresses
        assert status()["phase"] == "diverting"
        assert "blocklist_divert_withdrawn 0\n" in runner.metrics_file.read_text()
        assert 'blocklist_divert_addresses{family="ipv4"} 2' in runner.metrics_file.read_text()


@needs_nft
async def test_while_withdrawn_the_empty_sets_are_applied_once(
    gateway: Namespace, store: Store, health: HealthServer, tmp_path: pathlib.Path
) -> None:
    """An applied empty set is still an applied set: withdrawn, run does not flush the sets
    (or run ``birdc configure``) again on every tick, and a read-back that finds them as
    applied changes nothing either."""
    await publish(store, A)
    async with ClientSession() as session:
        runner = make_runner(gateway, store, health, session, tmp_path)
        applied: list[int] = []
        real = runner.apply

        def counted(dset: DiversionSet) -> None:
            applied.append(len(dset))
            real(dset)

        runner.apply, runner.clock = counted, (clock := Clock())
        await runner.tick()
        health.answer(503, "no-list")
        await runner.tick()
        clock.now += WITHDRAW_AFTER
        for _ in range(5):
            await runner.tick()
            clock.now += 1
        clock.now += runner.config.verify_interval
        await runner.tick()
        assert runner.verified_at == clock.now  # read back, found as applied
        assert sets(gateway) == set()
        assert applied == [len(A), 0]


@needs_nft
async def test_until_the_first_health_answer_the_sets_are_left_alone(
    gateway: Namespace, store: Store, health: HealthServer, tmp_path: pathlib.Path
) -> None:
    """A restart of run opens no gap: what a previous run applied stays while the proxy is
    still being asked."""
    nft.apply(A, nft=[*gateway.exec_prefix(), "nft"])
    await publish(store, B)
    health.answer(503, "starting")
    async with ClientSession() as session:
        runner = make_runner(gateway, store, health, session, tmp_path)
        await runner.tick()
        assert runner.gate.phase is Phase.STARTING
        assert sets(gateway) == A.addresses


@needs_nft
async def test_a_missing_table_is_said_once_and_applied_when_it_is_back(
    gateway: Namespace,
    store: Store,
    health: HealthServer,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await publish(store, A)
    gateway.run("nft", "delete", "table", "inet", "blocklist")
    async with ClientSession() as session:
        runner = make_runner(gateway, store, health, session, tmp_path)
        with caplog.at_level(logging.ERROR, logger="blocklist-divert"):
            await runner.tick()
            await runner.tick()
        assert caplog.text.count("load deploy/nftables-divert.nft first") == 1
        load_table(gateway, "sub0")
        await runner.tick()
        assert sets(gateway) == A.addresses


@needs_nft
async def test_run_resolves_every_interval_and_reapplies_after_each_resolution(
    gateway: Namespace, store: Store, health: HealthServer, tmp_path: pathlib.Path
) -> None:
    results = [A, B]
    calls = 0

    async def resolve() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise DivertError("growth gate: refused (test)")
        await publish(store, results[min(calls, 2) - 1])
        return f"resolution {calls}"

    async with ClientSession() as session:
        runner = make_runner(
            gateway, store, health, session, tmp_path, resolve, interval=0.5, withdraw_after=2
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await eventually(lambda: sets(gateway) == A.addresses, "the first resolution applied")
            await eventually(lambda: sets(gateway) == B.addresses, "the second one applied")
            await eventually(lambda: calls >= 3, "a third resolution (refused)")
            # Sets emptied behind run's back (a reloaded ruleset) come back after a resolution.
            nft.apply(DiversionSet.EMPTY, nft=[*gateway.exec_prefix(), "nft"])
            await eventually(lambda: sets(gateway) == B.addresses, "the sets repaired")
            assert runner.resolutions["failed"] == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def ticks(status_file: pathlib.Path, count: int, phase: str = "diverting") -> None:
    """Wait until a ``run`` process has rewritten its status file ``count`` times in
    ``phase`` (once a tick): proof that it looked at the store and the proxy that often."""
    seen: set[float] = set()

    def written() -> bool:
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(status_file.read_text())
            if status["phase"] == phase:
                seen.add(status["updated_at"])
        return len(seen) >= count

    await eventually(written, f"{count} ticks of run in phase {phase}", timeout=30)


# -- the systemd unit ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_systemd_unit_verifies(tmp_path: pathlib.Path) -> None:
    """``systemd-analyze verify`` (with ExecStart pointed at a command that exists: it checks);
    any warning (an unknown key, a bad value) fails the test."""
    unit = tmp_path / UNIT.name
    text = UNIT.read_text().replace("/usr/local/bin/blocklist-divert", "/bin/true")
    unit.write_text(text)
    assert "/bin/true --config /etc/blocklist-proxy/divert.toml run" in text
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_nft
async def test_run_tells_systemd_it_is_ready_once_its_first_check_is_written(
    gateway: Namespace,
    store: Store,
    health: HealthServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unit is Type=notify: ``systemctl enable --now blocklist-divert`` returns once run
    has asked the proxy and the store, applied, and written its status file, which the
    guide's next line reads (the ISP walk found it missing: with Type=simple systemctl
    returned before run had written anything). READY=1 is sent once."""
    await publish(store, A)
    address = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    async with ClientSession() as session:
        runner = make_runner(gateway, store, health, session, tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            message = await asyncio.wait_for(
                asyncio.get_running_loop().sock_recv(listener, 4096), 10
            )
            assert b"READY=1" in message.split(b"\n")
            assert json.loads(runner.status_file.read_text())["phase"] == "diverting"
            assert sets(gateway) == A.addresses
            await asyncio.sleep(2 * poll_interval(WITHDRAW_AFTER))  # more ticks: no more READY
            with pytest.raises(BlockingIOError):
                listener.recv(4096)
        finally:
            stop.set()
            await task
            listener.close()
    assert UNIT.read_text().count("\nType=notify\n") == 1
