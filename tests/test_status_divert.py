"""The status page of a proxy whose store holds a diversion set (issue 24: "for a diversion
gateway the set's size and the health state"). A live proxy on a file store; the set is
published in the store's "divert" namespace as ``blocklist-divert resolve`` publishes it. The
page shows the set's version and counts only (never an address or a host digest), follows a
new version, escapes the publisher's free text, and says where the gateway's own state is
(``blocklist-divert run`` has no listener), instead of inventing one."""

from __future__ import annotations

import asyncio
import html
import http.client
import pathlib
import shutil
import subprocess
from collections.abc import Callable

import pytest

from blocklist_addon.lists.store import open_store
from divert.dataset import DiversionSet
from testlab.harness import SAMPLE_FEED, Proxy, sync, synced_store

#: Documentation addresses (RFC 5737, RFC 3849) and made-up host digests.
FIRST = {
    "0123456789abcdef": ("192.0.2.10", "2001:db8::10"),
    "fedcba9876543210": ("198.51.100.7",),
}
SECOND = {**FIRST, "00112233aabbccdd": ("203.0.113.5", "203.0.113.6", "2001:db8::11")}
SOURCE = "resolve: <b>2</b> hosts & more"


def fetch_page(proxy: Proxy) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def publish(store_url: str, hosts: dict[str, tuple[str, ...]], outcome: str) -> None:
    """Publish a diversion set and record a resolution, as resolve does (divert.resolve)."""

    async def go() -> None:
        store = open_store(store_url, namespace="divert")
        try:
            dset = DiversionSet.build(hosts)
            await store.publish(
                dset.to_bytes(), checksum=dset.checksum, entries=len(dset), source=SOURCE
            )
            await store.set_state("last-run", {"at": dset.created_at, "status": outcome})
        finally:
            await store.close()

    asyncio.run(go())


def row(name: str, value: str) -> str:
    return f"<tr><th>{name}</th><td>{value}</td></tr>"


def test_status_page_shows_the_stores_diversion_set_by_counts(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """No section without a set; with one, its version and address counts by family, the
    next version's counts once published, the source escaped, and no address or digest."""
    store = synced_store(tmp_path)
    proxy = make_proxy(store).start()
    assert "Diversion set" not in fetch_page(proxy)  # a proxy that is not behind a gateway

    publish(store, FIRST, "published")
    body = fetch_page(proxy)
    assert "<h2>Diversion set</h2>" in body
    assert row("version", "1") in body
    assert row("IPv4 addresses", "2") in body and row("IPv6 addresses", "1") in body
    assert row("listed hosts resolved", "2") in body
    assert row("built by", html.escape(SOURCE)) in body and "<b>2</b>" not in body
    assert "blocklist-divert run on the gateway" in body  # where its state is, not a guess
    assert "ago: published</td>" in body

    publish(store, SECOND, "published")
    body = fetch_page(proxy)
    assert row("version", "2") in body
    assert row("IPv4 addresses", "4") in body and row("IPv6 addresses", "2") in body
    assert row("listed hosts resolved", "3") in body

    for secret in [*SECOND, *(a for addresses in SECOND.values() for a in addresses)]:
        assert secret not in body, secret
    assert "192.0.2." not in body and "2001:db8" not in body


def test_status_page_says_when_the_store_stops_answering(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """A Redis store holding a set, then killed: the page still loads, within the bounded
    wait, and says the store did not answer instead of showing the last counts as current."""
    server = redis_factory()
    sync(server.url, SAMPLE_FEED, data_dir=tmp_path / "data")
    publish(server.url, FIRST, "published")
    proxy = make_proxy(server.url).start()
    assert row("IPv4 addresses", "2") in fetch_page(proxy)
    server.kill()
    body = fetch_page(proxy)
    assert "<h2>Diversion set</h2>" in body and row("state", "the store did not answer") in body
    assert row("IPv4 addresses", "2") not in body


def test_status_page_with_a_diversion_set_in_chromium(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """The added section keeps the page clean in a real browser: no console message."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it as root on Debian)")
    store = synced_store(tmp_path)
    publish(store, FIRST, "unchanged")
    proxy = make_proxy(store).start()
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--dump-dom", f"http://127.0.0.1:{proxy.status_port}/",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<h2>Diversion set</h2>" in done.stdout and "ago: unchanged" in done.stdout
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
