"""Fail-open in the image guard under load: an upload that waited too long for a worker.

Uploads are checked in a pool of one thread per core. One that waited ``QUEUE_WAIT`` for a
thread was passed as ``too-busy`` (under the default ``blocklist_image_uncheckable=pass``)
without even its exact hashes checked, although the option promises "exact hashes are
checked either way": a few slow uploads ahead of it (each may hold a thread for the
request's budget) let a listed picture through by its MD5. The pool is held busy here by
real tasks, not a mock, and the wait is shortened.

A picture sent as a form field percent-encoded (``curl --data-urlencode photo@picture.jpg``,
which PHP decodes into ``$_POST["photo"]``, the picture's bytes) was checked only as the
encoded text: the picture itself was never hashed.

Only POST, PUT and PATCH were checked: a listed picture sent by GET, DELETE or any other
method with a body reached a handler that takes any method (a real mitmdump with the addon
in reverse mode, in front of an aiohttp site).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import pathlib
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator

import brotli
import pytest
from aiohttp import web
from mitmproxy.test import taddons, tflow

from blocklist_addon.guards import images
from blocklist_addon.guards.images import INLINE_BYTES, ImageGuard
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.hashes import HashList
from blocklist_addon.hashes.unwrap import unwrap
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.ops.metrics import Metrics

try:  # Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # the backport mitmproxy depends on
    from backports import zstd  # type: ignore[no-redef]

from testlab.harness import Proxy, running, sync, synced_store
from testlab.images import draw, encode, md5, reference_pdq
from testlab.origins import Origins, TestCA

LISTED_IMAGE = draw(11, (1600, 1200))
LISTED = encode(LISTED_IMAGE, "JPEG", quality=95)  # past INLINE_BYTES: to the pool
OTHER = encode(draw(12, (1600, 1200)), "JPEG", quality=95)


@pytest.fixture
def guard() -> Iterator[ImageGuard]:
    """An image guard enforcing LISTED's MD5, every thread of its pool held busy."""
    metrics = Metrics()
    blocklog = BlockLog()
    image_guard = ImageGuard(metrics, Enforcer(ActiveList(metrics), metrics, blocklog))
    release = threading.Event()
    with taddons.context(image_guard, blocklog):
        image_guard.hashes.blocklist = HashList.from_entries([{"id": "h-1", "md5": md5(LISTED)}])
        held = [image_guard._pool.submit(release.wait) for _ in range(os.cpu_count() or 1)]
        try:
            yield image_guard
        finally:
            release.set()
            for task in held:
                task.result(timeout=10)
            image_guard._pool.shutdown(wait=True)
            image_guard.check.close()


def upload(body: bytes) -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = "POST"
    flow.request.headers["content-type"] = "image/jpeg"
    flow.request.content = body
    return flow


@pytest.mark.parametrize("policy", ["pass", "refuse"])
async def test_a_listed_picture_left_waiting_for_a_worker_is_refused_by_its_exact_hash(
    guard: ImageGuard, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setattr(images, "QUEUE_WAIT", 0.2)
    guard.uncheckable = policy
    assert len(LISTED) > INLINE_BYTES
    flow = upload(LISTED)
    pending = guard.request(flow)
    assert pending is not None
    await pending
    assert flow.response is not None and flow.response.status_code == 451
    assert (
        guard.metrics.value("blocklist_images_unchecked_total", reason="too-busy", action=policy)
        == 0
    )


async def test_another_picture_left_waiting_is_passed_or_refused_as_unchecked(
    guard: ImageGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pixels were not checked: too-busy, as the policy says (pass here)."""
    monkeypatch.setattr(images, "QUEUE_WAIT", 0.2)
    flow = upload(OTHER)
    pending = guard.request(flow)
    assert pending is not None
    await pending
    assert flow.response is None
    assert (
        guard.metrics.value("blocklist_images_unchecked_total", reason="too-busy", action="pass")
        == 1
    )


# -- an upload by a method other than POST, PUT or PATCH ---------------------------------------


#: blocklist_image_max_bytes of the proxy below: small, so that padding past it is quick.
MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[tuple[int, list[str]]]:
    """A site that stores what it is sent by any method (aiohttp's route "*", as PHP's
    php://input), inflating a content coding as Express's body-parser does; its port and
    the method of each body it stored."""
    stored: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes Content-Encoding
        if body:
            stored.append(request.method)
        return web.Response(text=f"stored {len(body)} bytes")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/upload", handler)
    origins = Origins(ca)
    try:
        yield origins.start("uploads", app=app).port, stored
    finally:
        origins.close()


@pytest.fixture(scope="module")
def image_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    site: tuple[int, list[str]],
    confdir: pathlib.Path,
    ca: TestCA,
) -> Iterator[Proxy]:
    """Reverse mode in front of ``site``, enforcing LISTED's MD5 and PDQ."""
    directory = tmp_path_factory.mktemp("images")
    hashes = directory / "hashes.jsonl"
    record = {"id": "h-1", "md5": md5(LISTED), "pdq": reference_pdq(LISTED_IMAGE)}
    hashes.write_text(json.dumps(record) + "\n")
    store = synced_store(directory)
    sync(store, hashes, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    port, _ = site
    target = f"127.0.0.1:{port}"
    proxy = Proxy(
        directory / "proxy",
        store=store,
        routes={target: port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
        options={"blocklist_image_max_bytes": str(MAX_BYTES)},
    )
    with running(proxy):
        yield proxy


def send(proxy: Proxy, method: str, body: bytes, **extra: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        headers = {"Content-Type": "image/jpeg", "Host": "uploads.test", **extra}
        conn.request(method, "/upload", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "DELETE", "QUERY"])
def test_a_listed_picture_sent_by_any_method_with_a_body_is_refused(
    image_proxy: Proxy, site: tuple[int, list[str]], method: str
) -> None:
    """A handler that takes any method (PHP reading php://input, aiohttp's route "*")
    stores what it is sent: the check read POST, PUT and PATCH only."""
    _, stored = site
    before = len(stored)
    assert send(image_proxy, method, LISTED) == 451
    assert send(image_proxy, method, OTHER) == 200
    assert send(image_proxy, method, b"") == 200
    assert stored[before:] == [method]


# -- a padded picture made small by a content coding -----------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_listed_picture_padded_past_max_bytes_and_compressed_is_refused(
    image_proxy: Proxy, site: tuple[int, list[str]], coding: str
) -> None:
    """Sent plain, the padded picture's head is checked (tests/test_hosting.py); made small
    by a coding, its decoded head was not: only the compressed bytes, and it passed as
    too-large. Sites that inflate request bodies (Express's body-parser) keep the picture."""
    compress = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstd.compress,
    }[coding]
    listed, other = (compress(image + b"\0" * (MAX_BYTES + 1)) for image in (LISTED, OTHER))
    assert len(listed) < MAX_BYTES
    _, stored = site
    before = len(stored)
    assert send(image_proxy, "POST", listed, **{"Content-Encoding": coding}) == 451
    assert send(image_proxy, "POST", other, **{"Content-Encoding": coding}) == 200
    assert stored[before:] == ["POST"]  # the other one, passed as too-large


@pytest.mark.parametrize(
    "broken",
    [
        lambda data: gzip.compress(data) + b"trailing bytes, not a gzip member",
        lambda data: gzip.compress(data)[:-8],  # its CRC and length cut off
    ],
    ids=["trailing-garbage", "no-trailer"],
)
def test_a_listed_picture_in_a_broken_coding_is_refused(
    image_proxy: Proxy, broken: Callable[[bytes], bytes]
) -> None:
    """Lenient decoders (zlib's streaming one, which servers use) give the picture whole;
    the check read only the compressed bytes (undecodable-encoding) and passed it."""
    assert send(image_proxy, "POST", broken(LISTED), **{"Content-Encoding": "gzip"}) == 451
    # Passed to the site, which answers itself (aiohttp refuses the junk with 500).
    assert send(image_proxy, "POST", broken(OTHER), **{"Content-Encoding": "gzip"}) in (200, 500)


# -- a picture percent-encoded in a form field -------------------------------------------------


def test_a_listed_picture_percent_encoded_in_a_form_field_is_refused(
    image_proxy: Proxy, site: tuple[int, list[str]]
) -> None:
    """As ``curl --data-urlencode photo@picture.jpg`` sends it (every byte but the unreserved
    ones percent-encoded): PHP hands the app the picture's bytes."""
    form = "application/x-www-form-urlencoded"
    listed, other = (
        b"title=holiday&photo=" + urllib.parse.quote_from_bytes(image, safe="").encode()
        for image in (LISTED, OTHER)
    )
    assert len(listed) < MAX_BYTES
    _, stored = site
    before = len(stored)
    assert send(image_proxy, "POST", listed, **{"Content-Type": form}) == 451
    assert send(image_proxy, "POST", other, **{"Content-Type": form}) == 200
    assert stored[before:] == ["POST"]


def test_a_file_percent_encoded_in_a_form_field_is_a_piece_to_check() -> None:
    """Images and videos alike (a video's bytes by its container's head); a text value is
    not a piece of its own."""
    video = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(range(256))
    picture = encode(draw(5, (32, 24)), "PNG")
    body = b"&".join(
        [
            b"title=holiday+pictures+%26+more",
            b"photo=" + urllib.parse.quote_from_bytes(picture, safe="").encode(),
            b"clip=" + urllib.parse.quote_from_bytes(video, safe="").encode(),
        ]
    )
    pieces = unwrap(body, "application/x-www-form-urlencoded", max_bytes=1 << 20).files
    assert picture in pieces
    assert video in pieces
    assert len(pieces) == 3  # and the body itself
