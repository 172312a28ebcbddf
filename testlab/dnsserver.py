"""A small authoritative DNS server for tests (dnspython), changeable while it runs.

Per name it answers A and AAAA records, a CNAME (followed inside the answer, as an
authoritative server does for names it holds, unless ``chase=False``), NXDOMAIN, SERVFAIL,
or nothing at all (a timeout). Unknown names are NXDOMAIN. UDP and TCP, with truncation
(TC) when an answer does not fit the client's UDP size, so resolvers retry over TCP.

    with DNSServer() as dns:                       # 127.0.0.1, a free port
        dns.set("listed.example.com", a=["192.0.2.10"], aaaa=["2001:db8::10"])
        dns.set("www.example.net", cname="cdn.example.net")
        dns.set("gone.example.org", rcode="NXDOMAIN")
        dns.set("slow.example.org", silent=True)
        resolver = f"{dns.host}:{dns.port}"

``DNSServer(host=ADDR, port=53)`` binds any address; the sockets are made in ``start()``, in
the calling thread, so a test that calls it inside a network namespace (``setns`` on that
thread, e.g. ``netns.Namespace.entered()``) serves inside it. One thread serves both
sockets with ``selectors``; ``stop()`` closes them and joins it. ``queries`` counts the
questions per (name, type), for tests that check what a resolver asked.

Run as a program (``python testlab/dnsserver.py --listen 198.51.100.53:53 --zone zone.json``)
inside ``ip netns exec``, it serves a JSON zone ``{name: {"a": [...], "aaaa": [...],
"cname": ..., "rcode": ..., "silent": ...}}`` and re-reads it whenever the file changes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import pathlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DNSServer", "Record"]

#: CNAME chains longer than this are served as they are (a loop is served as a loop).
MAX_CHAIN = 8
UDP_DEFAULT = 512
BIND_ATTEMPTS = 20
RCVBUF = 8 * 1024 * 1024


@dataclass(frozen=True)
class Record:
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    cname: str | None = None
    rcode: str | None = None  # "NXDOMAIN", "SERVFAIL", "REFUSED"
    silent: bool = False
    chase: bool = True
    ttl: int = 60


def _key(name: str | dns.name.Name) -> str:
    return str(name).lower().rstrip(".")


@dataclass
class DNSServer:
    host: str = "127.0.0.1"
    port: int = 0
    records: dict[str, Record] = field(default_factory=dict)
    queries: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []

    # -- the zone ------------------------------------------------------------------------

    def set(
        self,
        name: str,
        *,
        a: Iterable[str] = (),
        aaaa: Iterable[str] = (),
        cname: str | None = None,
        rcode: str | None = None,
        silent: bool = False,
        chase: bool = True,
        ttl: int = 60,
    ) -> None:
        """Replace what ``name`` answers (takes effect for the next question)."""
        if rcode is not None:
            dns.rcode.from_text(rcode)  # a typo fails here, not as a wrong answer later
        record = Record(tuple(a), tuple(aaaa), cname, rcode, silent, chase, ttl)
        with self._lock:
            self.records[_key(name)] = record

    def remove(self, name: str) -> None:
        with self._lock:
            self.records.pop(_key(name), None)

    def replace(self, records: dict[str, Record]) -> None:
        with self._lock:
            self.records = {_key(n): r for n, r in records.items()}

    def asked(self, name: str, rdtype: str = "A") -> int:
        with self._lock:
            return self.queries[(_key(name), rdtype)]

    # -- serving -------------------------------------------------------------------------

    def start(self) -> Self:
        # Port 0: a UDP port whose TCP twin is free too (another test may hold that one).
        for attempt in range(BIND_ATTEMPTS):
            try:
                self._sockets = self._bind()
                break
            except OSError:
                if self.port or attempt == BIND_ATTEMPTS - 1:
                    raise
        self._thread = threading.Thread(target=self._serve, name="dnsserver", daemon=True)
        self._thread.start()
        return self

    def _bind(self) -> list[socket.socket]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        # Hundreds of questions may queue while this thread waits for a core: a default
        # receive buffer (about 200 KB of kernel accounting) would drop some.
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is not None:
                with contextlib.suppress(OSError):
                    udp.setsockopt(socket.SOL_SOCKET, option, RCVBUF)
                    break
        try:
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.host, port))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            raise
        self.port = port
        for s in (udp, tcp):
            s.setblocking(False)
        return [udp, tcp]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for s in self._sockets:
            s.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``HOST:PORT`` as a resolver setting (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _serve(self) -> None:
        udp, tcp = self._sockets
        with selectors.DefaultSelector() as selector:
            selector.register(udp, selectors.EVENT_READ)
            selector.register(tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if key.fileobj is udp:
                        self._udp(udp)
                    elif key.fileobj is tcp:
                        with contextlib.suppress(OSError):
                            conn, _ = tcp.accept()
                            threading.Thread(target=self._tcp, args=(conn,), daemon=True).start()

    def _udp(self, udp: socket.socket) -> None:
        for _ in range(64):  # bounded: then serve TCP too
            try:
                data, peer = udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            query = self._parse(data)
            if query is None:
                continue
            wire = self._answer(query, udp=True)
            if wire is not None:
                with contextlib.suppress(OSError):
                    udp.sendto(wire, peer)

    def _tcp(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with conn, contextlib.suppress(OSError, struct.error):
            while not self._stop.is_set():
                head = _recv_exactly(conn, 2)
                if head is None:
                    return
                data = _recv_exactly(conn, struct.unpack("!H", head)[0])
                query = None if data is None else self._parse(data)
                if query is None:
                    return
                wire = self._answer(query, udp=False)
                if wire is None:
                    return  # silent: the client times out
                conn.sendall(struct.pack("!H", len(wire)) + wire)

    def _chain(self, qname: dns.name.Name) -> list[tuple[dns.name.Name, Record | None]]:
        """The name's record, then each CNAME target's it chases into (caller holds the lock)."""
        chain: list[tuple[dns.name.Name, Record | None]] = []
        name, record = qname, self.records.get(_key(qname))
        for _ in range(MAX_CHAIN):
            chain.append((name, record))
            if record is None or record.cname is None or not record.chase:
                break
            name = dns.name.from_text(record.cname)
            record = self.records.get(_key(name))
            if record is None:
                break
        return chain

    @staticmethod
    def _parse(data: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        return query if len(query.question) == 1 else None

    def _answer(self, query: dns.message.Message, *, udp: bool) -> bytes | None:
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:  # the chain of records, read as one consistent zone
            self.queries[(_key(qname), dns.rdatatype.to_text(qtype))] += 1
            chain = self._chain(qname)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        first = chain[0][1]
        if first is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif first.silent:
            return None
        elif first.rcode:
            response.set_rcode(dns.rcode.from_text(first.rcode))
        else:
            for name, record in chain:
                if record is None or record.silent or record.rcode:
                    break
                if record.cname is not None:
                    target = [record.cname.rstrip(".") + "."]
                    response.answer.append(
                        dns.rrset.from_text_list(name, record.ttl, "IN", "CNAME", target)
                    )
                    continue
                values = {dns.rdatatype.A: record.a, dns.rdatatype.AAAA: record.aaaa}
                if values.get(qtype):
                    response.answer.append(
                        dns.rrset.from_text_list(name, record.ttl, "IN", qtype, values[qtype])
                    )
        limit = max(query.payload, UDP_DEFAULT) if udp and query.edns >= 0 else UDP_DEFAULT
        try:
            return response.to_wire(max_size=limit if udp else 65535)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _load_zone(path: pathlib.Path) -> dict[str, Record]:
    zone = json.loads(path.read_text())
    return {
        name: Record(
            a=tuple(spec.get("a", ())),
            aaaa=tuple(spec.get("aaaa", ())),
            cname=spec.get("cname"),
            rcode=spec.get("rcode"),
            silent=bool(spec.get("silent", False)),
            chase=bool(spec.get("chase", True)),
            ttl=int(spec.get("ttl", 60)),
        )
        for name, spec in zone.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A test DNS server serving a JSON zone.")
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT or [IPv6]:PORT")
    parser.add_argument("--zone", type=pathlib.Path, required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = DNSServer(host.strip("[]"), int(port))
    server.replace(_load_zone(args.zone))
    seen = args.zone.stat().st_mtime_ns
    with server:
        print(f"serving on {server.address}", flush=True)
        while True:  # until killed (SIGTERM)
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):
                mtime = args.zone.stat().st_mtime_ns
                if mtime != seen:
                    server.replace(_load_zone(args.zone))
                    seen = mtime


if __name__ == "__main__":
    main()
