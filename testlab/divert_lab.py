"""A two-stage gateway in network namespaces, for the end-to-end tests and bench/gateway.py.

``Site`` puts together what issue 12's tests exercise: the ``gateway_topology`` (client,
gateway, server), the shipped ``deploy/nftables-divert.nft`` loaded on the gateway, origin
servers on the server's addresses (each counting its connections and recording the peer
address of each request: the client's when it came directly, the gateway's when the proxy
fetched it), and clients that speak from inside the client namespace. The proxy itself is
a ``harness.Proxy`` started in the gateway namespace by the caller.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import pathlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from blocklist_addon.lists.store import open_store
from divert.dataset import DiversionSet
from testlab.harness import VENV_BIN, Proxy, Response, feed_with, send, sync
from testlab.netns import Lab, Namespace, Topology, gateway_topology
from testlab.origins import Origin, Origins, TestCA

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIVERT_NFT = ROOT / "deploy" / "nftables-divert.nft"
NOTRACK_NFT = ROOT / "deploy" / "nftables-divert-notrack.nft"
#: The transparent proxy's port in the shipped table.
PROXY_PORT = 8081
TABLE = "blocklist"


def load_table(gateway: Namespace, subscribers: str = Topology.SUBSCRIBERS) -> None:
    """The shipped table, loaded the way the operator guide says."""
    gateway.run("nft", "-D", f"SUBSCRIBERS={subscribers}", "-f", str(DIVERT_NFT))


def load_notrack(
    gateway: Namespace,
    own4: Iterable[str],
    own6: Iterable[str],
    subscribers: str = Topology.SUBSCRIBERS,
) -> None:
    """The optional notrack chain, loaded after the table as its header says; ``own4`` and
    ``own6`` are the gateway's own addresses."""
    defines = [f"SUBSCRIBERS={subscribers}"]
    defines += [f"OWN4={{ {', '.join(own4)} }}", f"OWN6={{ {', '.join(own6)} }}"]
    gateway.run("nft", *(x for d in defines for x in ("-D", d)), "-f", str(NOTRACK_NFT))


def tracked(ns: Namespace, address: str) -> list[str]:
    """The connection-tracking entries in ``ns`` that involve ``address``."""
    written = f"={ipaddress.ip_address(address).exploded} "
    return [e for e in ns.run("cat", "/proc/net/nf_conntrack").splitlines() if written in e]


def start_proxy(
    ns: Namespace,
    ca: TestCA,
    workdir: pathlib.Path,
    store: str,
    confdir: pathlib.Path,
    **options: str,
) -> Proxy:
    """The transparent proxy in namespace ``ns``, on every address and PROXY_PORT, as the
    operator guide runs it."""
    proxy = Proxy(
        workdir,
        store=store,
        routes=None,
        confdir=confdir,
        ca=ca,
        mode="transparent",
        netns=ns,
        options={"listen_host": "", **options},
    )
    proxy.port = PROXY_PORT
    return proxy.start()


def start_run(
    ns: Namespace,
    config: pathlib.Path,
    status_file: pathlib.Path,
    log_path: pathlib.Path,
    *options: str,
) -> subprocess.Popen[bytes]:
    """``blocklist-divert run`` in namespace ``ns`` (``options``: more of its options), its
    output in ``log_path``; the lab kills it by PID if the test does not stop it. Its lock
    and its local copy of the set go beside the status file (where systemd's
    $RUNTIME_DIRECTORY and $STATE_DIRECTORY would put them), not in the machine's /run and
    /var/lib."""
    command = [str(VENV_BIN / "blocklist-divert"), "--config", str(config), "run"]
    env = {
        **os.environ,
        "RUNTIME_DIRECTORY": str(status_file.parent),
        "STATE_DIRECTORY": str(status_file.parent),
    }
    with open(log_path, "wb") as log:
        return ns.popen(
            [*command, "--status-file", str(status_file), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def divert_key(directory: pathlib.Path) -> pathlib.Path:
    """A key made by ``blocklist-divert keygen`` (the sync seals the hostnames with it)."""
    key = directory / "divert.key"
    done = subprocess.run(
        [str(VENV_BIN / "blocklist-divert"), "keygen", "--key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return key


def pages_feed(directory: pathlib.Path, *hosts: str) -> pathlib.Path:
    """A text feed listing one page on each of ``hosts`` (what a sync gives ``resolve``)."""
    path = directory / "feed.txt"
    path.write_text("".join(f"http://{host}/page.html\n" for host in hosts))
    return path


def listed_store(directory: pathlib.Path, *entries: str) -> str:
    """A file store holding the sample feed plus ``entries`` (e.g. an IP-literal page)."""
    store = (directory / "store").as_uri()
    sync(store, feed_with(directory, *entries), data_dir=directory / "data")
    return store


async def publish(store: str, dset: DiversionSet) -> None:
    """``dset`` as the store's active diversion set (what ``resolve`` publishes)."""
    async with open_store(store, namespace="divert") as divert:
        await divert.publish(
            dset.to_bytes(), checksum=dset.checksum, entries=len(dset), source="test"
        )


def set_elements(gateway: Namespace, addresses: Iterable[str]) -> None:
    """Replace both sets by hand, in one transaction (what ``blocklist-divert apply`` does)."""
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    script = [f"flush set inet {TABLE} divert4", f"flush set inet {TABLE} divert6"]
    if v4:
        script.append(f"add element inet {TABLE} divert4 {{ {', '.join(v4)} }}")
    if v6:
        script.append(f"add element inet {TABLE} divert6 {{ {', '.join(v6)} }}")
    gateway.nft("\n".join(script) + "\n")


def set_contents(gateway: Namespace, name: str) -> list[str]:
    """The addresses in one of the table's sets (adjacent ones, which nft lists merged into
    a prefix or a range, expanded), in numeric order."""
    listing = json.loads(gateway.run("nft", "-j", "list", "set", "inet", TABLE, name))
    (found,) = [item["set"] for item in listing["nftables"] if "set" in item]
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for elem in found.get("elem", []):
        if isinstance(elem, str):
            out.append(ipaddress.ip_address(elem))
        elif "prefix" in elem:
            net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
            out += list(net) if net.num_addresses > 1 else [net.network_address]
        else:
            first, last = (int(ipaddress.ip_address(a)) for a in elem["range"])
            out += [ipaddress.ip_address(n) for n in range(first, last + 1)]
    return [str(a) for a in sorted(out)]


class UdpEcho:
    """A UDP server bound to one address (a wildcard socket would answer from the wrong
    source), echoing each datagram; counts what it received."""

    def __init__(self, ns: Namespace, address: str, port: int) -> None:
        self.sock = ns.listen(address, port, kind=socket.SOCK_DGRAM)
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data, peer = self.sock.recvfrom(2048)
                if peer is None:  # shut down by close()
                    return
                self.received += 1
                self.sock.sendto(data, peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


@dataclass(eq=False)
class Site:
    """The topology, the table, and origins on each server address (ports 80 and 443)."""

    lab: Lab
    topo: Topology
    ca: TestCA
    origins: Origins
    http: dict[str, Origin] = field(default_factory=dict)  # by server address
    https: dict[str, Origin] = field(default_factory=dict)
    udp: dict[str, UdpEcho] = field(default_factory=dict)

    @classmethod
    def build(cls, lab: Lab, ca: TestCA, servers: Iterable[str]) -> Site:
        servers = list(servers)
        site = cls(lab, gateway_topology(lab, servers), ca, Origins(ca))
        try:
            load_table(site.topo.gateway)
            for address in servers:
                site.serve(address)
        except BaseException:
            site.close()
            raise
        return site

    def serve(self, address: str) -> None:
        """Origins (HTTP on 80, HTTPS on 443, UDP echo on 443) on one server address."""
        server = self.topo.server
        self.http[address] = self.origins.start(f"http {address}", sock=server.listen(address, 80))
        self.https[address] = self.origins.start(
            f"https {address}", tls=True, sock=server.listen(address, 443)
        )
        self.udp[address] = UdpEcho(server, address, 443)

    def close(self) -> None:
        for echo in self.udp.values():
            echo.close()
        self.origins.close()

    # -- clients, speaking from the client namespace --------------------------------------

    @property
    def client(self) -> Namespace:
        return self.topo.client

    def get(
        self, address: str, host: str, path: str, *, headers: dict[str, str] | None = None
    ) -> Response:
        """GET http://host/path sent to ``address``, as a browser behind the gateway does."""
        conn = http.client.HTTPConnection(address, 80, timeout=15)
        try:
            with self.client.entered():
                conn.connect()
            return send(conn, "GET", path, host, headers)
        finally:
            conn.close()

    def client_context(self, *extra_cas: pathlib.Path) -> ssl.SSLContext:
        """Trusts the test CA (the origins' certificates) and nothing of the proxy's."""
        context = ssl.create_default_context(cafile=str(self.ca.ca_pem))
        for ca in extra_cas:
            context.load_verify_locations(cafile=str(ca))
        return context

    def https_get(
        self,
        address: str,
        sni: str | None,
        path: str,
        *,
        context: ssl.SSLContext | None = None,
        host: str | None = None,
    ) -> tuple[Response, bytes]:
        """GET https://sni/path sent to ``address``; returns the response and the DER
        certificate the client saw. Raises (SSLError, ConnectionError) when refused."""
        context = context or self.client_context()
        if sni is None:
            context.check_hostname = False
        raw = self.client.connect(address, 443, timeout=15)
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            seen = tls.getpeercert(binary_form=True) or b""
            request = f"GET {path} HTTP/1.1\r\nHost: {host or sni or address}\r\n"
            tls.sendall(request.encode() + b"Connection: close\r\n\r\n")
            response = http.client.HTTPResponse(tls)
            response.begin()
            return Response(response.status, response.headers, response.read()), seen

    def quic_probe(self, address: str) -> bytes:
        """One UDP datagram to ``address``:443; the echo, or ConnectionRefusedError when the
        gateway rejects it (TimeoutError when it vanished)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with self.client.entered():
            sock = socket.socket(family, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(5)
            sock.connect((address, 443))
            sock.send(b"\xc0quic-initial")
            return sock.recv(2048)
