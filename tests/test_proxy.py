"""End to end: a real blocklist-proxy (mitmdump + addon) between real clients and real origins.

One proxy per module serves the read-only checks (regular mode, ``blocklist_intercept``
left at ``listed``, the embedded store synced from the sample feed by the real
``blocklist-sync``); tests that stop things start their own. Every upstream connection is
routed to local origins by ``testlab/loopback_addon.py``; each origin counts the TCP
connections it accepted, which is how "the listed origin saw no connection" is checked.
"""

from __future__ import annotations

import http.client
import os
import pathlib
import re
from collections.abc import Iterator

import pytest

from testlab.harness import (
    Proxy,
    World,
    assert_blocked,
    assert_splash,
    running,
    synced_store,
    wait_for,
)
from testlab.origins import TestCA

LISTED = [
    "http://blocked.example.com/page.html",
    "http://blocked.example.com/gallery/photo/1.jpg",
    "http://whole-site.blocked.test/anything",
    "http://192.0.2.44/img/photo.jpg",
    "http://www.example.org/listed/page?id=42",
]

EVASIONS = [
    "http://BLOCKED.EXAMPLE.COM/page.html",
    "http://blocked.example.com./page.html",
    "http://blocked.example.com:80/page.html",
    "http://blocked.example.com/./page.html",
    "http://blocked.example.com/gallery/../page.html",
    "http://blocked.example.com//page.html",
    "http://blocked.example.com/%70age.html",
    "http://blocked.example.com/%2570age.html",
    "http://blocked.example.com/page.html?utm_source=x",
    "http://blocked.example.com/page.html#frag",
    "http://www.blocked.example.com/page.html",
    "http://3221226028/img/photo.jpg",
    "http://0xC0.0.2.44/img/photo.jpg",
    "http://0300.0.02.054/img/photo.jpg",
    "http://sub.whole-site.blocked.test/",
    "http://redirect.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html",
    "http://redirect.example.net/go?to=blocked.example.com/page.html",
    "http://archive.example.net/web/2020/http://blocked.example.com/page.html",
]

UNLISTED = [
    "http://blocked.example.com/other.html",
    "http://blocked.example.com/page.html2",
    "http://blocked.example.com/",
    "http://blocked.example.com/galleryx/",
    "http://example.com/page.html",
    "http://unlisted.example.org/page.html",
    "http://www.example.org/listed/page?id=43",
    "http://192.0.2.45/img/photo.jpg",
]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return synced_store(tmp_path_factory.mktemp("proxy-store"))


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    store_url: str,
    world: World,
    confdir: pathlib.Path,
    ca: TestCA,
) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("proxy")
    with running(Proxy(workdir, store=store_url, routes=world.routes, confdir=confdir, ca=ca)) as p:
        yield p


# -- HTTP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", LISTED + EVASIONS)
def test_listed_urls_get_the_splash_and_no_origin_sees_a_connection(
    proxy: Proxy, world: World, url: str
) -> None:
    assert_blocked(proxy, world, url)


@pytest.mark.parametrize(
    "url", ["http://%62locked.example.com/page.html", "http://blocked.example.com:99999/page.html"]
)
def test_requests_mitmproxy_refuses_itself_reach_no_origin(
    proxy: Proxy, world: World, url: str
) -> None:
    """mitmproxy answers 400 to an escaped host or a bad port before any hook runs."""
    before = world.connections()
    assert proxy.get(url).status == 400
    assert world.connections() == before


@pytest.mark.parametrize("url", UNLISTED)
def test_unlisted_urls_are_served_unchanged(proxy: Proxy, world: World, url: str) -> None:
    response = proxy.get(url)
    assert response.status == 200, response.text
    path = url.split("/", 3)[3]
    assert response.text.startswith("origin ")
    assert response.text.endswith(f"GET /{path} (0 bytes)")


def test_the_listed_origin_is_reachable_for_unlisted_pages(proxy: Proxy, world: World) -> None:
    """The connection counter works: the same host's unlisted page does reach it."""
    before = world.listed_http.connections
    assert proxy.get("http://blocked.example.com/other.html").status == 200
    assert world.listed_http.connections > before


def test_images_and_api_calls_get_a_tiny_body(proxy: Proxy) -> None:
    image = proxy.get("http://blocked.example.com/page.html", headers={"Sec-Fetch-Dest": "image"})
    assert_splash(image, page=False)
    api = proxy.get("http://blocked.example.com/page.html", headers={"Accept": "application/json"})
    assert_splash(api, page=False)


def test_a_blocked_upload_never_reaches_the_origin(proxy: Proxy, world: World) -> None:
    before = world.connections()
    body = b"x" * 200_000
    response = proxy.raw(
        b"POST http://blocked.example.com/page.html HTTP/1.1\r\n"
        b"Host: blocked.example.com\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body)
        + body
    )
    assert response.startswith(b"HTTP/1.1 451 ")
    assert world.connections() == before


def test_the_splash_page_never_reflects_markup(proxy: Proxy) -> None:
    markup = "<script>alert(1)</script>"
    for url in [
        'http://blocked.example.com/page.html?q="><script>alert(1)</script>',
        "http://blocked.example.com/page.html?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "http://blocked.example.com/page.html?q=</title><img/src=x/onerror=alert(1)>",
        "http://blocked.example.com/page.html?q='onmouseover='alert(1)",
    ]:
        response = proxy.get(url, headers={"Accept": "text/html"})
        assert response.status == 451
        assert markup not in response.text
        assert "<img/src=x" not in response.text
        assert "'onmouseover='" not in response.text


def test_each_block_is_one_json_line_without_the_url(proxy: Proxy) -> None:
    response = proxy.get("http://blocked.example.com/page.html?id=secret-marker")
    reference = re.search(r"Reference: ([0-9a-f]+)", response.text)
    assert reference is not None
    lines = wait_for(
        lambda: [b for b in proxy.blocks() if b.get("reference") == reference.group(1)],
        10,
        "the block log line",
    )
    (line,) = lines  # type: ignore[misc]
    assert line["list"] == "sample"
    assert line["action"] == "splash"
    assert line["where"] == "request"
    assert line["client"] == "127.0.0.0/24"
    assert line["entry"]
    assert "url" not in line
    assert "secret-marker" not in proxy.blocks_path.read_text()
    assert "blocked.example.com" not in proxy.blocks_path.read_text()


@pytest.mark.parametrize(
    ("log_client", "log_url", "client", "url"),
    [
        ("full", "false", "127.0.0.1", None),
        ("truncated", "true", "127.0.0.0/24", "http://blocked.example.com/page.html?id=7"),
        ("omit", "false", None, None),
    ],
)
def test_block_lines_name_the_client_and_url_as_configured(
    make_proxy, tmp_path: pathlib.Path, log_client, log_url, client, url
) -> None:
    options = {"blocklist_log_client": log_client, "blocklist_log_url": log_url}
    with running(make_proxy(synced_store(tmp_path), options=options)) as proxy:
        assert proxy.get("http://blocked.example.com/page.html?id=7").status == 451
        (line,) = proxy.blocks()
    assert line.get("client") == client
    assert line.get("url") == url
    assert ("blocked.example.com" in proxy.blocks_path.read_text()) == (url is not None)


def test_malformed_requests_do_not_hurt_the_proxy(proxy: Proxy) -> None:
    errors = proxy.metric("blocklist_lookup_errors_total")
    for garbage in [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://blocked.example.com/\xff\xfe%%%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://%zz%00/ HTTP/1.1\r\nHost: %zz\r\n\r\n",
        b"GET http://" + b"a." * 5000 + b"example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://blocked.example.com/page.html HTTP/1.1\r\nHost: \xff\r\n\r\n",
        b"CONNECT :0 HTTP/1.1\r\n\r\n",
    ]:
        proxy.raw(garbage, timeout=2)
    assert proxy.process is not None and proxy.process.poll() is None
    assert proxy.get("http://blocked.example.com/page.html").status == 451
    assert proxy.get("http://unlisted.example.org/").status == 200
    assert proxy.metric("blocklist_lookup_errors_total") == errors  # garbage is no lookup error


# -- HTTPS -----------------------------------------------------------------------------------


def test_https_to_a_listed_page_gets_the_splash(proxy: Proxy, world: World, ca: TestCA) -> None:
    before = world.connections()
    response, seen = proxy.https_get(
        "blocked.example.com", "/page.html", headers={"Accept": "text/html"}
    )
    assert_splash(response, page=True)
    assert seen != ca.origin_der  # decrypted: mitmproxy's certificate
    assert world.connections() == before


def test_https_to_a_whole_listed_host_gets_the_splash(proxy: Proxy, world: World) -> None:
    before = world.connections()
    response, _ = proxy.https_get("sub.whole-site.blocked.test", "/x.jpg")
    assert_splash(response, page=False)
    assert world.connections() == before


def test_https_to_an_unlisted_host_is_not_decrypted(proxy: Proxy, world: World, ca: TestCA) -> None:
    before = world.open_tls.connections
    response, seen = proxy.https_get("unlisted.example.org", "/hello", trust_mitm=False)
    assert response.status == 200
    assert response.text == "origin open-tls: GET /hello (0 bytes)"
    assert seen == ca.origin_der  # the origin's own certificate: passed through untouched
    assert world.open_tls.connections == before + 1


def test_https_unlisted_page_on_a_listed_host_is_fetched(
    proxy: Proxy, world: World, ca: TestCA
) -> None:
    response, seen = proxy.https_get("blocked.example.com", "/other.html")
    assert response.status == 200
    assert response.text == "origin listed-tls: GET /other.html (0 bytes)"
    assert seen != ca.origin_der


# -- health and metrics ------------------------------------------------------------------------


def test_health_and_metrics(proxy: Proxy) -> None:
    status, doc = proxy.health()
    assert status == 200
    assert doc["status"] == "ok"
    assert doc["entries"] == 5
    assert doc["source"] == "store"
    blocks = proxy.metric_series("blocklist_blocks_total", list="sample", where="request")
    lookups = proxy.metric("blocklist_lookups_total")
    proxy.get("http://blocked.example.com/page.html")
    metrics = proxy.metrics()
    assert re.search(r"(?m)^blocklist_list_entries 5(\.0)?$", metrics)
    assert (
        proxy.metric_series("blocklist_blocks_total", list="sample", where="request") == blocks + 1
    )
    assert proxy.metric("blocklist_lookups_total") == lookups + 1


def vm_rss(pid: int) -> int:
    """The resident memory of ``pid`` in bytes, as the kernel says it (VmRSS, in kB)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_process_metrics_are_the_proxys_own(proxy: Proxy) -> None:
    """process_resident_memory_bytes is the proxy process's RSS: between (within 10%) what
    the kernel says just before and just after the scrape, not some other process's."""
    assert proxy.process is not None
    pid = proxy.process.pid
    assert b"/blocklist-proxy\0" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    # Its start time names the process: ticks after boot in /proc/<pid>/stat, plus boot time.
    ticks = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    [boot] = [
        int(line.split()[1])
        for line in pathlib.Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    ]
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    assert proxy.metric("process_start_time_seconds") == pytest.approx(started, abs=0.02)
    before = vm_rss(pid)
    reported = proxy.metric("process_resident_memory_bytes")
    after = vm_rss(pid)
    low, high = min(before, after), max(before, after)
    assert low * 0.9 <= reported <= high * 1.1, (before, reported, after)


def test_metrics_speak_openmetrics_when_asked(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.status_port, timeout=5)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.getheader("Content-Type").startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "# TYPE blocklist_lookups counter" in body  # OpenMetrics names the family
    assert re.search(r"(?m)^blocklist_lookups_total [0-9]", body)
    assert proxy.metrics().startswith("# HELP")  # without asking: Prometheus' text format


def well_formed(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Parse a raw HTTP/1.1 response strictly: one status line, "name: value" headers
    without control characters, a body exactly as long as Content-Length, valid UTF-8."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, raw[:200]
    status_line, *lines = head.split(b"\r\n")
    version, status, _ = status_line.split(b" ", 2)
    assert version == b"HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon and name.strip() == name and re.fullmatch(rb"[!-~]+", name), line
        assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value), line
        headers[name.decode().lower()] = value.strip().decode("latin-1")
    assert int(headers["content-length"]) == len(body)
    body.decode("utf-8")
    return int(status), headers, body


@pytest.mark.parametrize(
    "target",
    [
        b"http://blocked.example.com/page.html?q=%0d%0aSet-Cookie:%20pwned=1",
        b"http://blocked.example.com/page.html?q=%0aLocation:%20http://evil.invalid/",
        b"http://blocked.example.com/page.html?q=\xff\xfe%ff<script>alert(1)</script>",
        b"http://blocked.example.com/page.html?q=" + b"A" * 60_000 + b"<b>",
        b"http://blocked.example.com/page.html/%00%01%1b[31m\xc3\x28",
        b"http://redirect.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html%3F%3Cscript%3E",
    ],
)
def test_the_splash_is_well_formed_whatever_the_request(proxy: Proxy, target: bytes) -> None:
    raw = proxy.raw(
        b"GET " + target + b" HTTP/1.1\r\nHost: blocked.example.com\r\nAccept: text/html\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, headers, body = well_formed(raw)
    # Raw bytes >= 0x80 in the request line: mitmproxy itself answers 400 (escaped too).
    assert status == (400 if re.search(rb"[\x80-\xff]", target) else 451)
    assert "set-cookie" not in headers and "location" not in headers
    assert headers["content-type"].startswith("text/html")
    text = body.decode()
    assert "<script>" not in text and "<b>" not in text and "\x1b" not in text
    assert "pwned" not in "".join(headers.values())
    assert len(body) < 8000  # the URL shown is cut short, not reflected whole
