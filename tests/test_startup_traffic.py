"""Traffic from the first accepted connection: a proxy restarted under live traffic answers
every request and stays up, whatever its store holds (issue 20, item 1).

mitmproxy starts its listeners before it runs the addons' ``running`` hooks, one addon at a
time; ours loads the lists there, and its own hooks hold a connection's first events until
the load is done. A request released before mitmproxy's later addons had started reached
its TLS addon unready (``'NoneType' object has no attribute 'default_ca'``) and mitmproxy
exited with status 1. Each case hammers the port from the moment it opens until the list is
enforced; every request must get an answer (451 for the listed URL, 200 otherwise) and the
process must still run. A slow load (``load_delay``) widens the window the race needs, and
mitmproxy's default confdir (here under a HOME of the test's own) is what leaves its TLS
addon unready until its ``running`` hook: an explicit ``confdir`` option readies it earlier.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import threading
import time
from collections.abc import Callable

import pytest

from testlab.harness import SAMPLE_FEED, Proxy, World, sync, wait_for
from testlab.images import draw, reference_pdq

LISTED = "http://blocked.example.com/page.html"
UNLISTED = "http://unlisted.example.org/ok"
#: Requests sent after the list is enforced, on top of those sent while it loaded.
AFTER = 20
#: However long the start takes, the hammering stops by itself after this.
DEADLINE = 60.0


def store_with(directory: pathlib.Path, lists: str) -> str:
    """A file store holding a URL list, an image hash list, or both (the real sync)."""
    store = (directory / "store").as_uri()
    if lists in ("urls", "both"):
        sync(store, SAMPLE_FEED, data_dir=directory / "data")
    if lists in ("hashes", "both"):
        feed = directory / "hashes.jsonl"
        feed.write_text(json.dumps({"id": "h-1", "pdq": reference_pdq(draw(7))}) + "\n")
        sync(store, feed, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    return store


def default_confdir(directory: pathlib.Path) -> dict[str, object]:
    """Proxy arguments for mitmproxy's default confdir, ~/.mitmproxy, under a HOME of its own."""
    return {"options": {"confdir": None}, "env": {"HOME": str(directory / "home")}}


def get(port: int, url: str, host: str) -> int | None:
    """The status of one request, or None when the connection was refused (not listening
    yet); any other failure (a reset, a close without an answer) is a failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            return None
        conn.putrequest("GET", url, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def hammer(proxy: Proxy, send: Callable[[], int | None], loaded: Callable[[], bool]) -> list[int]:
    """Send requests from the moment the port opens until the list is enforced, then AFTER
    more; each from its own thread so several wait on the load at once. The statuses."""
    statuses: list[int] = []
    failures: list[BaseException] = []
    threads: list[threading.Thread] = []

    def one() -> None:
        try:
            status = send()
        except BaseException as exc:
            failures.append(exc)
            return
        if status is not None:
            statuses.append(status)

    deadline = time.monotonic() + DEADLINE
    after = 0
    while after < AFTER and time.monotonic() < deadline:
        assert proxy.process is not None
        if proxy.process.poll() is not None:
            break
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
        if loaded():
            after += 1
        time.sleep(0.01)  # paces the load; the loop ends on the conditions above
    for thread in threads:
        thread.join(35)
    assert proxy.process is not None
    assert proxy.process.poll() is None, f"the proxy exited:\n{proxy.log()}"
    assert not failures, f"{failures[:3]}\n{proxy.log()}"
    assert after == AFTER, "the list was never enforced"
    return statuses


def loaded(proxy: Proxy) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return proxy.health()[0] == 200
        except OSError:
            return False

    return check


@pytest.mark.parametrize("lists", ["urls", "hashes", "both"])
def test_forward_proxy_answers_every_request_from_the_first_connection(
    make_proxy, tmp_path: pathlib.Path, faults, world: World, lists: str
) -> None:
    faults(load_delay=1)
    proxy = make_proxy(store_with(tmp_path, lists), faults=faults.path, **default_confdir(tmp_path))
    url = LISTED if lists != "hashes" else UNLISTED
    expected = 451 if lists != "hashes" else 200
    try:
        proxy.start(wait=False)
        host = url.split("/")[2]
        statuses = hammer(proxy, lambda: get(proxy.port, url, host), loaded(proxy))
        assert statuses and set(statuses) == {expected}, statuses
        assert get(proxy.port, UNLISTED, "unlisted.example.org") == 200
    finally:
        proxy.stop()


@pytest.mark.parametrize("lists", ["urls", "hashes", "both"])
def test_reverse_proxy_answers_every_request_from_the_first_connection(
    make_proxy, tmp_path: pathlib.Path, faults, world: World, lists: str
) -> None:
    faults(load_delay=1)
    target = f"127.0.0.1:{world.open_http.port}"
    proxy = make_proxy(
        store_with(tmp_path, lists),
        faults=faults.path,
        mode=f"reverse:http://{target}",
        routes={target: world.open_http.port},
        **default_confdir(tmp_path),
    )
    try:
        proxy.start(wait=False)
        send = lambda: get(proxy.port, "/start", "www.example.org")  # noqa: E731
        statuses = hammer(proxy, send, loaded(proxy))
        assert statuses and set(statuses) == {200}, statuses
        wait_for(lambda: world.open_http.connections > 0, 10, "the origin")
    finally:
        proxy.stop()
