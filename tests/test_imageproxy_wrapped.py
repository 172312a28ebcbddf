"""A listed picture wrapped every way an upload can wrap it never reaches the origin
(issue 20, items 2 and 3), through a real ``blocklist-proxy --mode reverse`` in front of an
aiohttp origin that parses what it receives as platforms do: aiohttp's own multipart reader
(nested parts, base64 transfer encoding), JSON with data URLs and base64 fields, and
aiohttp's request decompression.

Each wrapper is sent twice: with a clean picture, which the origin must receive and find an
image in (so the wrapper really carries a picture to a real parser), and with the listed
one, which the proxy must refuse before the origin sees a byte.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import io
import json
import pathlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web
from PIL import Image

from testlab.harness import Proxy, running, sync, wait_for
from testlab.images import draw, encode, md5, reference_pdq
from testlab.origins import Origin, Origins, TestCA

HOST = "uploads.example.net"
LISTED = draw(1)
CLEAN = draw(900)
EXACT_FILE = b"PK\x03\x04" + bytes(range(256)) * 8  # an exact-hash entry: any file


def images_in(data: bytes) -> int:
    """1 when ``data`` opens as an image (every frame counted as one image)."""
    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:
        return 0
    return 1


async def extract(request: web.Request) -> list[bytes]:
    """What a platform would store from this request."""
    kind = request.content_type
    found: list[bytes] = []
    if kind.startswith("multipart/"):

        async def walk(reader) -> None:
            while (part := await reader.next()) is not None:
                if part.headers.get("Content-Type", "").startswith("multipart/"):
                    await walk(part)
                    continue
                data = await part.read(decode=True)
                found.append(bytes(data))

        await walk(await request.multipart())
    elif kind.endswith("json"):

        def strings(value: object) -> Iterator[str]:
            if isinstance(value, str):
                yield value
            elif isinstance(value, dict):
                for item in value.values():
                    yield from strings(item)
            elif isinstance(value, list):
                for item in value:
                    yield from strings(item)

        for text in strings(await request.json()):
            payload = text.split(",", 1)[1] if text.startswith("data:") else text
            found.append(base64.b64decode(payload))
    else:
        found.append(await request.read())
    return found


class Site:
    def __init__(self) -> None:
        self.origin = Origin("placeholder")
        self.requests = 0
        self.stored: list[bytes] = []

    def app(self) -> web.Application:
        async def upload(request: web.Request) -> web.Response:
            self.requests += 1
            files = await extract(request)
            self.stored += files
            return web.json_response({"images": sum(map(images_in, files))})

        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", upload)
        return app


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[Site]:
    origins = Origins(ca)
    site = Site()
    try:
        site.origin = origins.start("uploads", app=site.app())
        yield site
    finally:
        origins.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("wrapped-store")
    store = (directory / "store").as_uri()
    feed = directory / "hashes.jsonl"
    records = [{"id": "w-1", "pdq": reference_pdq(LISTED)}, {"id": "w-2", "md5": md5(EXACT_FILE)}]
    feed.write_text("".join(json.dumps(r) + "\n" for r in records))
    sync(store, feed, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    return store


def make(directory: pathlib.Path, store: str, site: Site, confdir, ca, **options: str) -> Proxy:
    target = f"127.0.0.1:{site.origin.port}"
    return Proxy(
        directory,
        store=store,
        routes={target: site.origin.port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
        options=dict(options),
    )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, store: str, site: Site, confdir, ca: TestCA) -> Iterator[Proxy]:
    with running(make(tmp_path_factory.mktemp("wrapped-proxy"), store, site, confdir, ca)) as p:
        yield p


def post(proxy: Proxy, body: bytes, content_type: str | bytes, **headers: str) -> tuple[int, bytes]:
    """POST ``body`` with the Content-Type sent byte for byte as given."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.putrequest("POST", "/upload", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", HOST)
        conn.putheader(
            "Content-Type",
            content_type if isinstance(content_type, bytes) else content_type.encode(),
        )
        conn.putheader("Content-Length", str(len(body)))
        for key, value in headers.items():
            conn.putheader(key.replace("_", "-"), value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- the wrappers: (body, content type) for a picture ----------------------------------------

Wrapper = Callable[[bytes], tuple[bytes, bytes]]


def form(boundary: bytes, parts: list[tuple[bytes, bytes]], ctype: bytes) -> tuple[bytes, bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    return body + b"--" + boundary + b"--\r\n", ctype


FILE = b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg'
TEXT = b'Content-Disposition: form-data; name="caption"'

WRAPPERS: dict[str, Wrapper] = {
    "decoy-quoted-boundary": lambda p: form(
        b"B", [(FILE, p)], b'multipart/form-data; x="boundary=zzz"; boundary=B'
    ),
    "decoy-boundary-parameter": lambda p: form(
        b"B", [(FILE, p)], b"multipart/form-data; xboundary=zzz; boundary=B"
    ),
    "closing-delimiter-in-a-text-field": lambda p: form(
        b"B", [(TEXT, b"see --B-- here"), (FILE, p)], b"multipart/form-data; boundary=B"
    ),
    "boundary-outside-latin-1": lambda p: form(
        "B€x".encode(), [(FILE, p)], "multipart/form-data; boundary=B€x".encode()
    ),
    "boundary-in-latin-1": lambda p: form(
        "Bé".encode(), [(FILE, p)], "multipart/form-data; boundary=Bé".encode()
    ),
    "multipart-related-base64": lambda p: form(
        b"R",
        [
            (b"Content-Type: application/json", b'{"name": "a.jpg"}'),
            (
                b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64",
                base64.encodebytes(p),
            ),
        ],
        b"multipart/related; boundary=R",
    ),
    "multipart-mixed": lambda p: form(
        b"M", [(b"Content-Type: image/jpeg", p)], b"multipart/mixed; boundary=M"
    ),
    "json-data-url": lambda p: (
        json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(p).decode()}).encode(),
        b"application/json",
    ),
    "json-base64-field": lambda p: (
        json.dumps({"post": {"media": [base64.b64encode(p).decode()]}}).encode(),
        b"application/json",
    ),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_wrapped_listed_picture_is_refused_and_a_clean_one_reaches_the_origin(
    proxy: Proxy, site: Site, wrapper: str
) -> None:
    body, ctype = WRAPPERS[wrapper](encode(CLEAN, quality=85))
    status, answer = post(proxy, body, ctype)
    assert status == 200 and json.loads(answer)["images"] >= 1, (status, answer)  # a real carrier
    before = site.requests
    body, ctype = WRAPPERS[wrapper](encode(LISTED, quality=85))
    status, answer = post(proxy, body, ctype, Accept="application/json")
    assert status == 451, (wrapper, status, answer)
    assert site.requests == before  # not one byte upstream


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_the_listed_picture_as_a_late_frame_of_an_animation_is_refused(
    proxy: Proxy, site: Site, fmt: str
) -> None:
    frames = [draw(700 + i, (160, 120)) for i in range(60)]
    frames[49] = LISTED.resize((160, 120))
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40)
    before = site.requests
    assert post(proxy, data, "application/octet-stream")[0] == 451
    assert site.requests == before


@pytest.mark.parametrize("fmt", ["AVIF", "ICO", "JPEG2000"])
def test_formats_pillow_decodes_are_checked(proxy: Proxy, site: Site, fmt: str) -> None:
    side = (256, 256) if fmt == "ICO" else (320, 240)
    before = site.requests
    assert post(proxy, encode(LISTED.resize(side), fmt), "image/x-unknown")[0] == 451
    assert site.requests == before


def test_a_content_encoded_upload_is_checked_decoded(proxy: Proxy, site: Site) -> None:
    body, ctype = WRAPPERS["multipart-mixed"](encode(LISTED, quality=85))
    before = site.requests
    status, _ = post(proxy, gzip.compress(body), ctype, Content_Encoding="gzip")
    assert status == 451
    assert site.requests == before


def test_an_exact_hash_at_the_end_of_thousands_of_tiny_parts_is_found(
    proxy: Proxy, site: Site
) -> None:
    tiny = encode(draw(5, (8, 8)), "PNG")
    parts = [(FILE, tiny + bytes([i % 251])) for i in range(3000)] + [(FILE, EXACT_FILE)]
    body, ctype = form(b"T", parts, b"multipart/form-data; boundary=T")
    before = site.requests
    assert post(proxy, body, ctype)[0] == 451  # exact hashes first, for every part
    assert site.requests == before
    # Without it, the images past the decoding cap are said to be unchecked, not silent.
    counted = proxy.metric_series("blocklist_images_unchecked_total", reason="too-many-parts")
    body, ctype = form(b"T", parts[:-1], b"multipart/form-data; boundary=T")
    assert post(proxy, body, ctype)[0] == 200  # blocklist_image_uncheckable=pass
    assert (
        proxy.metric_series("blocklist_images_unchecked_total", reason="too-many-parts")
        == counted + 1
    )


# -- bombs ------------------------------------------------------------------------------------


def peak_rss(proxy: Proxy) -> int:
    """The proxy process's peak resident set so far, in bytes (VmHWM)."""
    assert proxy.process is not None
    status = pathlib.Path(f"/proc/{proxy.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def health_answers_meanwhile(proxy: Proxy, busy: threading.Event) -> list[float]:
    """Seconds each /healthz took while ``busy`` is set (bounded: at most 200 probes)."""
    times: list[float] = []
    for _ in range(200):
        if not busy.is_set():
            break
        began = time.monotonic()
        proxy.health()
        times.append(time.monotonic() - began)
    return times


def gzip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
    return buffer.getvalue()


def test_an_encoding_bomb_is_refused_without_inflating_it_whole(
    tmp_path: pathlib.Path, store: str, site: Site, confdir, ca: TestCA
) -> None:
    bomb = gzip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MiB
    proxy = make(
        tmp_path / "strict", store, site, confdir, ca, blocklist_image_uncheckable="refuse"
    )
    with running(proxy):
        before = peak_rss(proxy)
        busy = threading.Event()
        busy.set()
        results: list[int] = []
        sender = threading.Thread(
            target=lambda: results.append(
                post(proxy, bomb, "image/jpeg", Content_Encoding="gzip")[0]
            )
        )
        sender.start()
        probes = health_answers_meanwhile(proxy, busy) if sender.is_alive() else []
        sender.join(60)
        busy.clear()
        assert results == [413]
        assert peak_rss(proxy) - before < 300 << 20, (before, peak_rss(proxy))
        assert all(t < 1.0 for t in probes), probes
        assert proxy.metric_series("blocklist_images_unchecked_total", reason="too-large") >= 1


def test_a_chunked_upload_is_refused_before_it_is_buffered(proxy: Proxy, site: Site) -> None:
    """mitmproxy reads a whole body before it answers, so the refusal kills the flow: the
    proxy stops reading, the client's sends stall (or fail) long before 1 GiB, and none of it
    is kept or forwarded."""
    before_rss, before = peak_rss(proxy), site.requests
    refused = proxy.metric_series("blocklist_images_unchecked_total", reason="unknown-length")
    sent = 0
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/jpeg\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (1 << 20, bytes(1 << 20))
        with contextlib.suppress(OSError):  # a stalled send times out, a closed one fails
            for _ in range(1024):  # up to 1 GiB, until the proxy stops reading
                sock.sendall(chunk)
                sent += 1
    assert sent < 1024, "the proxy read all of it"
    assert site.requests == before
    assert peak_rss(proxy) - before_rss < 300 << 20
    assert (
        proxy.metric_series("blocklist_images_unchecked_total", reason="unknown-length")
        == refused + 1
    )
    wait_for(lambda: proxy.health()[0] == 200, 10, "the proxy to stay healthy")


def h2_post(proxy: Proxy, body: bytes, *, length: bool) -> tuple[str, int | None]:
    """POST ``body`` over HTTP/2 (TLS, ALPN h2) to the reverse proxy; ("response", status)
    or ("reset", None) when the proxy reset the stream or closed the connection."""
    import h2.config
    import h2.connection
    import h2.events

    context = proxy.client_context()
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [
            (":method", "POST"),
            (":path", "/upload"),
            (":scheme", "https"),
            (":authority", HOST),
            ("content-type", "image/jpeg"),
        ]
        if length:
            headers.append(("content-length", str(len(body))))
        conn.send_headers(1, headers)
        assert len(body) < 65535  # the initial window: no flow control needed
        for start in range(0, len(body), 16384):
            end = start + 16384
            conn.send_data(1, body[start:end], end_stream=end >= len(body))
        sock.sendall(conn.data_to_send())
        for _ in range(1000):  # frames until the stream ends one way or the other
            data = sock.recv(65536)
            if not data:
                return "reset", None
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return "response", int(dict(event.headers)[b":status"])
                if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return "reset", None
            sock.sendall(conn.data_to_send())
    raise AssertionError("no answer in 1000 reads")


def test_an_http2_upload_without_a_length_is_refused(proxy: Proxy, site: Site) -> None:
    data = encode(CLEAN, quality=85)
    before = site.requests
    assert h2_post(proxy, data, length=True) == ("response", 200)  # sized: checked, passed
    assert site.requests == before + 1
    refused = proxy.metric_series("blocklist_images_unchecked_total", reason="unknown-length")
    assert h2_post(proxy, data, length=False) == ("reset", None)
    assert site.requests == before + 1
    assert (
        proxy.metric_series("blocklist_images_unchecked_total", reason="unknown-length")
        == refused + 1
    )
