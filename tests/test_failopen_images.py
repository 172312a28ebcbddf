"""Fail-open in the image guard under load: an upload that waited too long for a worker.

Uploads are checked in a pool of one thread per core. One that waited ``QUEUE_WAIT`` for a
thread was passed as ``too-busy`` (under the default ``blocklist_image_uncheckable=pass``)
without even its exact hashes checked, although the option promises "exact hashes are
checked either way": a few slow uploads ahead of it (each may hold a thread for the
request's budget) let a listed picture through by its MD5. The pool is held busy here by
real tasks, not a mock, and the wait is shortened.

Only POST, PUT and PATCH were checked: a listed picture sent by GET, DELETE or any other
method with a body reached a handler that takes any method (a real mitmdump with the addon
in reverse mode, in front of the echo origin).
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import threading
from collections.abc import Iterator

import pytest
from mitmproxy.test import taddons, tflow

from blocklist_addon.guards import images
from blocklist_addon.guards.images import INLINE_BYTES, ImageGuard
from blocklist_addon.guards.urls import Enforcer
from blocklist_addon.hashes import HashList
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.ops.blocklog import BlockLog
from blocklist_addon.ops.metrics import Metrics
from testlab.harness import Proxy, World, running, sync, synced_store
from testlab.images import draw, encode, md5
from testlab.origins import TestCA

LISTED = encode(draw(11, (1600, 1200)), "JPEG", quality=95)  # past INLINE_BYTES: to the pool
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


@pytest.fixture(scope="module")
def image_proxy(
    tmp_path_factory: pytest.TempPathFactory, world: World, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Proxy]:
    """Reverse mode in front of the echo origin (which takes any method and reads its body),
    enforcing LISTED's MD5."""
    directory = tmp_path_factory.mktemp("images")
    hashes = directory / "hashes.jsonl"
    hashes.write_text(json.dumps({"id": "h-1", "md5": md5(LISTED)}) + "\n")
    store = synced_store(directory)
    sync(store, hashes, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    target = f"127.0.0.1:{world.open_http.port}"
    proxy = Proxy(
        directory / "proxy",
        store=store,
        routes={**world.routes, target: world.open_http.port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
    )
    with running(proxy):
        yield proxy


def send(proxy: Proxy, method: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        headers = {"Content-Type": "image/jpeg", "Host": "uploads.test"}
        conn.request(method, "/upload", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "DELETE", "QUERY"])
def test_a_listed_picture_sent_by_any_method_with_a_body_is_refused(
    image_proxy: Proxy, world: World, method: str
) -> None:
    """A handler that takes any method (PHP reading php://input, aiohttp's route "*")
    stores what it is sent: the check read POST, PUT and PATCH only."""
    before = len(world.open_http.requests)
    assert send(image_proxy, method, LISTED) == 451
    assert len(world.open_http.requests) == before
    assert send(image_proxy, method, OTHER) == 200
    assert send(image_proxy, method, b"") == 200
    assert len(world.open_http.requests) == before + 2
