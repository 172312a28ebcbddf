"""Real processes and servers for the proxy's end-to-end tests, all on 127.0.0.1.

- ``TestCA`` and ``Origins`` (in ``testlab.origins``): the origins the proxy talks to.
- ``World``: the four origins the proxy tests use and the routes that point the sample
  feed's names at them.
- ``Proxy``: ``blocklist-proxy`` (mitmdump with the addon) as a subprocess, with
  ``testlab/loopback_addon.py`` routing every upstream connection to the origins (and
  ``testlab/fault_addon.py`` injecting failures, when a test asks for it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testlab.origins import Origin, Origins, TestCA

if TYPE_CHECKING:
    from testlab.netns import Namespace

LAB = pathlib.Path(__file__).resolve().parent
ROOT = LAB.parent
VENV_BIN = pathlib.Path(sys.executable).parent
SAMPLE_FEED = ROOT / "samples" / "sample-feed.txt"
START_TIMEOUT = 60.0


#: Ports this process has handed out: the kernel may give a port that was just released
#: to the next bind(0), so two calls in a row (a proxy's listen and status ports) could
#: return the same port and the second server fail with "address already in use".
_HANDED_OUT: set[int] = set()


#: The ports handed out lie below the kernel's ephemeral range (ip_local_port_range, whose
#: default starts at 32768), which bind(0) and every outgoing connection's source port take
#: from: a port found free there was at times taken, between the check and the server's
#: bind, as the source port of one of the suite's many connections ("Address already in
#: use", a Sentinel that never started). Each xdist worker takes its own slice of them.
PORTS_FROM = 10000


def _port_slice() -> range:
    """This process's ports: below the ephemeral range, its xdist worker's share of them."""
    try:
        low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports = range(PORTS_FROM, max(low, PORTS_FROM + 1000))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    share = len(ports) // max(count, 1)
    return ports[index * share : (index + 1) * share] if count > 1 else ports


def free_port() -> int:
    """A loopback port free now, never handed out before by this process, and outside the
    kernel's ephemeral range (``PORTS_FROM``), so that no connection takes it before the
    server it is for binds it."""
    ports = _port_slice()
    start = os.getpid() % len(ports)  # two processes on one slice start apart
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use now (another suite, a service)
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no loopback port left that this process has not handed out")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # poll interval; the condition is what synchronizes


# -- the proxy -------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def send(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    host: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request with ``target`` and the Host header exactly as given (http.client adds
    neither its own Host nor Accept-Encoding), and its whole response."""
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for key, value in {"Host": host, **(headers or {})}.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    return Response(response.status, response.headers, response.read())


class Proxy:
    """``blocklist-proxy`` in a subprocess, on free ports, with its own data directory.

    ``routes`` (for ``testlab/loopback_addon.py``) sends every upstream connection to the local
    origins; ``routes=None`` lets the proxy connect where it is asked to, for a proxy in a
    network namespace (``netns``) whose status port is then reached inside that namespace.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        store: str,
        routes: dict[str, int] | None,
        confdir: pathlib.Path,
        ca: TestCA,
        options: dict[str, str | None] | None = None,
        mode: str = "regular",
        plain: bool = False,
        env: dict[str, str] | None = None,
        netns: Namespace | None = None,
        faults: pathlib.Path | None = None,
    ) -> None:
        """``faults``: a JSON file of failures ``testlab/fault_addon.py`` injects; an option
        given as None is not set at all (mitmproxy's default)."""
        self.workdir = workdir
        self.netns = netns
        self.store = store
        self.routes = routes
        self.confdir = confdir
        self.ca = ca
        self.options = options or {}
        self.mode = mode
        self.plain = plain  # plain mitmdump -s addon.py instead of blocklist-proxy
        self.env = env or {}  # extra environment variables
        self.faults = faults
        self.port = free_port()
        self.status_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "proxy.log"
        self.blocks_path = workdir / "blocks.jsonl"
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def mitm_ca(self) -> pathlib.Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        options = {
            "blocklist_status_listen": f"127.0.0.1:{self.status_port}",
            "blocklist_lastgood": str(self.workdir / "lastgood.bin"),
            "blocklist_log_file": str(self.blocks_path),
            "confdir": str(self.confdir),
            "ssl_verify_upstream_trusted_ca": str(self.ca.ca_pem),
            **self.options,
        }
        options = {key: value for key, value in options.items() if value is not None}
        if self.routes is not None:
            options["loopback_map"] = json.dumps(self.routes)
        if self.plain:
            command = [str(VENV_BIN / "mitmdump"), "-s", str(ROOT / "blocklist_addon" / "addon.py")]
            options["blocklist_store"] = self.store
        else:
            command = [str(VENV_BIN / "blocklist-proxy"), "--store", self.store]
        command += ["--listen-port", str(self.port), "--mode", self.mode]
        if self.routes is not None:
            command += ["-s", str(LAB / "loopback_addon.py")]
        if self.faults is not None:
            command += ["-s", str(LAB / "fault_addon.py")]
            options["fault_file"] = str(self.faults)
        for key, value in options.items():
            command += ["--set", f"{key}={value}"]
        return self.netns.exec_prefix() + command if self.netns else command

    def start(self, *, wait: bool = True) -> Proxy:
        """Start the proxy (and with ``wait``, until it answers). A port another test process
        took between ``free_port`` and the proxy's bind is the harness's race, not the
        proxy's failure: the start is tried again on new ports, at most twice more."""
        env = {**os.environ, "BLOCKLIST_DATA_DIR": str(self.workdir / "data"), **self.env}
        for attempt in range(3):
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
                )
            if not wait:
                return self
            try:
                wait_for(self._ready, START_TIMEOUT, f"the proxy to start (log: {self.log_path})")
                return self
            except AssertionError:
                taken = b"address already in use" in self.log_path.read_bytes()[logged:]
                if not taken or attempt == 2 or self.netns is not None:
                    raise
                self.port, self.status_port = free_port(), free_port()
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the proxy exited with {self.process.returncode}:\n{self.log()}")
        try:
            status, _ = self.health()
        except OSError:
            return False
        return status in (200, 503) and self._accepts()

    def wait_listening(self) -> None:
        """Wait until the proxy port accepts connections (the list may still be loading)."""

        def listening() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the proxy exited:\n{self.log()}")
            return self._accepts()

        wait_for(listening, START_TIMEOUT, "the proxy to listen")

    def _accepts(self) -> bool:
        try:
            with self._inside():
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _inside(self) -> contextlib.AbstractContextManager[None]:
        """Sockets made in this block reach the proxy's 127.0.0.1."""
        return self.netns.entered() if self.netns else contextlib.nullcontext()

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def blocks(self) -> list[dict[str, object]]:
        if not self.blocks_path.exists():
            return []
        return [json.loads(line) for line in self.blocks_path.read_text().splitlines()]

    # -- status endpoint --------------------------------------------------------------------

    def _status(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=5)
        try:
            with self._inside():
                conn.connect()
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def health(self) -> tuple[int, dict[str, object]]:
        status, body = self._status("/healthz")
        return status, json.loads(body)

    def metrics(self) -> str:
        return self._status("/metrics")[1].decode()

    def metric(self, name: str) -> float:
        """The sum of every series of ``name`` (0 when absent)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def metric_series(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` carrying (at least) ``labels`` (0 when absent)."""
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                series = line.rsplit(" ", 1)[0]
                if all(label in series for label in wanted):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    # -- clients ------------------------------------------------------------------------------

    def get(self, url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
        """A plain-HTTP request through the proxy with ``url`` sent exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            host = url.split("/")[2] if "://" in url else "unknown.invalid"
            return send(conn, method, url, host, headers)
        finally:
            conn.close()

    def client_context(self, *, trust_mitm: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.ca_pem))
        if trust_mitm:
            context.load_verify_locations(cafile=str(self.mitm_ca))
        return context

    def https_get(
        self,
        host: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        trust_mitm: bool = True,
    ) -> tuple[Response, bytes]:
        """GET https://host/path through a CONNECT tunnel; returns the response and the DER
        certificate the client saw (the origin's own one when the proxy did not decrypt)."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=15, context=self.client_context(trust_mitm=trust_mitm)
        )
        conn.set_tunnel(host, 443)
        try:
            conn.request("GET", path, headers=headers or {})
            assert conn.sock is not None
            seen = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read()), seen
        finally:
            conn.close()

    def connect(self, host: str, port: int = 443) -> int:
        """Send a bare CONNECT and return the proxy's status code."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            return int(head.split(b" ", 2)[1]) if head else 0

    def raw(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send raw bytes, return whatever comes back until the proxy closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            received = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                while chunk := sock.recv(65536):
                    received += chunk
                    if b"\r\n\r\n" in received and len(received) > 65536:
                        break
            return received


def sync(
    store: str,
    feed: pathlib.Path,
    *,
    name: str = "sample",
    data_dir: pathlib.Path,
    env: dict[str, str] | None = None,
    fmt: str = "text",
) -> None:
    """Run the real ``blocklist-sync`` on a feed file (``env``: extra variables)."""
    command = [
        str(VENV_BIN / "blocklist-sync"),
        "--store",
        store,
        "--feed-url",
        feed.as_uri(),
        "--format",
        fmt,
        "--name",
        name,
        "--force",
    ]
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(data_dir), **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


class World:
    """Origins and the routes that point the sample feed's names at them."""

    def __init__(self, origins: Origins) -> None:
        self.origins = origins  # for a test's own extra sites
        self.listed_http = origins.start("listed-http")
        self.listed_tls = origins.start("listed-tls", tls=True)
        self.open_http = origins.start("open-http")
        self.open_tls = origins.start("open-tls", tls=True)
        self.routes = {
            "blocked.example.com:80": self.listed_http.port,
            "blocked.example.com:443": self.listed_tls.port,
            "whole-site.blocked.test:80": self.listed_http.port,
            "whole-site.blocked.test:443": self.listed_tls.port,
            "192.0.2.44:80": self.listed_http.port,
            "*:80": self.open_http.port,
            "*:443": self.open_tls.port,
        }

    @property
    def all(self) -> list[Origin]:
        return [self.listed_http, self.listed_tls, self.open_http, self.open_tls]

    def connections(self) -> int:
        return sum(o.connections for o in self.all)


def assert_splash(response: Response, *, page: bool) -> None:
    """The 451 contract: headers always; the HTML page or the tiny plain body."""
    assert response.status == 451, response.text
    assert response.headers["Link"].endswith('; rel="blocked-by"')
    assert response.headers["Cache-Control"] == "no-store"
    if page:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "Access denied" in response.text
    else:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert len(response.body) < 200


def assert_blocked(proxy: Proxy, world: World, url: str) -> None:
    """``url`` through ``proxy`` gets the splash page, and no origin sees a connection."""
    before = world.connections()
    assert_splash(proxy.get(url, headers={"Accept": "text/html"}), page=True)
    assert world.connections() == before


def feed_entries(path: pathlib.Path) -> list[str]:
    """The entries of a text feed file (no blank lines, no comments)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def synced_store(directory: pathlib.Path) -> str:
    """A file store in ``directory`` with the sample feed synced into it (by the real sync)."""
    store = (directory / "store").as_uri()
    sync(store, SAMPLE_FEED, data_dir=directory / "data")
    return store


def feed_with(directory: pathlib.Path, *extra: str) -> pathlib.Path:
    """A text feed file: the sample feed plus ``extra`` lines."""
    path = directory / "feed.txt"
    path.write_text(SAMPLE_FEED.read_text() + "".join(f"{line}\n" for line in extra))
    return path


@contextlib.contextmanager
def running(proxy: Proxy) -> Iterator[Proxy]:
    try:
        yield proxy.start()
    finally:
        proxy.stop()
