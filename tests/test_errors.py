"""Every error path of the addon, driven through the live proxy by ``testlab/fault_addon.py``:
a lookup that raises (at the request, the CONNECT, the TLS hello, the server connection, in
a page and in a post), a splash page that cannot be rendered, a follower that fails and a
version that cannot be loaded mid-run. Each test shows what the client gets, that no listed
or unchecked origin was contacted, the metric, and a log line that never holds the URL.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from aiohttp import web

from testlab.harness import (
    SAMPLE_FEED,
    Proxy,
    World,
    feed_with,
    running,
    sync,
    synced_store,
    wait_for,
)
from testlab.images import draw, encode
from testlab.origins import Origins

LISTED = "http://blocked.example.com/page.html"


def faulty_proxy(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path, faults, **kwargs
) -> Proxy:
    return make_proxy(synced_store(tmp_path), faults=faults.path, **kwargs)


def errors(proxy: Proxy, where: str, action: str) -> float:
    return proxy.metric_series("blocklist_lookup_errors_total", where=where, action=action)


def assert_log_line(proxy: Proxy, where: str, action: str, *secrets: str) -> None:
    log = proxy.log()
    assert f"the {where} check failed (InjectedFault at fault_addon.py:" in log, log
    assert f"); {action} (blocklist_on_error=" in log, log
    for secret in secrets:
        assert secret not in log, secret


# -- a lookup that raises ----------------------------------------------------------------


def test_a_request_whose_check_raises_is_refused_by_default(
    make_proxy, tmp_path, faults, world: World
) -> None:
    url = "http://unlisted.example.org/boom"
    faults(match="/boom")
    with running(faulty_proxy(make_proxy, tmp_path, faults)) as proxy:
        before = world.connections()
        response = proxy.get(url)
        assert response.status == 503, response.text
        assert b"could not check" in response.body
        assert world.connections() == before  # nothing went upstream
        assert errors(proxy, "request", "refuse") == 1
        assert_log_line(proxy, "request", "refused", "unlisted.example.org", "/boom")
        # Unaffected requests go on as usual.
        assert proxy.get("http://unlisted.example.org/fine").status == 200
        assert proxy.get(LISTED).status == 451


def test_open_passes_a_request_whose_check_raises(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(match="/boom")
    options = {"blocklist_on_error": "open"}
    with running(faulty_proxy(make_proxy, tmp_path, faults, options=options)) as proxy:
        response = proxy.get("http://unlisted.example.org/boom")
        assert response.status == 200
        assert response.headers["X-Origin"] == "open-http"
        assert errors(proxy, "request", "pass") == 1
        assert errors(proxy, "request", "refuse") == 0
        assert_log_line(proxy, "request", "passed unchecked", "unlisted.example.org")


def test_the_host_header_is_still_checked_when_the_url_check_raises(
    make_proxy, tmp_path, faults, world: World
) -> None:
    # The URL names an unlisted host whose check raises; the Host header names the listed
    # page (what transparent and reverse mode see). The known match wins, with the splash.
    faults(match="unlisted.example.org")
    options = {"blocklist_on_error": "open"}  # open, so only a real match can refuse it
    with running(faulty_proxy(make_proxy, tmp_path, faults, options=options)) as proxy:
        before = world.connections()
        response = proxy.get(
            "http://unlisted.example.org/page.html",
            headers={"Host": "blocked.example.com", "Accept": "text/html"},
        )
        assert response.status == 451
        assert "Access denied" in response.text
        assert world.connections() == before
        assert proxy.metric("blocklist_blocks_total") == 1


def test_a_connect_whose_check_raises_is_refused(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(host="unlisted.example.org")
    options = {"blocklist_intercept": "never"}  # where CONNECT hosts are checked
    with running(faulty_proxy(make_proxy, tmp_path, faults, options=options)) as proxy:
        before = world.connections()
        assert proxy.connect("unlisted.example.org") == 503
        assert world.connections() == before
        assert errors(proxy, "connect", "refuse") == 1
        assert_log_line(proxy, "connect", "refused", "unlisted.example.org")


def test_a_tls_hello_whose_check_raises_is_neither_decrypted_nor_connected(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(host="unlisted.example.org")
    with running(faulty_proxy(make_proxy, tmp_path, faults)) as proxy:
        before = world.connections()
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            proxy.https_get("unlisted.example.org", "/secret", trust_mitm=False)
        assert world.connections() == before
        assert errors(proxy, "tls", "refuse") == 1
        assert proxy.metric_series("blocklist_tls_total", decision="intercept") == 0
        assert_log_line(proxy, "tls", "refused", "unlisted.example.org")


def test_a_tls_hello_whose_check_raises_passes_untouched_when_open(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(host="unlisted.example.org")
    options = {"blocklist_on_error": "open"}
    with running(faulty_proxy(make_proxy, tmp_path, faults, options=options)) as proxy:
        response, seen = proxy.https_get("unlisted.example.org", "/x", trust_mitm=False)
        assert response.status == 200
        assert seen == proxy.ca.origin_der  # the origin's own certificate: not decrypted
        assert errors(proxy, "tls", "pass") == 1


def test_a_server_connection_whose_check_raises_is_not_opened(
    make_proxy, tmp_path, faults, world: World
) -> None:
    # The URL check does not use host_listing; the server_connect guard does.
    faults(host="unlisted.example.org")
    with running(faulty_proxy(make_proxy, tmp_path, faults)) as proxy:
        before = world.connections()
        response = proxy.get("http://unlisted.example.org/x")
        assert response.status == 502  # mitmproxy's answer to a killed server connection
        assert world.connections() == before
        assert errors(proxy, "server", "refuse") == 1
        assert_log_line(proxy, "server", "refused")


# -- a known match whose answer cannot be rendered ---------------------------------------


def test_a_listed_request_is_refused_even_when_the_splash_cannot_be_rendered(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(render=True)
    with running(faulty_proxy(make_proxy, tmp_path, faults)) as proxy:
        before = world.connections()
        response = proxy.get(LISTED, headers={"Accept": "text/html"})
        assert response.status == 451
        assert response.headers["Cache-Control"] == "no-store"
        assert response.body == b"Blocked (451 Unavailable For Legal Reasons).\n"
        assert world.connections() == before
        assert proxy.metric("blocklist_render_errors_total") == 1
        assert proxy.metric("blocklist_blocks_total") == 1
        assert len(proxy.blocks()) == 1
        log = proxy.log()
        assert "could not render the 451 answer (InjectedFault at fault_addon.py:" in log
        assert "blocked.example.com" not in log

        faults()  # rendering works again: the full page
        response = proxy.get(LISTED, headers={"Accept": "text/html"})
        assert response.status == 451 and "Access denied" in response.text


# -- pages and posts -----------------------------------------------------------------------

PAGE = b'<html><body><a href="http://unlisted.example.org/ok">ok</a></body></html>'
LISTED_LINK = b'<html><body><a href="http://blocked.example.com/page.html">x</a></body></html>'


@pytest.fixture
def page_site(world: World) -> dict[str, int]:
    async def page(request: web.Request) -> web.Response:
        body = LISTED_LINK if request.path == "/listed-link.html" else PAGE
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    origins: Origins = world.origins
    site = origins.start("pages", app=app)
    return {"pages.example.net:80": site.port}


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_a_page_whose_scan_raises(
    make_proxy, tmp_path, faults, page_site: dict[str, int], policy: str
) -> None:
    faults(scan=True)
    options = {"blocklist_on_error": policy}
    proxy = faulty_proxy(make_proxy, tmp_path, faults, options=options, routes=page_site)
    with running(proxy):
        response = proxy.get("http://pages.example.net/index.html")
        if policy == "closed":
            assert response.status == 502
            assert b"could not check this page" in response.body
            assert errors(proxy, "page", "refuse") == 1
            assert_log_line(proxy, "page", "refused", "pages.example.net")
        else:
            assert (response.status, response.body) == (200, PAGE)
            assert errors(proxy, "page", "pass") == 1


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_a_hook_that_raises_outside_its_check_fails_as_the_policy_says(
    make_proxy, tmp_path, faults, page_site: dict[str, int], policy: str
) -> None:
    """The page's listed link was found and neutralized, then writing the block event
    raised: the exception left the hook, and mitmproxy delivered the page as the origin sent
    it, listed link and all."""
    faults(blocklog=True)
    options = {"blocklist_on_error": policy}
    proxy = faulty_proxy(make_proxy, tmp_path, faults, options=options, routes=page_site)
    with running(proxy):
        response = proxy.get("http://pages.example.net/listed-link.html")
        if policy == "closed":
            assert response.status == 502, response.body
            assert b"blocked.example.com" not in response.body
            assert errors(proxy, "page", "refuse") == 1
            assert_log_line(proxy, "page", "refused", "pages.example.net")
        else:
            assert response.status == 200
            assert errors(proxy, "page", "pass") == 1
        assert proxy.get(LISTED).status == 451  # the request's own 451 stands, unlogged


def test_a_post_whose_check_raises_never_reaches_the_site(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(match="boom.example.net")
    site = world.open_http
    target = f"127.0.0.1:{site.port}"
    proxy = faulty_proxy(
        make_proxy, tmp_path, faults, mode=f"reverse:http://{target}", routes={target: site.port}
    )
    with running(proxy):
        before = len(site.requests)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
        try:
            body = b"comment=see+http%3A%2F%2Fboom.example.net%2Fx"
            headers = {"Content-Type": "application/x-www-form-urlencoded", "Host": "forum.test"}
            conn.request("POST", "/forum/post", body=body, headers=headers)
            response = conn.getresponse()
            assert response.status == 503, response.read()
        finally:
            conn.close()
        assert len(site.requests) == before
        assert errors(proxy, "upload", "refuse") == 1
        assert_log_line(proxy, "upload", "refused", "boom.example.net")


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_an_image_check_that_raises(
    make_proxy, tmp_path, faults, world: World, policy: str
) -> None:
    image = encode(draw(7, (64, 48)))
    hashes = tmp_path / "hashes.jsonl"
    hashes.write_text(json.dumps({"id": "h-1", "md5": "0" * 32}) + "\n")
    store = synced_store(tmp_path)
    sync(store, hashes, name="hotline", data_dir=tmp_path / "data", fmt="hashes-jsonl")
    site = world.open_http
    target = f"127.0.0.1:{site.port}"
    proxy = make_proxy(
        store,
        faults=faults.path,
        mode=f"reverse:http://{target}",
        routes={target: site.port},
        options={"blocklist_on_error": policy},
    )
    faults(image=True)
    with running(proxy):
        before = len(site.requests)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            headers = {"Content-Type": "image/jpeg", "Host": "uploads.test"}
            conn.request("POST", "/upload", body=image, headers=headers)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if policy == "closed":
            assert response.status == 503
            assert len(site.requests) == before
            assert errors(proxy, "image", "refuse") == 1
            assert_log_line(proxy, "image", "refused", "uploads.test")
        else:
            assert response.status == 200
            assert len(site.requests) == before + 1
            assert errors(proxy, "image", "pass") == 1


# -- the follower and mid-run loads --------------------------------------------------------


@pytest.mark.parametrize("fault", ["watch", "load"])
def test_a_failing_follower_is_restarted_and_reported(
    make_proxy, tmp_path, faults, fault: str
) -> None:
    """``watch``: the follower itself fails; ``load``: a new version cannot be loaded. Either
    way the old list stays enforced, health says degraded, the restarts are counted, and the
    new version is enforced once the fault is gone."""
    store = (tmp_path / "store").as_uri()
    data = tmp_path / "data"
    sync(store, SAMPLE_FEED, data_dir=data)
    proxy = make_proxy(store, faults=faults.path)
    fresh = "http://fresh.example.net/new.html"
    with running(proxy):
        assert proxy.health()[1]["status"] == "ok"
        faults(**{fault: True})
        sync(store, feed_with(tmp_path, fresh), data_dir=data)

        def degraded() -> bool:
            status, doc = proxy.health()
            return status == 200 and doc["status"] == "degraded" and doc["failing"] == ["follow"]

        wait_for(degraded, 30, "health to say degraded")
        wait_for(
            lambda: proxy.metric_series("blocklist_task_restarts_total", task="follow") >= 2,
            30,
            "the follower to be restarted again",
        )
        assert proxy.get(LISTED).status == 451  # the old list, still enforced
        assert proxy.get(fresh).status == 200  # the new one has not arrived
        assert "the follow task failed (InjectedFault at fault_addon.py:" in proxy.log()

        faults()
        wait_for(lambda: proxy.get(fresh).status == 451, 60, "the new version after recovery")
        wait_for(lambda: proxy.health()[1]["status"] == "ok", 30, "health to recover")
        assert "failing" not in proxy.health()[1]
        assert "the follow task works again" in proxy.log()


# -- the start: connections that arrive before the list is loaded -------------------------


def send_while_loading(proxy: Proxy) -> tuple[Future, Future]:
    """Start ``proxy`` and, once it listens but before the list is loaded (its status server
    only starts after the load), send a listed request and a TLS connection to an unlisted
    host whose client does not trust the proxy's CA."""
    proxy.start(wait=False)
    proxy.wait_listening()
    with pytest.raises(OSError):
        proxy.health()  # not loaded yet
    pool = ThreadPoolExecutor(2)
    listed = pool.submit(proxy.get, LISTED)
    tls = pool.submit(proxy.https_get, "unlisted.example.org", "/x", trust_mitm=False)
    pool.shutdown(wait=False)
    return listed, tls


def test_connections_before_the_first_load_wait_for_it(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(load_delay=3)
    proxy = faulty_proxy(make_proxy, tmp_path, faults)
    try:
        listed, tls = send_while_loading(proxy)
        assert listed.result(timeout=30).status == 451  # not a 503
        response, seen = tls.result(timeout=30)
        assert response.status == 200
        assert seen == proxy.ca.origin_der  # passed through, never decrypted meanwhile
        assert proxy.metric_series("blocklist_tls_total", decision="intercept") == 0
    finally:
        proxy.stop()


def test_connections_are_refused_when_the_load_outlasts_the_start_wait(
    make_proxy, tmp_path, faults, world: World
) -> None:
    faults(load_delay=5)
    options = {"blocklist_start_wait": "1"}
    proxy = faulty_proxy(make_proxy, tmp_path, faults, options=options)
    try:
        before = world.connections()
        listed, tls = send_while_loading(proxy)
        assert listed.result(timeout=30).status == 503
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            tls.result(timeout=30)
        assert world.connections() == before
        wait_for(lambda: proxy._ready(), 30, "the list to load")
        assert proxy.get(LISTED).status == 451
    finally:
        proxy.stop()


def test_systemd_hears_ready_only_once_the_list_is_enforced(
    make_proxy, tmp_path, faults, world: World
) -> None:
    """``Type=notify``: READY=1 comes after the load, and STOPPING=1 at the end."""
    faults(load_delay=2)
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(address))
        manager.settimeout(60)
        proxy = faulty_proxy(make_proxy, tmp_path, faults, env={"NOTIFY_SOCKET": str(address)})
        try:
            proxy.start(wait=False)
            message = manager.recv(4096).decode()
            assert message.splitlines() == ["READY=1", "STATUS=enforcing version 1 from store"]
            assert proxy.get(LISTED).status == 451  # enforced by the time READY arrives
            assert proxy.health()[0] == 200
        finally:
            proxy.stop()
        assert manager.recv(4096) == b"STOPPING=1"
