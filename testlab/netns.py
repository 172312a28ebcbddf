"""Network namespaces for the tests that need real packets: a client, a gateway, a server.

Everything here happens inside namespaces the test creates; the root namespace's routes,
firewall and interfaces are never touched (veth pairs are created directly inside their
namespaces, never in the root one). Only documentation addresses are used.

- ``Lab``: a context manager that makes namespaces with unique names (the pid and a random
  suffix: other engineers' runs may be making theirs at the same moment), links them with
  veth pairs, starts processes inside them, and on exit (also when the test failed) kills
  those processes by their PID and deletes every namespace it made.
- ``Namespace``: one namespace: ``ip``/``nft``/``run``/``popen`` inside it, ``entered()`` to
  open sockets inside it from this process (``setns`` on the calling thread only: a socket
  keeps the namespace it was made in), ``listen``/``connect`` shortcuts.
- ``gateway_topology``: client -- gateway -- server, the shape of issue 12's tests::

      client  sub0: 198.51.100.2/24  2001:db8:1::2/64   default via the gateway
      gateway sub0: 198.51.100.1/24  2001:db8:1::1/64   (the subscriber interface)
              up0:  203.0.113.1/24   2001:db8:2::1/64   forwarding on
      server  up0:  203.0.113.x/24   2001:db8:2::x/64   default via the gateway

``unavailable()`` says why these tests cannot run here (not root, a tool missing); tests skip
with that reason, and run as root on CI (``make test`` installs the tools).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Lab",
    "Namespace",
    "Topology",
    "gateway_topology",
    "unavailable",
]

#: Prefix of every namespace these helpers make ("blocklist-proxy test").
PREFIX = "bpt"
NETNS_DIR = pathlib.Path("/run/netns")
#: How long a process inside a namespace gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0


def unavailable(*tools: str) -> str | None:
    """Why namespace tests cannot run here (None when they can): root and ``ip`` are
    needed, plus ``tools`` (e.g. "nft", "iperf3")."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    if not hasattr(os, "setns"):
        return "os.setns is missing from this Python"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/debian-packages.txt; `make system` as root)"
    return None


class CommandError(AssertionError):
    """A command inside a namespace failed (its output is in the message)."""


def _run(
    args: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
) -> str:
    done = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise CommandError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass(eq=False)
class Namespace:
    """One network namespace, made and deleted by a ``Lab``."""

    name: str
    role: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def path(self) -> pathlib.Path:
        return NETNS_DIR / self.name

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program inside this namespace. ``ip netns exec``
        execs the program in place, so a ``Popen``'s pid is the program's own."""
        return ["ip", "netns", "exec", self.name]

    def nsenter_prefix(self) -> list[str]:
        """The command prefix that runs a program in this namespace's network only, in this
        process's mount namespace. For programs whose mounts must outlive the call (podman:
        its containers' overlay mounts and /run/netns files are used by its later calls);
        ``ip netns exec`` gives each call a private mount namespace of its own."""
        return ["nsenter", f"--net={self.path}"]

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        """Run a command inside the namespace and return its stdout."""
        return _run([*self.exec_prefix(), *args], input=input, check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> str:
        return _run(["ip", "-n", self.name, *args], check=check)

    def nft(self, script: str, *defines: str) -> str:
        """``nft -f -`` inside the namespace (``defines``: NAME=VALUE for ``-D``)."""
        flags = [arg for define in defines for arg in ("-D", define)]
        return self.run("nft", *flags, "-f", "-", input=script)

    def sysctl(self, key: str, value: str) -> None:
        with self.entered():
            pathlib.Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")

    def popen(self, args: Sequence[str], **kwargs) -> subprocess.Popen[bytes]:
        """Start a program inside the namespace; the ``Lab`` kills it by PID on exit."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen([*self.exec_prefix(), *args], **kwargs)
        self.processes.append(process)
        return process

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with this thread inside the namespace (sockets made here stay in
        it; threads started here start in it). Other threads are not affected."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(self.path, os.O_RDONLY)
            try:
                os.setns(target, os.CLONE_NEWNET)
            finally:
                os.close(target)
            try:
                yield
            finally:
                os.setns(own, os.CLONE_NEWNET)
        finally:
            os.close(own)

    def listen(self, host: str, port: int = 0, *, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket bound to ``host``:``port`` inside the namespace (listening when TCP)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.entered():
            sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self, host: str, port: int, *, timeout: float = 10.0) -> socket.socket:
        """A TCP connection made from inside the namespace."""
        with self.entered():
            return socket.create_connection((host, port), timeout=timeout)

    def stop_processes(self) -> None:
        for process in reversed(self.processes):
            stop(process)
        self.processes.clear()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: by this process's PID only."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


class Lab:
    """Namespaces for one test (or module); everything is deleted on exit."""

    def __init__(self) -> None:
        self.token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.namespaces: list[Namespace] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        """A new namespace with its loopback up, named ``bpt-<role>-<pid>-<random>``."""
        ns = Namespace(f"{PREFIX}-{role}-{self.token}", role)
        _run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        # No duplicate address detection on the links made later: a tentative link-local
        # address delays neighbour discovery (and every first IPv6 packet) by seconds.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        return ns

    def link(self, a: Namespace, a_if: str, b: Namespace, b_if: str) -> None:
        """A veth pair between two namespaces, made inside ``a`` (never in the root one)."""
        a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")

    def close(self) -> None:
        errors: list[str] = []
        for ns in reversed(self.namespaces):
            ns.stop_processes()
        for ns in reversed(self.namespaces):
            try:
                # Whatever still runs inside (a proxy a failed test did not stop): deleting
                # the namespace would leave it running, unreachable, for ever.
                for pid in _run(["ip", "netns", "pids", ns.name]).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                _run(["ip", "netns", "delete", ns.name])
            except (CommandError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self.namespaces.clear()
        if errors:
            raise CommandError("; ".join(errors))


def add_address(ns: Namespace, interface: str, address: str) -> None:
    """An address in its documentation /24 or /64 (IPv6 without duplicate detection, so it
    is usable at once)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        ns.ip("addr", "add", f"{address}/24", "dev", interface)
    else:
        ns.ip("-6", "addr", "add", f"{address}/64", "dev", interface, "nodad")


@dataclass(eq=False)
class Topology:
    """client -- gateway -- server (see the module docstring for the addresses)."""

    client: Namespace
    gateway: Namespace
    server: Namespace
    servers: list[str]

    SUBSCRIBERS = "sub0"  # the gateway's interface toward the subscribers
    UPSTREAM = "up0"  # the gateway's interface toward the servers
    CLIENT4 = "198.51.100.2"
    CLIENT6 = "2001:db8:1::2"
    GATEWAY4 = "198.51.100.1"
    GATEWAY6 = "2001:db8:1::1"
    GATEWAY_UP4 = "203.0.113.1"
    GATEWAY_UP6 = "2001:db8:2::1"

    def client_address(self, toward: str) -> str:
        """The client's address that talks to ``toward`` (same family)."""
        return self.CLIENT6 if ":" in toward else self.CLIENT4

    def gateway_address(self, toward: str) -> str:
        """The gateway's upstream address (the source of the proxy's own connections)."""
        return self.GATEWAY_UP6 if ":" in toward else self.GATEWAY_UP4

    def add_server_address(self, address: str) -> None:
        add_address(self.server, self.UPSTREAM, address)
        self.servers.append(address)


def gateway_topology(lab: Lab, servers: Sequence[str] = ("203.0.113.10",)) -> Topology:
    """Three namespaces wired as a subscriber, an ISP gateway and the internet."""
    for address in servers:
        ip = ipaddress.ip_address(address)
        net = "203.0.113.0/24" if ip.version == 4 else "2001:db8:2::/64"
        assert ip in ipaddress.ip_network(net), f"{address}: servers live in {net}"
    topo = Topology(lab.namespace("client"), lab.namespace("gw"), lab.namespace("server"), [])
    lab.link(topo.gateway, topo.SUBSCRIBERS, topo.client, topo.SUBSCRIBERS)
    lab.link(topo.gateway, topo.UPSTREAM, topo.server, topo.UPSTREAM)
    add_address(topo.client, topo.SUBSCRIBERS, topo.CLIENT4)
    add_address(topo.client, topo.SUBSCRIBERS, topo.CLIENT6)
    add_address(topo.gateway, topo.SUBSCRIBERS, topo.GATEWAY4)
    add_address(topo.gateway, topo.SUBSCRIBERS, topo.GATEWAY6)
    add_address(topo.gateway, topo.UPSTREAM, topo.GATEWAY_UP4)
    add_address(topo.gateway, topo.UPSTREAM, topo.GATEWAY_UP6)
    for address in servers:
        topo.add_server_address(address)
    for ns, via4, via6, dev in (
        (topo.client, topo.GATEWAY4, topo.GATEWAY6, topo.SUBSCRIBERS),
        (topo.server, topo.GATEWAY_UP4, topo.GATEWAY_UP6, topo.UPSTREAM),
    ):
        # onlink: the route stands even before the namespace has an address of that family.
        ns.ip("route", "add", "default", "via", via4, "dev", dev, "onlink")
        ns.ip("-6", "route", "add", "default", "via", via6, "dev", dev, "onlink")
    topo.gateway.sysctl("net.ipv4.ip_forward", "1")
    topo.gateway.sysctl("net.ipv6.conf.all.forwarding", "1")
    # A redirecting gateway must not tell clients to go around it.
    topo.gateway.sysctl("net.ipv4.conf.all.send_redirects", "0")
    return topo
