"""The status page at the status port's ``/`` (issue 24, item 3): what an operator without
Prometheus looks at. Fetched from a live proxy: the values it shows are the proxy's own
(checked against /healthz and /metrics), it leaks no list content, no URL and no client
address, and a version's free-text source carrying markup is shown escaped."""

from __future__ import annotations

import asyncio
import html
import http.client
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable

import pytest
from conftest import build_snapshot

from blocklist_addon.lists.store import open_store
from testlab.harness import SAMPLE_FEED, Proxy, synced_store

LISTED = "http://blocked.example.com/page.html"
UNLISTED = "http://unlisted.example.org/"


def fetch_page(proxy: Proxy) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read().decode()
    finally:
        conn.close()


def test_status_page_shows_the_proxy_state(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Version, entries, feeds, store and the last hour's counts are the proxy's own; no
    list entry, store path or client address is on the page."""
    store = synced_store(tmp_path)
    proxy = make_proxy(store).start()
    for _ in range(3):
        assert proxy.get(LISTED).status == 451
    for _ in range(2):
        assert proxy.get(UNLISTED).status == 200

    status, headers, body = fetch_page(proxy)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"

    doc = proxy.health()[1]
    blocks = proxy.metric("blocklist_blocks_total")
    checks = proxy.metric("blocklist_lookups_total")
    assert blocks == 3 and checks >= 5
    assert f"<th>version</th><td>{doc['version']}</td>" in body
    assert f"<th>entries</th><td>{doc['entries']:,}</td>" in body
    assert "<th>built from</th><td>feeds: sample</td>" in body
    assert "<th>kind</th><td>file</td>" in body and "<th>state</th><td>up</td>" in body
    assert f"<th>blocked</th><td>{blocks:,.0f}</td>" in body
    assert f"<th>checked</th><td>{checks:,.0f}</td>" in body
    assert f"<title>{blocks:.0f} blocked of {checks:.0f} checked</title>" in body
    assert "<script" not in body.lower()

    # Nothing from the list, the store's location or the clients.
    entries = [
        line.split("://")[-1].split("/")[0]
        for line in SAMPLE_FEED.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for secret in [*entries, "page.html", "gallery", str(tmp_path), "127.0.0.1", "file://"]:
        assert secret not in body, secret


def test_markup_in_a_feed_name_is_escaped(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """A version's source is free text from whoever published it: markup in a feed name is
    shown as text, never as markup."""
    evil = "feeds: <img src=x onerror=alert(1)>, \"quoted\" & 'single', </td></table><script>"
    store_url = (tmp_path / "store").as_uri()

    async def publish() -> None:
        store = open_store(store_url)
        snapshot = build_snapshot("escaped")
        try:
            await store.publish(snapshot.data, **snapshot.publish_args(source=evil))
        finally:
            await store.close()

    asyncio.run(publish())
    proxy = make_proxy(store_url).start()
    status, _, body = fetch_page(proxy)
    assert status == 200
    assert html.escape(evil) in body
    for raw in ("<img", "onerror=alert(1)>", "<script>", "</td></table><script"):
        assert raw not in body, raw


def test_status_page_in_chromium(make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path) -> None:
    """The page as an operator's browser shows it: rendered by headless Chromium with no
    console message at all (a CSP violation, a failed load or a script error would be one),
    and a screenshot (kept in ``$BLOCKLIST_SCREENSHOTS`` when set, as the splash page's)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it as root on Debian)")
    proxy = make_proxy(synced_store(tmp_path)).start()
    for _ in range(3):
        assert proxy.get(LISTED).status == 451
        assert proxy.get(UNLISTED).status == 200
    url = f"http://127.0.0.1:{proxy.status_port}/"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
    ]  # fmt: skip
    done = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<h1>blocklist-proxy</h1>" in done.stdout and "<svg" in done.stdout
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "status-page.png"
    done = subprocess.run(
        [*command, f"--screenshot={shot}", "--window-size=900,1100", url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if directory := os.environ.get("BLOCKLIST_SCREENSHOTS"):
        shutil.copy(shot, pathlib.Path(directory) / shot.name)


def test_unchecked_uploads_by_reason() -> None:
    """Uploads the image guard could not check are counted by reason on the page (since the
    proxy started), the action beside each; none is 'none'."""
    from blocklist_addon.lists.active import ActiveList
    from blocklist_addon.ops.metrics import Metrics
    from blocklist_addon.ops.status import _unchecked, page

    metrics = Metrics()
    lists = ActiveList(metrics)
    assert "<th>none</th>" in page(lists, None, "", [], _unchecked(metrics))
    for _ in range(2):
        metrics.inc("blocklist_images_unchecked_total", reason="truncated", action="pass")
    metrics.inc("blocklist_images_unchecked_total", reason="decoder-crashed", action="refuse")
    body = page(lists, None, "", [], _unchecked(metrics))
    assert "<th>truncated (pass)</th><td>2</td>" in body
    assert "<th>decoder-crashed (refuse)</th><td>1</td>" in body
