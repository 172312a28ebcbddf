"""The origins the proxy's end-to-end tests talk to, all on 127.0.0.1.

- ``TestCA``: a throwaway CA and one leaf certificate for the reserved test names and the
  loopback addresses, so the origins (and the TLS Redis of ``sentinel_lab``) speak real
  TLS and a client can tell the origin's certificate from mitmproxy's.
- ``Origins``: aiohttp origin servers in a background thread (the tests' clients are plain
  blocking ``http.client``), each counting the TCP connections it accepted, so a test can
  assert that a listed origin was never contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import pathlib
import socket
import ssl
import threading
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: Names the test origin's certificate covers.
TEST_NAMES = [
    "blocked.example.com",
    "*.blocked.example.com",
    "whole-site.blocked.test",
    "*.whole-site.blocked.test",
    "www.example.org",
    "unlisted.example.org",
    "*.example.net",
    "localhost",
]
#: Addresses it covers too: servers reached by address (Redis, named by Sentinel as an IP).
TEST_ADDRESSES = ["127.0.0.1", "::1"]


# -- certificates ------------------------------------------------------------------------


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: pathlib.Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blocklist-proxy test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test origin")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in TEST_NAMES]
                    + [x509.IPAddress(ipaddress.ip_address(a)) for a in TEST_ADDRESSES]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_pem = directory / "test-ca.pem"
        self.cert_pem = directory / "origin.pem"
        self.key_pem = directory / "origin.key"
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.origin_der = leaf.public_bytes(serialization.Encoding.DER)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_pem, self.key_pem)
        return context


# -- origins -------------------------------------------------------------------------------


@dataclass
class Origin:
    """One origin server: every request is answered with what it asked for."""

    name: str
    port: int = 0
    connections: int = 0  # TCP connections accepted, counted before any byte is read
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, host, path
    remotes: list[str] = field(default_factory=list)  # the peer address of each request


class Origins:
    """Origin servers on their own event loop in a background thread."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []
        self._runners: list[web.AppRunner] = []

    def start(
        self,
        name: str,
        *,
        tls: bool = False,
        app: web.Application | None = None,
        sock: socket.socket | None = None,
    ) -> Origin:
        """An origin that echoes each request, or serves ``app`` (a test's own site), on a
        port of 127.0.0.1 or on ``sock`` (a listening socket, e.g. in a network namespace)."""
        origin = Origin(name)
        future = asyncio.run_coroutine_threadsafe(self._start(origin, tls, app, sock), self.loop)
        future.result(timeout=10)
        return origin

    async def _start(
        self, origin: Origin, tls: bool, app: web.Application | None, sock: socket.socket | None
    ) -> None:
        async def handle(request: web.Request) -> web.Response:
            origin.requests.append((request.method, request.host, request.path_qs))
            origin.remotes.append(request.remote or "")
            body = await request.read()
            text = f"origin {origin.name}: {request.method} {request.path_qs} ({len(body)} bytes)"
            return web.Response(text=text, headers={"X-Origin": origin.name})

        if app is None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        assert runner.server is not None
        factory = runner.server

        def protocol() -> asyncio.Protocol:
            origin.connections += 1
            return factory()

        context = self.ca.server_context() if tls else None
        loop = asyncio.get_running_loop()
        if sock is None:
            server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=context)
        else:
            server = await loop.create_server(protocol, sock=sock, ssl=context)
        self._servers.append(server)
        origin.port = server.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for runner in self._runners:
                await runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
