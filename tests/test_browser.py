"""A real browser through the proxy: headless Chromium (Debian's package, installed by
``make test``) opens listed pages over HTTP and HTTPS and an unlisted page, and the rendered
page is what the user would read. Screenshots are saved (``$BLOCKLIST_SCREENSHOTS`` names a
directory to keep them in; the README's picture comes from there).

Chromium is kept off the network: its background services are switched off, QUIC too, and
everything it asks for goes to the proxy, which routes every host to the local origins.
Trusting the proxy's CA for HTTPS is done the way a managed device would trust a school's
CA, short of installing it system-wide: ``--ignore-certificate-errors-spki-list`` with the
CA's key hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from testlab.harness import ROOT, Proxy, World

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make test installs it as root on Debian)"
)
BROWSER_TIMEOUT = 90.0
SPLASH_TEXT = [
    "Access denied",
    "denied by your access provider",
    "indecent images of children",
    "What was blocked",
    "blocked in error",
    "Confidential help",
]


@pytest.fixture(scope="module")
def proxy(proxy_with_entries: Callable[..., Proxy]) -> Proxy:
    return proxy_with_entries("browser")


def spki_hash(pem: pathlib.Path) -> str:
    """What --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the CA's key."""
    key = x509.load_pem_x509_certificate(pem.read_bytes()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium(
    url: str, profile: pathlib.Path, *flags: str, screenshot: pathlib.Path | None = None
) -> str:
    """Load ``url``; return the rendered DOM, or take a screenshot."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in CI; the sandbox needs a user namespace
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *flags,
    ]
    command += (
        [f"--screenshot={screenshot}", "--window-size=900,900"] if screenshot else ["--dump-dom"]
    )
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=BROWSER_TIMEOUT
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def listed_connections(world: World) -> int:
    """Connections the listed origins accepted (Chromium's own background requests, routed
    to the open origins, do not count)."""
    return world.listed_http.connections + world.listed_tls.connections


def keep(screenshot: pathlib.Path) -> None:
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
    if directory := os.environ.get("BLOCKLIST_SCREENSHOTS"):
        shutil.copy(screenshot, pathlib.Path(directory) / screenshot.name)


def test_a_listed_page_over_http_shows_the_splash_page(
    proxy: Proxy, world: World, tmp_path: pathlib.Path
) -> None:
    before = listed_connections(world)
    url = "http://blocked.example.com/page.html"
    via = f"--proxy-server=http://127.0.0.1:{proxy.port}"
    dom = chromium(url, tmp_path / "profile", via)
    for text in SPLASH_TEXT:
        assert text in dom
    assert "http://blocked.example.com/page.html" in dom  # what was blocked, escaped
    chromium(url, tmp_path / "profile", via, screenshot=tmp_path / "splash-http.png")
    keep(tmp_path / "splash-http.png")
    assert listed_connections(world) == before


def test_a_listed_page_over_https_shows_the_splash_page(
    proxy: Proxy, world: World, tmp_path: pathlib.Path
) -> None:
    before = listed_connections(world)
    url = "https://blocked.example.com/gallery/photo/1.html"
    flags = [
        f"--proxy-server=http://127.0.0.1:{proxy.port}",
        f"--ignore-certificate-errors-spki-list={spki_hash(proxy.mitm_ca)}",
    ]
    dom = chromium(url, tmp_path / "profile", *flags)
    for text in SPLASH_TEXT:
        assert text in dom
    chromium(url, tmp_path / "profile", *flags, screenshot=tmp_path / "splash-https.png")
    keep(tmp_path / "splash-https.png")
    assert listed_connections(world) == before


def test_an_unlisted_page_is_shown_as_the_origin_serves_it(
    proxy: Proxy, world: World, tmp_path: pathlib.Path
) -> None:
    before = world.open_http.connections
    via = f"--proxy-server=http://127.0.0.1:{proxy.port}"
    dom = chromium("http://unlisted.example.org/hello.html", tmp_path / "profile", via)
    assert "origin open-http: GET /hello.html" in dom
    assert "Access denied" not in dom
    assert world.open_http.connections > before


def test_the_shipped_pac_file_sends_the_browser_through_the_proxy(
    proxy: Proxy, world: World, tmp_path: pathlib.Path
) -> None:
    """deploy/pac/proxy.pac with only its PROXIES line pointed at the test proxy: listed
    pages get the splash page through it, and a loopback address goes direct."""
    pac = (ROOT / "deploy" / "pac" / "proxy.pac").read_text()
    shipped = 'var PROXIES = ["proxy.school.example:8081", "proxy.school.example:8082"];'
    assert shipped in pac
    pac = pac.replace(shipped, f'var PROXIES = ["127.0.0.1:{proxy.port}"];')
    encoded = base64.b64encode(pac.encode()).decode()
    via = f"--proxy-pac-url=data:application/x-ns-proxy-autoconfig;base64,{encoded}"

    dom = chromium("http://blocked.example.com/page.html", tmp_path / "profile", via)
    assert "Access denied" in dom

    # Through the proxy this would fail: it routes no host on this port anywhere (a 502).
    port = world.open_http.port
    assert not {f"127.0.0.1:{port}", f"*:{port}", "*"} & proxy.routes.keys()
    before = world.open_http.connections
    direct = f"http://127.0.0.1:{world.open_http.port}/direct.html"
    dom = chromium(direct, tmp_path / "profile", via)
    assert "origin open-http: GET /direct.html" in dom
    assert world.open_http.connections > before
