"""Fail-open in the URL upload guard (reverse mode): posts that reached the site unchecked.

- ``blocklist_upload_paths`` was matched against the path as sent, but a site routes the
  decoded path: a listed link posted to ``/%66orum/post`` reached the ``/forum/{name}``
  handler of an aiohttp site unchecked (nginx also merges slashes and resolves ``..``,
  servlet containers drop ``;parameters``, IIS ignores case).
- A post declared ``application/octet-stream`` (or any type the reader skips, or multipart
  without its boundary) was not read; JSON APIs read the body whatever its type.
- A post by a method other than POST, PUT or PATCH (QUERY, DELETE, GET with a body) was not
  read; a handler for every method reads its body.
- A post in a broken content coding (gzip cut short of its trailer) was read as its
  compressed bytes, and one inflating past ``blocklist_upload_max_bytes`` not at all; the
  site's decoder reads the link in both.
- A multipart field without a file name but typed ``application/octet-stream`` was skipped
  as a binary file; PHP, Django and aiohttp give it to the app as a form field.
- A chat message over a WebSocket on a guarded path was never read at all.
- A large text post was read on mitmproxy's event loop (about 0.8 s for 1 MB of dotted
  tokens): while it was read, every other connection of the proxy stood still, so a few
  concurrent posts held up everyone's pages.
- mitmproxy's ``stream_large_bodies`` streamed a post past its size straight to the site
  as it arrived (after the ``requestheaders`` hooks, whatever they set, and before the
  ``request`` hook): a listed link in an 8 KB form post under ``stream_large_bodies=4k``
  reached the site, as would an image under an active hash list. No hook can stop it for
  one flow, so the option is refused.

A real mitmdump with the addon in reverse mode in front of a real aiohttp site.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from aiohttp import web
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from blocklist_addon.guards.uploads import UploadGuard
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.ops.metrics import Metrics
from testlab.harness import Proxy, running, synced_store, wait_for
from testlab.images import draw, encode
from testlab.origins import Origins, TestCA

LISTED_FORM = urllib.parse.urlencode({"message": "see http://blocked.example.com/page.html"})
UNLISTED_FORM = urllib.parse.urlencode({"message": "see http://blocked.example.com/x.html"})
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Host": "forum.test"}


def upload_guard() -> UploadGuard:
    metrics = Metrics()
    lists = ActiveList(metrics)
    return UploadGuard(lists, Enforcer(lists, metrics, BlockLog()))


# -- the path as the site routes it ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "guarded"),
    [
        ("/forum/post", True),
        ("/%66orum/post", True),
        ("/FORUM/post", True),  # case-insensitive servers route it to /forum
        ("//forum/post", True),  # nginx merges slashes
        ("/forum;jsessionid=1/post", True),  # servlet containers drop path parameters
        ("/x/../forum/post?q=1", True),
        ("/%2e%2e/forum/post", True),
        ("/forumx/post", False),
        ("/other/forum/post", False),
        ("/for%75m2/post", False),
    ],
)
def test_the_path_is_read_as_servers_route_it(path: str, guarded: bool) -> None:
    upload = upload_guard()
    with taddons.context(upload) as tctx:
        tctx.configure(upload, blocklist_upload_paths="/forum/*")
        flow = tflow.tflow()
        flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://192.0.2.1")
        flow.request.method = "POST"
        flow.request.path = path
        assert upload._guarded(flow) is guarded


@pytest.fixture(scope="module")
def forum(ca: TestCA) -> Iterator[tuple[int, list[str]]]:
    """A site that routes POST /forum/{name} (aiohttp: on the decoded path) and a WebSocket
    at /forum/socket; its port and the raw path of each post it accepted ("ws:" and the
    text of each WebSocket message)."""
    accepted: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        accepted.append(request.raw_path)
        return web.Response(text="accepted")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            accepted.append(f"ws:{message.data}")
        return ws

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def form(request: web.Request) -> web.Response:
        fields = await request.post()  # aiohttp: a field's value is bytes when not text/*
        message = fields["message"]
        assert not isinstance(message, web.FileField)
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        accepted.append(f"form:{text}")
        return web.Response(text="accepted")

    app = web.Application(client_max_size=8 * 1024 * 1024)  # it inflates codings
    app.router.add_get("/hello", hello)
    app.router.add_post("/forum/form", form)
    app.router.add_get("/forum/socket", socket)
    app.router.add_route("*", "/forum/any", handler)  # a handler for every method
    app.router.add_post("/forum/{name}", handler)
    origins = Origins(ca)
    try:
        yield origins.start("forum", app=app).port, accepted
    finally:
        origins.close()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    forum: tuple[int, list[str]],
    confdir: pathlib.Path,
    ca: TestCA,
) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("uploads")
    port, _ = forum
    target = f"127.0.0.1:{port}"
    proxy = Proxy(
        directory / "proxy",
        store=synced_store(directory),
        routes={target: port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
        options={"blocklist_upload_paths": "/forum/*"},
    )
    with running(proxy):
        yield proxy


def post(proxy: Proxy, path: str, body: str) -> int:
    """POST ``body`` to ``path`` exactly as written; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.request("POST", path, body=body.encode(), headers=FORM)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_listed_link_posted_to_an_encoded_guarded_path_never_reaches_the_site(
    proxy: Proxy, forum: tuple[int, list[str]]
) -> None:
    _, accepted = forum
    before = len(accepted)
    assert post(proxy, "/%66orum/post", UNLISTED_FORM) == 200
    assert accepted[before:] == ["/%66orum/post"]  # the site routes it to its forum
    assert post(proxy, "/%66orum/post", LISTED_FORM) == 451
    assert len(accepted) == before + 1


# -- stream_large_bodies ---------------------------------------------------------------------


def test_stream_large_bodies_is_refused_at_start(make_proxy, tmp_path: pathlib.Path) -> None:
    """Before, the proxy started, and an 8 KB form post with a listed link reached the site."""
    proxy = make_proxy(
        synced_store(tmp_path),
        mode="reverse:http://127.0.0.1:9",
        options={"blocklist_upload_paths": "/forum/*", "stream_large_bodies": "4k"},
    )
    proxy.start(wait=False)
    assert proxy.wait_exit() != 0
    log = proxy.log()
    assert "blocklist: stream_large_bodies: mitmproxy streams a post past it" in log, log
    assert "Traceback" not in log


def test_stream_large_bodies_is_refused_while_running() -> None:
    upload = upload_guard()
    with taddons.context(upload, Proxyserver()) as tctx:
        tctx.configure(upload, stream_large_bodies=None)
        with pytest.raises(OptionsError, match="stream_large_bodies"):
            tctx.configure(upload, stream_large_bodies="1m")


# -- a content type that the guard does not read ----------------------------------------------

LISTED_JSON = '{"thread": 7, "text": "see http://blocked.example.com/page.html"}'
UNLISTED_JSON = '{"thread": 7, "text": "see http://blocked.example.com/x.html"}'


def post_as(proxy: Proxy, content_type: str, body: bytes, path: str = "/forum/post") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        headers = {"Content-Type": content_type, "Host": "forum.test"}
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/octet-stream",  # Go's json.Decoder, Flask's get_json(force=True) read it
        "application/x-anything",
        "multipart/form-data; boundary=not-in-the-body",
    ],
)
def test_a_listed_link_in_a_body_of_an_unread_type_is_refused(
    proxy: Proxy, forum: tuple[int, list[str]], content_type: str
) -> None:
    """The site reads the body whatever its declared type (as JSON APIs often do)."""
    _, accepted = forum
    before = len(accepted)
    assert post_as(proxy, content_type, UNLISTED_JSON.encode()) == 200
    assert post_as(proxy, content_type, LISTED_JSON.encode()) == 451
    assert len(accepted) == before + 1


# -- a multipart field typed as binary -------------------------------------------------------


def multipart_post(proxy: Proxy, link: str) -> int:
    """A form with a photo (a file: binary, so the body is no UTF-8) and a message field
    with no file name, typed application/octet-stream, that holds ``link``."""
    photo = encode(draw(3, (64, 48)), "PNG")
    body = b"".join(
        [
            b"--B\r\n",
            b'Content-Disposition: form-data; name="photo"; filename="me.png"\r\n',
            b"Content-Type: image/png\r\n\r\n",
            photo,
            b"\r\n--B\r\n",
            b'Content-Disposition: form-data; name="message"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            f"see {link}".encode(),
            b"\r\n--B--\r\n",
        ]
    )
    return post_as(proxy, "multipart/form-data; boundary=B", body, path="/forum/form")


def test_a_listed_link_in_a_field_typed_as_binary_without_a_file_name_is_refused(
    proxy: Proxy, forum: tuple[int, list[str]]
) -> None:
    """The site reads the field as a field (aiohttp: as bytes; PHP and Django: as text);
    the check skipped it as a binary file."""
    _, accepted = forum
    before = len(accepted)
    assert multipart_post(proxy, "http://blocked.example.com/x.html") == 200
    assert accepted[before:] == ["form:see http://blocked.example.com/x.html"]
    assert multipart_post(proxy, "http://blocked.example.com/page.html") == 451
    assert len(accepted) == before + 1


# -- a WebSocket on a guarded path -------------------------------------------------------------


async def test_a_listed_link_sent_over_a_websocket_never_reaches_the_site(
    proxy: Proxy, forum: tuple[int, list[str]]
) -> None:
    """Dropped (a WebSocket has no answer to refuse it with); the messages around it pass,
    in order, so once the last one arrived the listed one would have."""
    _, accepted = forum
    before = len(accepted)
    url = f"http://127.0.0.1:{proxy.port}/forum/socket"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Host": "forum.test"}) as ws,
    ):
        await ws.send_str(UNLISTED_JSON)
        await ws.send_str(LISTED_JSON)
        await ws.send_bytes(LISTED_JSON.encode())
        await ws.send_str("words " * 20_000 + LISTED_JSON)  # read off the event loop
        await ws.send_str("last")
        await asyncio.to_thread(
            wait_for, lambda: "ws:last" in accepted[before:], 15, "the last message"
        )
    assert accepted[before:] == [f"ws:{UNLISTED_JSON}", "ws:last"]
    blocks = [b for b in proxy.blocks() if b["where"] == "upload"]
    assert len(blocks) >= 3


# -- a post by another method -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["QUERY", "DELETE", "GET"])
def test_a_listed_link_sent_by_any_method_with_a_body_is_refused(
    proxy: Proxy, forum: tuple[int, list[str]], method: str
) -> None:
    _, accepted = forum
    before = len(accepted)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        for body in (UNLISTED_FORM, LISTED_FORM, ""):
            conn.request(method, "/forum/any", body=body.encode(), headers=FORM)
            response = conn.getresponse()
            response.read()
            assert response.status == (451 if body == LISTED_FORM else 200), body
    finally:
        conn.close()
    assert accepted[before:] == ["/forum/any", "/forum/any"]


# -- a content coding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda form: gzip.compress(form)[:-8],  # its CRC and length cut off
        lambda form: gzip.compress(form + b"&pad=" + b"x" * (2 * 1024 * 1024)),  # past 1 MiB
    ],
    ids=["no-trailer", "inflates-past-the-limit"],
)
def test_a_listed_link_in_a_gzip_post_the_check_could_not_inflate_is_refused(
    proxy: Proxy, forum: tuple[int, list[str]], encode: Callable[[bytes], bytes]
) -> None:
    """aiohttp inflates both and reads the link; the check read the compressed bytes, or
    passed the post unread."""
    _, accepted = forum
    before = len(accepted)
    headers = {**FORM, "Content-Encoding": "gzip"}
    for form, status in ((UNLISTED_FORM, 200), (LISTED_FORM, 451)):
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            conn.request("POST", "/forum/post", body=encode(form.encode()), headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == status, form
        finally:
            conn.close()
    assert accepted[before:] == ["/forum/post"]


# -- a large post read off the event loop ----------------------------------------------------

#: Just under blocklist_upload_max_bytes (1 MiB) of tokens that each cost a lookup: about
#: 0.8 s to read here.
SLOW_TEXT = " ".join(f"a.b{i}" for i in range(120_000)).encode()[: 1024 * 1024 - 64]


def test_a_large_post_being_checked_does_not_hold_up_other_requests(
    proxy: Proxy, forum: tuple[int, list[str]]
) -> None:
    """Small requests sent one after another while a large post is read are answered in a
    fraction of the time the post takes (its check was on the event loop: the request in
    flight then waited for all of it)."""
    assert len(SLOW_TEXT) > 64 * 1024
    sent = threading.Event()
    result: dict[str, float] = {}

    def big() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        try:
            started = time.monotonic()
            headers = {"Content-Type": "text/plain", "Host": "forum.test"}
            conn.request("POST", "/forum/post", body=SLOW_TEXT, headers=headers)
            sent.set()
            response = conn.getresponse()
            response.read()
            result["status"] = response.status
            result["took"] = time.monotonic() - started
        finally:
            sent.set()
            conn.close()

    thread = threading.Thread(target=big)
    thread.start()
    latencies: list[float] = []
    try:
        assert sent.wait(30)
        while thread.is_alive():  # one small request after another, until it is answered
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
            try:
                started = time.monotonic()
                conn.request("GET", "/hello", headers={"Host": "forum.test"})
                response = conn.getresponse()
                assert response.read() == b"hello"
                latencies.append(time.monotonic() - started)
            finally:
                conn.close()
    finally:
        thread.join(60)
    assert result["status"] == 200
    assert max(latencies) < result["took"] / 3, (latencies, result)
    assert len(latencies) >= 2, (latencies, result)  # answered while the post was read


async def test_a_large_post_whose_check_raises_off_the_event_loop_never_reaches_the_site(
    make_proxy, tmp_path: pathlib.Path, faults, forum: tuple[int, list[str]]
) -> None:
    """Read in a worker thread, a check that raises still refuses the post (503) and drops
    the WebSocket message (blocklist_on_error=closed, the default)."""
    faults(match="boom.example.net")
    port, accepted = forum
    target = f"127.0.0.1:{port}"
    proxy = make_proxy(
        synced_store(tmp_path),
        faults=faults.path,  # type: ignore[attr-defined]
        mode=f"reverse:http://{target}",
        routes={target: port},
        options={"blocklist_upload_paths": "/forum/*"},
    )
    text = "words " * 20_000 + "see http://boom.example.net/x"
    assert len(text) > 64 * 1024
    with running(proxy):
        before = len(accepted)
        status = await asyncio.to_thread(post_as, proxy, "text/plain", text.encode())
        assert status == 503
        url = f"http://127.0.0.1:{proxy.port}/forum/socket"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"Host": "forum.test"}) as ws,
        ):
            await ws.send_str(text)
            await ws.send_str("last")
            await asyncio.to_thread(
                wait_for, lambda: "ws:last" in accepted[before:], 15, "the last message"
            )
        assert accepted[before:] == ["ws:last"]
        assert (
            proxy.metric_series("blocklist_lookup_errors_total", where="upload", action="refuse")
            == 2
        )
