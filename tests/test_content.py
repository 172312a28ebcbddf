"""End to end in reverse mode: a real mitmdump with the addon in front of a real aiohttp site.

Pages the site serves reach the client with their listed links neutralized and every other
byte unchanged (plain, gzip-encoded, chunked, CSS); a forum-style form post and a JSON API
post carrying a listed link are refused with 451 and never reach the site, while posts with
unlisted links pass untouched; a 50 MiB download passes without the proxy holding it, and a
page of a million tags within the scan limit is scanned.
"""

from __future__ import annotations

import gzip
import http.client
import json
import pathlib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from testlab.harness import Proxy, running, synced_store
from testlab.origins import Origin, Origins, TestCA

HOST = "forum.example.net"
SPLASH = f"http://{HOST}/.well-known/blocklist-proxy/blocked?list=sample"
BLOCKED = "about:invalid#blocked"
BIG = 50 * 1024 * 1024

# The page: {N} slots hold a listed URL (neutralized) and {R} slots an unlisted one (kept).
TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Forum \u2603</title>
<link rel="stylesheet" href="{R1}"><link rel=icon href="{RES1}">
<style>body {{ background: url('{RES2}') }} @import "{R2}";</style>
<meta http-equiv="refresh" content="600; url={NAV1}">
</head><body>
<p>Caf\u00e9 <a href="{NAV2}">a listed page</a> and <a href="{R3}">an ordinary one</a>.</p>
<img src="{RES3}" alt=""><img srcset="{R4} 1x, {RES4} 2x">
<iframe src="{NAV3}"></iframe><form action="{NAV4}"><button formaction="{NAV5}">go</button></form>
<video poster="{RES5}" src="{R5}"><track src="{RES6}"></video><audio src="{RES7}"></audio>
<embed src="{RES8}"><object data="{RES9}"></object><script src="{RES10}"></script>
<div style="background-image: url({RES11})">styled</div>
<!-- a comment keeps its {R6} -->
</body></html>
"""
LISTED = [
    "http://blocked.example.com/page.html",
    "HTTP://BLOCKED.EXAMPLE.COM./page.html",
    "//www.blocked.example.com/gallery/x.jpg",
    "http://3221226028/img/photo.jpg",
    "http://blocked.example.com/%70age.html",
    "https://sub.whole-site.blocked.test/a.js",
    "http://r.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html",
    "/gallery/y.png",  # relative: on this host, not listed (the page is on forum.example.net)
]
UNLISTED = [
    "http://blocked.example.com/other.html",
    "/static/site.css",
    "http://example.org/",
    "photo.jpg",
    "http://192.0.2.45/img/photo.jpg",
    "http://blocked.example.com/page.html",  # in a comment: a browser never fetches it
]


def slots() -> tuple[dict[str, str], dict[str, str]]:
    """Values for the template as served, and as the client must receive it."""
    served: dict[str, str] = {}
    expected: dict[str, str] = {}
    listed = [u for u in LISTED if not u.startswith("/")]
    for i in range(1, 6):
        served[f"NAV{i}"] = listed[(i - 1) % len(listed)]
        expected[f"NAV{i}"] = SPLASH
    for i in range(1, 12):
        served[f"RES{i}"] = listed[(i + 2) % len(listed)]
        expected[f"RES{i}"] = BLOCKED
    for i in range(1, 7):
        served[f"R{i}"] = expected[f"R{i}"] = UNLISTED[i - 1]
    return served, expected


@dataclass
class Site:
    origin: Origin
    posts: list[tuple[str, bytes]] = field(default_factory=list)


def site_app(site_posts: list[tuple[str, bytes]]) -> web.Application:
    served, _ = slots()
    page = TEMPLATE.format(**served).encode("utf-8")
    css = f"a {{ background: url({LISTED[0]}) }}\nb {{ background: url(/ok.png) }}\n".encode()
    tags = b"<i>" * 1_000_000 + f'<a href="{LISTED[0]}">x</a>'.encode()

    async def get(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "page.html":
            return web.Response(body=page, content_type="text/html", charset="utf-8")
        if name == "gzip.html":
            return web.Response(
                body=gzip.compress(page),
                headers={"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"},
            )
        if name == "chunked.html":
            response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(page), 100):
                await response.write(page[start : start + 100])
            await response.write_eof()
            return response
        if name == "style.css":
            return web.Response(body=css, content_type="text/css")
        if name == "tags.html":
            return web.Response(body=tags, content_type="text/html")
        if name in ("big.bin", "big.html"):
            kind = "application/octet-stream" if name == "big.bin" else "text/html"
            response = web.StreamResponse(headers={"Content-Type": kind})
            response.content_length = BIG
            await response.prepare(request)
            chunk = (b"<a href=" + LISTED[0].encode() + b">x</a>").ljust(1024 * 1024, b" ")
            for _ in range(BIG // len(chunk)):
                await response.write(chunk)
            await response.write_eof()
            return response
        raise web.HTTPNotFound()

    async def post(request: web.Request) -> web.Response:
        site_posts.append((request.path, await request.read()))
        return web.json_response({"accepted": True})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/{name}", get)
    app.router.add_post("/{tail:.*}", post)
    return app


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[Site]:
    origins = Origins(ca)
    posts: list[tuple[str, bytes]] = []
    try:
        yield Site(origins.start("site", app=site_app(posts)), posts)
    finally:
        origins.close()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, site: Site, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("reverse")
    store = synced_store(directory)
    target = f"127.0.0.1:{site.origin.port}"
    proxy = Proxy(
        directory,
        store=store,
        routes={target: site.origin.port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
        options={"blocklist_upload_paths": "/forum/*,/api/*"},
    )
    with running(proxy):
        yield proxy


def request(
    proxy: Proxy, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def expected_page() -> bytes:
    return TEMPLATE.format(**slots()[1]).encode("utf-8")


@pytest.mark.parametrize("path", ["/page.html", "/gzip.html", "/chunked.html"])
def test_listed_links_in_pages_are_neutralized_and_nothing_else_changes(
    proxy: Proxy, path: str
) -> None:
    status, headers, body = request(proxy, "GET", path, headers={"Accept-Encoding": "gzip"})
    assert status == 200
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    assert body == expected_page()


def test_css_files(proxy: Proxy) -> None:
    status, _, body = request(proxy, "GET", "/style.css")
    assert status == 200
    assert (
        body == f"a {{ background: url({BLOCKED}) }}\nb {{ background: url(/ok.png) }}\n".encode()
    )


def test_neutralized_links_lead_to_the_splash_page(proxy: Proxy) -> None:
    path = urllib.parse.urlsplit(SPLASH)
    status, headers, body = request(
        proxy, "GET", f"{path.path}?{path.query}", headers={"Accept": "text/html"}
    )
    assert status == 451
    assert headers["Link"].endswith('rel="blocked-by"')
    assert b"Access denied" in body
    # Anyone can send this path: what it reflects is escaped.
    status, _, body = request(
        proxy,
        "GET",
        "/.well-known/blocklist-proxy/blocked?list=%3Cscript%3Ealert(1)%3C/script%3E",
        headers={"Accept": "text/html"},
    )
    assert status == 451
    assert b"<script>" not in body


def test_links_are_counted_and_logged(proxy: Proxy) -> None:
    links, logged = proxy.metric("blocklist_links_total"), len(proxy.blocks())
    request(proxy, "GET", "/page.html")
    assert proxy.metric("blocklist_links_total") == links + 16  # the page's 16 listed links
    lines = proxy.blocks()[logged:]
    assert len(lines) == 16
    assert all((b["where"], b["action"]) == ("page", "neutralize") for b in lines), lines
    assert "blocked.example.com" not in proxy.blocks_path.read_text()


def test_a_page_of_a_million_tags_within_the_limit_is_scanned(proxy: Proxy) -> None:
    status, _, body = request(proxy, "GET", "/tags.html")
    assert status == 200
    assert body == b"<i>" * 1_000_000 + f'<a href="{SPLASH}">x</a>'.encode()


@pytest.mark.parametrize("path", ["/big.bin", "/big.html"])
def test_50_mib_passes_without_being_held(proxy: Proxy, path: str) -> None:
    assert proxy.process is not None
    status_file = pathlib.Path(f"/proc/{proxy.process.pid}/status")

    def peak_rss() -> int:
        line = next(x for x in status_file.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = peak_rss()
    status, _, body = request(proxy, "GET", path)
    assert status == 200
    assert len(body) == BIG
    assert body.startswith(f"<a href={LISTED[0]}>".encode())  # past the limit: unscanned
    assert peak_rss() - before < BIG // 2  # streamed, never held whole


def test_a_form_post_with_a_listed_link_is_refused_before_the_site(
    proxy: Proxy, site: Site
) -> None:
    before = len(site.posts)
    message = "Look: [url=http://BLOCKED.example.com./page.html]here[/url]"
    form = urllib.parse.urlencode({"subject": "hello", "message": message}).encode()
    status, headers, body = request(
        proxy,
        "POST",
        "/forum/post",
        form,
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
    )
    assert status == 451
    assert headers["Content-Type"].startswith("text/html")
    assert b"Submission not accepted" in body
    assert b"blocked.example.com" not in body.lower()
    assert len(site.posts) == before
    assert any(b["where"] == "upload" for b in proxy.blocks())


@pytest.mark.parametrize(
    "message",
    [
        "Please take down http://blocked.example.com/page.html.",
        "请看blocked.example.com/page.html。谢谢",
        "\u00abhttps://blocked.example.com/page.html\u00bb!",
    ],
)
def test_a_listed_link_in_prose_is_refused_with_its_punctuation(
    proxy: Proxy, site: Site, message: str
) -> None:
    before = len(site.posts)
    form = urllib.parse.urlencode({"message": message}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = request(proxy, "POST", "/forum/post", form, headers)
    assert status == 451
    assert len(site.posts) == before
    near = urllib.parse.urlencode({"message": message.replace("page.html", "page.htm")})
    status, _, _ = request(proxy, "POST", "/forum/post", near.encode(), headers)
    assert status == 200
    assert len(site.posts) == before + 1


def test_a_json_api_post_with_a_listed_link_is_refused_before_the_site(
    proxy: Proxy, site: Site
) -> None:
    before = len(site.posts)
    post = {"thread": 7, "body": {"text": "see //blocked.example.com/%70age.html"}}
    status, _, body = request(
        proxy, "POST", "/api/posts", json.dumps(post).encode(), {"Content-Type": "application/json"}
    )
    assert status == 451
    doc = json.loads(body)
    assert doc["error"] == "unavailable_for_legal_reasons"
    assert doc["list"] == "sample"
    assert len(site.posts) == before


def test_posts_with_unlisted_links_pass_untouched(proxy: Proxy, site: Site) -> None:
    form = urllib.parse.urlencode({"message": "http://blocked.example.com/other.html"}).encode()
    document = json.dumps({"text": "https://example.org/page.html"}).encode()
    for path, body, kind in [
        ("/forum/post", form, "application/x-www-form-urlencoded"),
        ("/api/posts", document, "application/json"),
        ("/elsewhere/post", b"message=http://blocked.example.com/page.html", "text/plain"),
    ]:
        status, _, _ = request(proxy, "POST", path, body, {"Content-Type": kind})
        assert status == 200
        assert site.posts[-1] == (path, body)  # byte for byte; /elsewhere is not guarded


@pytest.mark.parametrize("action", ["report", "off"])
def test_report_only_and_off_leave_pages_as_served(
    make_proxy, site: Site, tmp_path: pathlib.Path, action: str
) -> None:
    store = synced_store(tmp_path)
    target = f"127.0.0.1:{site.origin.port}"
    proxy = make_proxy(
        store,
        mode=f"reverse:http://{target}",
        routes={target: site.origin.port},
        options={"blocklist_scan_pages": action},
    )
    with running(proxy):
        status, _, body = request(proxy, "GET", "/page.html")
        assert status == 200
        assert body == TEMPLATE.format(**slots()[0]).encode("utf-8")  # as the site served it
        reported = [b for b in proxy.blocks() if b["where"] == "page"]
        if action == "report":
            assert len(reported) == 16 and all(b["action"] == "report" for b in reported)
            assert proxy.metric("blocklist_links_total") == 16
        else:
            assert reported == []
            assert proxy.metric("blocklist_pages_scanned_total") == 0
