"""The diversion set over real BGP sessions (issue 13): ``blocklist-divert run`` as ExaBGP's
API process (one test) and driving BIRD 2 through include files and ``birdc configure``
(another), each announcing to a core router (BIRD 2) in namespaces these tests create
(``testlab/bgp_lab.py``), with the shipped ``deploy/exabgp.conf``, ``deploy/bird-divert.conf``
and ``deploy/nftables-routed-proxy.nft``.

Each test walks the same life: the set announced (a /32 or /128 per address, via the
proxy, nothing else); a client behind the core gets the 451 on a diverted address and
reaches an undiverted one directly; a set change adds and removes exactly the changed
routes; a BGP session flap keeps the set; the proxy stopped withdraws everything after
``withdraw_after`` and the client reaches the origin directly, and the proxy back brings it
back; the BGP speaker itself dying withdraws everything (the session closes), and a new one
announces the whole set again.

Needs root, ``ip``, ``nft``, ``bird``/``birdc`` and ``exabgp`` (tests/debian-packages.txt);
skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from divert.dataset import DiversionSet
from divert.planes.export import render
from testlab.bgp_lab import (
    BIRD_DIVERT,
    COMMUNITY,
    EXABGP_CONF,
    PROXY4,
    PROXY6,
    Routed,
    expected,
)
from testlab.divert_lab import listed_store, publish, start_proxy, start_run
from testlab.harness import VENV_BIN, Proxy, assert_splash, wait_for
from testlab.netns import Lab, Namespace, unavailable
from testlab.origins import TestCA

UNDIVERTED = "203.0.113.10"
DIVERTED = "203.0.113.20"
MOVED = "203.0.113.21"
ADDED = "203.0.113.22"
DIVERTED6 = "2001:db8:2::20"
FIRST = DiversionSet.build({"a": [DIVERTED, DIVERTED6]})
SECOND = DiversionSet.build({"a": [DIVERTED], "b": [MOVED]})  # DIVERTED6 out, MOVED in
WITHDRAW_AFTER = 2.0
VERIFY = 1.0  # verify_interval of the repair tests
#: BGP convergence here: a session closing or an UPDATE is seen by the core within
#: milliseconds; a new session takes its connect delay (1 s) and an OPEN exchange.
CONVERGE = 15.0

pytestmark = pytest.mark.skipif(
    bool(unavailable("nft", "bird", "birdc")), reason=str(unavailable("nft", "bird", "birdc"))
)


@pytest.fixture(scope="module")
def routed(
    ca: TestCA, tmp_path_factory: pytest.TempPathFactory, confdir: pathlib.Path
) -> Iterator[tuple[Routed, Proxy, str]]:
    """One routed ISP for the module: the core, the client, the origins, the proxy host with
    its table and the transparent proxy. Each test brings its own BGP speaker."""
    directory = tmp_path_factory.mktemp("bgp")
    with Lab() as lab:
        routed = Routed.build(lab, ca, [UNDIVERTED, DIVERTED, MOVED, DIVERTED6], directory)
        try:
            store = listed_store(directory)
            proxy = start_proxy(
                routed.proxy_ns,
                ca,
                directory / "proxy",
                store,
                confdir,
                blocklist_intercept="never",
            )
            try:
                yield routed, proxy, store
            finally:
                proxy.stop()
        finally:
            routed.close()


def divert_config(
    path: pathlib.Path, store: str, proxy: Proxy, **extra: str | float
) -> pathlib.Path:
    lines = [
        f'store = "{store}"',
        f'health_url = "http://127.0.0.1:{proxy.status_port}/healthz"',
        f"withdraw_after = {WITHDRAW_AFTER}",
        "interval = 3600",
        f'next_hop = ["{PROXY4}", "{PROXY6}"]',
        f'community = "{COMMUNITY}"',
        *(f"{key} = {json.dumps(value)}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def connections(proxy: Proxy) -> float:
    return proxy.metric("blocklist_client_connections_total")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (ExaBGP's API process)."""
    with contextlib.suppress(OSError):
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Speaker:
    """A BGP speaker on the proxy host, started and killed by the test (by PID)."""

    def __init__(self, ns: Namespace, workdir: pathlib.Path) -> None:
        self.ns, self.workdir = ns, workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{type(self).__name__.lower()}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = self.ns.popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env()
            )

    def kill(self) -> None:
        """The speaker dies (SIGKILL: no goodbye to its peer, its helpers orphaned)."""
        assert self.process is not None
        helpers = children(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        try:
            wait_for(lambda: not any(alive(p) for p in helpers), 10, "the helpers to exit")
        finally:
            for pid in helpers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class ExaBgp(Speaker):
    """ExaBGP with the shipped deploy/exabgp.conf; it starts ``blocklist-divert run``."""

    def __init__(
        self,
        ns: Namespace,
        workdir: pathlib.Path,
        config: pathlib.Path,
        elsewhere: pathlib.Path | None = None,
    ) -> None:
        super().__init__(ns, workdir)
        self.status_file = workdir / "status.json"
        self.elsewhere = elsewhere
        text = EXABGP_CONF.read_text()
        for old, new in (
            ("/usr/local/bin/blocklist-divert", str(VENV_BIN / "blocklist-divert")),
            ("/etc/blocklist-proxy/divert.toml", str(config)),
            ("--data-plane exabgp;", f"--data-plane exabgp --status-file {self.status_file};"),
        ):
            assert old in text, old
            text = text.replace(old, new)
        if elsewhere is not None:
            # Another API process, whose commands the test writes into a FIFO it reads
            # (opened read-write: it never sees an end of file); it ends with ExaBGP's pipe.
            os.mkfifo(elsewhere, 0o600)
            script = f"cat 3<>{elsewhere} <&3 & cat >/dev/null; kill $!"
            text += f"\nprocess elsewhere {{\n\trun /bin/sh -c '{script}';\n\tencoder text;\n}}\n"
        self.conf = workdir / "exabgp.conf"
        self.conf.write_text(text)

    def command_from_elsewhere(self, line: str) -> None:
        """``line`` to ExaBGP from its other API process, behind run's back."""
        assert self.elsewhere is not None
        fd = os.open(self.elsewhere, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody reads it
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)

    def command(self) -> list[str]:
        return ["exabgp", str(self.conf)]

    def env(self) -> dict[str, str]:
        # As root ExaBGP would drop to its own user, which cannot read the test's files.
        return {
            **os.environ,
            "exabgp.daemon.user": "root",
            "exabgp.daemon.drop": "false",
            "exabgp.api.cli": "false",
            "exabgp.log.destination": "stdout",
            "STATE_DIRECTORY": str(self.workdir),  # run's local copy of the set
        }


class Bird(Speaker):
    """BIRD 2 with the shipped deploy/bird-divert.conf, included from a minimal bird.conf."""

    def __init__(self, ns: Namespace, workdir: pathlib.Path) -> None:
        super().__init__(ns, workdir)
        self.include = workdir / "bird-divert"
        self.include.mkdir()
        for name in ("divert4.conf", "divert6.conf"):  # as the guide says: empty at first
            (self.include / name).write_text("")
        text = BIRD_DIVERT.read_text()
        assert "/etc/bird/blocklist-divert" in text
        (workdir / "bird-divert.conf").write_text(
            text.replace("/etc/bird/blocklist-divert", str(self.include))
        )
        self.conf = workdir / "bird.conf"
        self.good = (
            f'router id {PROXY4};\nprotocol device {{}}\ninclude "{workdir}/bird-divert.conf";\n'
        )
        self.conf.write_text(self.good)
        self.socket = workdir / "bird.ctl"

    def command(self) -> list[str]:
        return ["bird", "-f", "-c", str(self.conf), "-s", str(self.socket)]

    def run_config(self, store: str, proxy: Proxy, **extra: float) -> pathlib.Path:
        """run's config for this BIRD."""
        return divert_config(
            self.workdir / "divert.toml",
            store,
            proxy,
            data_plane="bird",
            bird_dir=str(self.include),
            bird_socket=str(self.socket),
            **extra,
        )

    def birdc(self, *args: str) -> str:
        """A command to this BIRD, as an operator (or a config management tool) would."""
        done = subprocess.run(
            ["birdc", "-s", str(self.socket), *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def without_includes(self) -> str:
        """A bird.conf whose static protocols lost the include lines (the BGP session and
        both protocols stay): BIRD then holds none of the set, while the files still do."""
        text = (self.workdir / "bird-divert.conf").read_text()
        kept = [line for line in text.splitlines() if not line.startswith("include ")]
        (self.workdir / "bird-divert-bare.conf").write_text("\n".join(kept) + "\n")
        return self.good.replace("bird-divert.conf", "bird-divert-bare.conf")


def routes_are(routed: Routed, dset: DiversionSet, what: str, timeout: float = CONVERGE) -> None:
    want = expected(dset.addresses)
    wait_for(lambda: routed.routes() == want, timeout, f"{what}: table 100 = {sorted(want)}")


def direct(routed: Routed, address: str) -> None:
    """The client reaches the origin on ``address`` itself (no proxy: its own address)."""
    response = routed.site.get(address, "blocked.example.com", "/page.html")
    assert response.status == 200
    assert routed.site.http[address].remotes[-1] == routed.site.topo.client_address(address)


def through_the_proxy(routed: Routed, address: str) -> None:
    assert_splash(routed.site.get(address, "blocked.example.com", "/page.html"), page=False)


def status(path: pathlib.Path) -> dict:
    """run's status file; {} before its first tick wrote it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def life(routed: Routed, proxy: Proxy, store: str, speaker: Speaker, status_file: pathlib.Path):
    """What both speakers must do; returns with SECOND announced and the proxy healthy."""
    site = routed.site
    asyncio.run(publish(store, FIRST))
    speaker.start()
    routes_are(routed, FIRST, "the first set announced")
    assert routed.session_up()

    # Diverted: through the proxy. Not diverted: directly, the proxy never sees it.
    through_the_proxy(routed, DIVERTED)
    through_the_proxy(routed, DIVERTED6)
    served = site.get(DIVERTED, "blocked.example.com", "/other.html")
    assert served.status == 200
    assert site.http[DIVERTED].remotes[-1] == PROXY4  # fetched by the proxy, not looped
    before = connections(proxy)
    direct(routed, UNDIVERTED)
    assert connections(proxy) == before

    # A set change: exactly the changed routes go over the session (one announced, one
    # withdrawn), not the whole set again.
    announced, withdrawn = routed.received()
    asyncio.run(publish(store, SECOND))
    routes_are(routed, SECOND, "the changed set")
    assert routed.received() == (announced + 1, withdrawn + 1)
    through_the_proxy(routed, MOVED)
    direct(routed, DIVERTED6)

    # A session flap (the core resets it): the set comes back whole.
    routed.birdc("disable", "proxy")
    wait_for(lambda: routed.routes() == {}, CONVERGE, "the routes gone with the session")
    routed.birdc("enable", "proxy")
    routes_are(routed, SECOND, "the set after the flap")

    # The proxy dies: everything withdrawn after withdraw_after; the client goes direct.
    stopping = time.monotonic()
    proxy.stop()
    wait_for(lambda: routed.routes() == {}, WITHDRAW_AFTER + CONVERGE, "the withdrawal")
    assert time.monotonic() - stopping >= WITHDRAW_AFTER
    # The status file follows the apply (BIRD's routes are read back after configure).
    state = wait_for(
        lambda: (s := status(status_file)).get("phase") == "withdrawn" and s,
        CONVERGE,
        "the withdrawal in the status file",
    )
    assert isinstance(state, dict)
    assert state["since"] - state["proxy"]["failing_since"] >= WITHDRAW_AFTER
    direct(routed, DIVERTED)
    direct(routed, MOVED)
    proxy.start()
    routes_are(routed, SECOND, "the set announced again")
    through_the_proxy(routed, DIVERTED)

    # The speaker dies: its session closes and every route goes (fail open); a new one
    # announces the whole set.
    speaker.kill()
    wait_for(lambda: routed.routes() == {}, CONVERGE, "the routes gone with the speaker")
    direct(routed, MOVED)
    speaker.start()
    routes_are(routed, SECOND, "the set from a new speaker")
    through_the_proxy(routed, MOVED)


@pytest.mark.skipif(bool(unavailable("exabgp")), reason=str(unavailable("exabgp")))
def test_exabgp_announces_the_set_and_follows_the_proxys_health(
    routed: tuple[Routed, Proxy, str], tmp_path: pathlib.Path
) -> None:
    lab, proxy, store = routed
    config = divert_config(tmp_path / "divert.toml", store, proxy)
    speaker = ExaBgp(lab.proxy_ns, tmp_path, config)
    try:
        life(lab, proxy, store, speaker, speaker.status_file)
        assert status(speaker.status_file)["data_plane"] == "exabgp"
        log = speaker.log()
        assert "WITHDRAWN" in log and "healthy again" in log
        assert "refused a command" not in log
    finally:
        if speaker.process is not None and speaker.process.poll() is None:
            speaker.kill()


def test_bird_announces_the_set_follows_the_proxys_health_and_survives_a_bad_config(
    routed: tuple[Routed, Proxy, str], tmp_path: pathlib.Path
) -> None:
    lab, proxy, store = routed
    speaker = Bird(lab.proxy_ns, tmp_path)
    config = speaker.run_config(store, proxy)
    status_file = tmp_path / "status.json"
    run_log = tmp_path / "run.log"
    run = start_run(lab.proxy_ns, config, status_file, run_log)
    try:
        life(lab, proxy, store, speaker, status_file)
        assert status(status_file)["data_plane"] == "bird"
        hops = {4: PROXY4, 6: PROXY6}
        assert (speaker.include / "divert4.conf").read_text() == render(
            "bird", SECOND, next_hop=hops, family=4, community=COMMUNITY
        )

        # BIRD refuses a configuration (someone broke bird.conf): the routes stay, the
        # include files stay what BIRD runs, run says why; fixed, the new set goes out.
        speaker.conf.write_text(speaker.good + "protocol nonsense {\n")
        third = DiversionSet.build({"a": [DIVERTED], "b": [MOVED], "c": [ADDED]})
        asyncio.run(publish(store, third))
        wait_for(lambda: "BIRD refused" in run_log.read_text(), CONVERGE, "the refusal logged")
        assert routed_is(lab, SECOND)
        assert ADDED not in (speaker.include / "divert4.conf").read_text()
        speaker.conf.write_text(speaker.good)
        routes_are(lab, third, "the new set once BIRD takes it")
        assert "WITHDRAWN" in run_log.read_text()
    finally:
        if speaker.process is not None and speaker.process.poll() is None:
            speaker.kill()
        run.send_signal(signal.SIGTERM)
        run.wait(15)


def routed_is(routed: Routed, dset: DiversionSet) -> bool:
    return routed.routes() == expected(dset.addresses)


def test_bird_routes_lost_behind_runs_back_are_put_back(
    routed: tuple[Routed, Proxy, str], tmp_path: pathlib.Path
) -> None:
    """run reads BIRD's own routes, not only its include files: BIRD reconfigured behind
    run's back with a configuration whose static protocols lost the include withdraws the
    set while the files still hold it; run puts it back (files, ``birdc configure``, which
    reads bird.conf again) within verify_interval, counted as a repair. A bird.conf that
    lost the include for good is an apply error naming it, in_sync 0, until it is back."""
    lab, proxy, store = routed
    speaker = Bird(lab.proxy_ns, tmp_path)
    config = speaker.run_config(store, proxy, verify_interval=VERIFY)
    status_file = tmp_path / "status.json"
    run_log = tmp_path / "run.log"
    asyncio.run(publish(store, FIRST))
    speaker.start()
    run = start_run(lab.proxy_ns, config, status_file, run_log)
    try:
        routes_are(lab, FIRST, "the set announced")
        wait_for(lambda: status(status_file).get("in_sync"), CONVERGE, "run in sync")
        files = {p.name: p.read_text() for p in speaker.include.iterdir()}
        announced, withdrawn = lab.received()

        bare = tmp_path / "bare.conf"
        bare.write_text(speaker.without_includes())
        lost = time.monotonic()
        speaker.birdc("configure", f'"{bare}"')
        wait_for(lambda: lab.received()[1] == withdrawn + 2, CONVERGE, "the routes withdrawn")
        routes_are(lab, FIRST, "the set put back", VERIFY + CONVERGE)
        took = time.monotonic() - lost
        print(f"BIRD's routes put back {took:.1f} s after they were lost")
        assert lab.received() == (announced + 2, withdrawn + 2)  # really lost, then back
        assert took < VERIFY + 5.0
        assert {p.name: p.read_text() for p in speaker.include.iterdir()} == files
        # run counts the repair before it applies and writes the status file after: BIRD
        # can announce the routes again before the file says so.
        repaired = "the repair in the status file"
        wait_for(lambda: status(status_file).get("repairs", 0) >= 1, CONVERGE, repaired)
        assert status(status_file)["repairs"] == 1
        assert "repairing" in run_log.read_text()

        # For good: bird.conf itself lost the include. BIRD takes run's configure but holds
        # nothing; that is said, not taken for an applied set.
        speaker.conf.write_text(speaker.without_includes())
        speaker.birdc("configure")
        wait_for(
            lambda: "BIRD took the configuration but holds 0 of the 2" in run_log.read_text(),
            VERIFY + CONVERGE,
            "the lost include said",
        )
        # (said in the log before the status file is written, as for the repair above)
        state = wait_for(
            lambda: (
                (s := status(status_file)).get("in_sync") is False
                and s.get("apply_errors", 0) >= 1
                and s
            ),
            CONVERGE,
            "the apply error in the status file",
        )
        assert state["held"] == {"ipv4": 0, "ipv6": 0, "at": state["held"]["at"]}
        assert lab.routes() == {}
        speaker.conf.write_text(speaker.good)
        routes_are(lab, FIRST, "the set once bird.conf includes it again", VERIFY + CONVERGE)
        wait_for(lambda: status(status_file).get("in_sync"), CONVERGE, "run in sync again")
    finally:
        if speaker.process is not None and speaker.process.poll() is None:
            speaker.kill()
        run.send_signal(signal.SIGTERM)
        run.wait(15)


@pytest.mark.skipif(bool(unavailable("exabgp")), reason=str(unavailable("exabgp")))
def test_exabgp_routes_cleared_behind_runs_back_are_put_back(
    routed: tuple[Routed, Proxy, str], tmp_path: pathlib.Path
) -> None:
    """run reads ExaBGP's adj-rib-out back (``show adj-rib out``): ``clear adj-rib out``
    sent by another API process withdraws the set from the core router while run still
    believes it announced; run announces it again within verify_interval, a repair."""
    lab, proxy, store = routed
    config = divert_config(tmp_path / "divert.toml", store, proxy, verify_interval=VERIFY)
    speaker = ExaBgp(lab.proxy_ns, tmp_path, config, elsewhere=tmp_path / "elsewhere")
    asyncio.run(publish(store, FIRST))
    speaker.start()
    try:
        routes_are(lab, FIRST, "the set announced")
        wait_for(lambda: status(speaker.status_file).get("in_sync"), CONVERGE, "run in sync")
        announced, withdrawn = lab.received()

        lost = time.monotonic()
        speaker.command_from_elsewhere("clear adj-rib out")
        wait_for(lambda: lab.received()[1] == withdrawn + 2, CONVERGE, "the routes withdrawn")
        routes_are(lab, FIRST, "the set put back", VERIFY + CONVERGE)
        took = time.monotonic() - lost
        print(f"ExaBGP's routes put back {took:.1f} s after they were cleared")
        assert lab.received() == (announced + 2, withdrawn + 2)
        assert took < VERIFY + 5.0
        assert status(speaker.status_file)["repairs"] >= 1
        log = speaker.log()
        assert "repairing" in log and "refused a command" not in log
        # In sync, the read-back sends nothing more: no UPDATE for routes the core has.
        wait_for(lambda: status(speaker.status_file).get("in_sync"), CONVERGE, "in sync")
        held = status(speaker.status_file)["held"]["at"]
        wait_for(
            lambda: status(speaker.status_file)["held"]["at"] > held + VERIFY,
            CONVERGE,
            "two more read-backs",
        )
        assert lab.received() == (announced + 2, withdrawn + 2)
    finally:
        if speaker.process is not None and speaker.process.poll() is None:
            speaker.kill()
