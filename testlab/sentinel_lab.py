"""A Redis Sentinel deployment on loopback for the failover tests and bench: a primary, a
replica and three sentinels, each a real ``redis-server`` process (the sentinels in
``--sentinel`` mode) on free ports, every one stopped by its PID at the end.

Sentinel's timers are set low (``down-after-milliseconds`` 1000, ``failover-timeout`` 2000)
so that a killed primary is replaced within a few seconds; the rest is Redis' defaults.
"""

from __future__ import annotations

import pathlib
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SERVICE = "mymaster"
#: Seconds each process gets to answer PING, and the sentinels to see each other.
START_TIMEOUT = 20.0
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One inline command (``PING``, ``SENTINEL MASTER mymaster``...) and its raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(args).encode() + b"\r\n")
        reply = b""
        sock.settimeout(0.2)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            reply += chunk
        return reply


def _fields(reply: bytes) -> dict[str, str]:
    """A RESP array of name/value pairs (SENTINEL MASTER's reply) as a dict."""
    lines = reply.decode(errors="replace").split("\r\n")
    values = [line for line in lines if line and line[0] not in "*$"]
    return dict(zip(values[::2], values[1::2], strict=False))


class Process:
    """One redis-server process with its own directory."""

    def __init__(self, binary: pathlib.Path, directory: pathlib.Path, name: str) -> None:
        self.binary = binary
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> pathlib.Path:
        return self.directory / "redis.log"

    def start(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            [str(self.binary), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited; see {self.log}")
        try:
            return command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class SentinelCluster:
    """Primary, replica and three sentinels on 127.0.0.1."""

    def __init__(self, binary: pathlib.Path, directory: pathlib.Path) -> None:
        self.primary = Process(binary, directory, "primary")
        self.replica = Process(binary, directory, "replica")
        self.sentinels = [Process(binary, directory, f"sentinel{i}") for i in range(3)]

    @property
    def nodes(self) -> list[Process]:
        return [self.primary, self.replica]

    def url(self, db: int = 0, **query: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}" + (f"?{tail}" if tail else "")

    def _node_argv(self, node: Process, *extra: str) -> list[str]:
        return [
            "--port", str(node.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(node.directory), "--logfile", str(node.log),
            *extra,
        ]  # fmt: skip

    def start(self) -> SentinelCluster:
        self.primary.start(self._node_argv(self.primary))
        self.replica.start(
            self._node_argv(self.replica, "--replicaof", "127.0.0.1", str(self.primary.port))
        )
        self.wait(self._replicating, "the replica to follow the primary")
        # Each sentinel is told the replica and the other sentinels up front: found by
        # itself, that takes Sentinel's INFO and hello periods (10 s and 2 s).
        ids = {s.port: secrets.token_hex(20) for s in self.sentinels}
        for sentinel in self.sentinels:
            config = sentinel.directory / "sentinel.conf"
            lines = [
                f"port {sentinel.port}",
                "bind 127.0.0.1",
                f"dir {sentinel.directory}",
                f"logfile {sentinel.log}",
                f"sentinel myid {ids[sentinel.port]}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1",
                f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica.port}",
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {port} {runid}"
                    for port, runid in ids.items()
                    if port != sentinel.port
                ),
            ]
            config.write_text("\n".join(lines) + "\n")
            sentinel.start([str(config), "--sentinel"])
        self.wait(self._ready, "three sentinels that see the primary, its replica and each other")
        return self

    def _replicating(self) -> bool:
        if not (self.primary.answers() and self.replica.answers()):
            return False
        return b"master_link_status:up" in command(self.replica.port, "INFO", "replication")

    def _ready(self) -> bool:
        if not all(p.answers() for p in self.sentinels):
            return False
        for sentinel in self.sentinels:
            state = _fields(command(sentinel.port, "SENTINEL", "MASTER", SERVICE))
            if state.get("num-other-sentinels") != "2" or state.get("num-slaves") != "1":
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel names it."""
        reply = command(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        values = [v for v in reply.decode().split("\r\n") if v and v[0] not in "*$"]
        return int(values[1]) if len(values) == 2 else None

    def failed_over(self) -> bool:
        """Every sentinel names the replica, and the replica says it is the primary now."""
        if not all(
            self._names(s, self.replica.port) for s in self.sentinels if s.process is not None
        ):
            return False
        return b"role:master" in command(self.replica.port, "INFO", "replication")

    def _names(self, sentinel: Process, port: int) -> bool:
        reply = command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return f"\r\n{port}\r\n".encode() in reply

    @staticmethod
    def wait(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)  # poll interval; the condition is what synchronizes

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop()


@contextmanager
def sentinel_cluster(binary: pathlib.Path, directory: pathlib.Path) -> Iterator[SentinelCluster]:
    """A started cluster, every process stopped by PID when the block ends (also on failure)."""
    cluster = SentinelCluster(binary, directory)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
