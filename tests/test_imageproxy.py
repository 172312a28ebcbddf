"""End to end: a real mitmdump with the addon in reverse mode in front of a real aiohttp
upload site, enforcing an image hash list synced by the real ``blocklist-sync`` (and no URL
list at all: a hash list alone is enough to start)."""

from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from testlab.harness import Proxy, running, sync, wait_for
from testlab.images import (
    bomb_png,
    draw,
    encode,
    md5,
    png_declaring,
    reference_pdq,
    variants,
    zip_file,
)
from testlab.origins import Origin, Origins, TestCA

HOST = "uploads.example.net"
LISTED = draw(1)
EXACT_FILE = zip_file()
CLEAN = [encode(draw(500 + i, (400, 300)), quality=85) for i in range(3)]
LATER = draw(2)


@dataclass
class Site:
    origin: Origin
    moderation: Origin | None = None  # the webhook's endpoint, on its own server
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)


def site_app(site: Site) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        site.uploads.append((request.path, await request.read()))
        return web.json_response({"stored": True})

    async def moderation(request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == "Bearer s3cret-token"
        site.events.append(await request.json())
        return web.Response(status=204)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/moderation", moderation)
    app.router.add_route("*", "/{tail:.*}", upload)
    return app


def feed(directory: pathlib.Path, *extra: dict[str, str]) -> pathlib.Path:
    records = [
        {"id": "iwf-1001", "pdq": reference_pdq(LISTED), "category": "A"},
        {"id": "iwf-1002", "md5": md5(EXACT_FILE)},
        {"id": "iwf-1003", "sha1": "0" * 40},
        *extra,
    ]
    path = directory / "hashes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@contextlib.contextmanager
def upload_site(ca: TestCA) -> Iterator[Site]:
    """The upload site and its moderation endpoint (the webhook's target), stopped after."""
    origins = Origins(ca)
    site = Site(Origin("placeholder"))
    try:
        site.origin = origins.start("uploads", app=site_app(site))
        site.moderation = origins.start("moderation", app=site_app(site))
        yield site
    finally:
        origins.close()


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[Site]:
    with upload_site(ca) as started:
        yield started


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pathlib.Path]:
    directory = tmp_path_factory.mktemp("hash-store")
    store = (directory / "store").as_uri()
    sync(store, feed(directory), name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    return store, directory


def make(directory: pathlib.Path, store: str, site: Site, confdir, ca, **options: str) -> Proxy:
    assert site.moderation is not None
    target = f"127.0.0.1:{site.origin.port}"
    token = directory / "webhook.token"
    directory.mkdir(parents=True, exist_ok=True)
    token.write_text("s3cret-token\n")
    token.chmod(0o600)  # the proxy refuses a token file others can read
    return Proxy(
        directory,
        store=store,
        routes={target: site.origin.port},
        confdir=confdir,
        ca=ca,
        mode=f"reverse:http://{target}",
        options={
            "blocklist_image_webhook": f"http://127.0.0.1:{site.moderation.port}/moderation",
            "blocklist_image_webhook_token_file": str(token),
            **options,
        },
    )


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory, store, site: Site, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Proxy]:
    with running(make(tmp_path_factory.mktemp("image-proxy"), store[0], site, confdir, ca)) as p:
        yield p


def multipart(
    files: list[tuple[str, bytes]], text: dict[str, str] | None = None
) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in (text or {}).items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for number, (filename, data) in enumerate(files):
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file{number}"; '
                f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(
    proxy: Proxy, path: str, body: bytes, content_type: str, method: str = "POST", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request(
            method, path, body=body, headers={"Host": HOST, "Content-Type": content_type, **headers}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_multipart_with_one_listed_file_of_three_is_refused_and_the_site_gets_nothing(
    proxy: Proxy, site: Site
) -> None:
    before = (len(site.uploads), site.origin.connections)
    files = [("a.jpg", CLEAN[0]), ("b.jpg", variants(LISTED)["jpeg-q40"]), ("c.jpg", CLEAN[1])]
    body, kind = multipart(files, {"title": "holiday"})
    status, headers, page = post(proxy, "/forum/upload", body, kind, Accept="text/html")
    assert status == 451, page
    assert headers["Content-Type"].startswith("text/html")
    assert b"matches a list of known child sexual abuse images" in page
    assert (len(site.uploads), site.origin.connections) == before  # not one byte upstream
    block = proxy.blocks()[-1]
    assert block["where"] == "image" and block["entry"] == "iwf-1001" and block["kind"] == "pdq"
    # 10 bits: what tests/test_hashes.py works out by brute force for this edit.
    assert block["list"] == "hotline" and block["distance"] == 10
    event = wait_for(
        lambda: [e for e in site.events if e["reference"] == block["reference"]], 30, "the webhook"
    )[0]  # type: ignore[index]
    assert event["entry"] == "iwf-1001" and event["kind"] == "pdq"


@pytest.mark.parametrize(
    ("edit", "distance"),
    # The distances tests/test_hashes.py works out by brute force for these edits.
    [
        ("half-size", 10),
        ("brighter-1.2", 12),
        ("greyscale", 10),
        ("cropped-2%", 18),
        ("mirrored", 6),
        ("heic", 10),
    ],
)
def test_a_listed_image_as_a_raw_api_upload_gets_json(
    proxy: Proxy, site: Site, edit: str, distance: int
) -> None:
    before = len(site.uploads)
    status, headers, body = post(
        proxy, "/api/v1/media", variants(LISTED)[edit], "application/octet-stream", method="PUT",
        Accept="application/json",
    )  # fmt: skip
    assert status == 451, body
    doc = json.loads(body)
    assert doc["error"] == "unavailable_for_legal_reasons" and doc["list"] == "hotline"
    assert headers["Cache-Control"] == "no-store" and "blocked-by" in headers["Link"]
    assert len(site.uploads) == before
    block = proxy.blocks()[-1]
    assert (block["entry"], block["kind"], block["distance"]) == ("iwf-1001", "pdq", distance)


def test_clean_uploads_pass_untouched(proxy: Proxy, site: Site) -> None:
    body, kind = multipart([(f"{i}.jpg", data) for i, data in enumerate(CLEAN)])
    status, _, _ = post(proxy, "/forum/upload", body, kind)
    assert status == 200
    assert site.uploads[-1] == ("/forum/upload", body)
    for data in (encode(LATER), b'{"caption": "hello"}', EXACT_FILE[:-1]):
        status, _, _ = post(proxy, "/api/v1/media", data, "application/octet-stream")
        assert status == 200 and site.uploads[-1] == ("/api/v1/media", data)


def test_an_exact_hash_blocks_the_identical_file_only(proxy: Proxy, site: Site) -> None:
    body, kind = multipart([("archive.jpg", EXACT_FILE)])  # a zip named .jpg
    status, _, _ = post(proxy, "/forum/upload", body, kind, Accept="application/json")
    assert status == 451
    block = proxy.blocks()[-1]
    assert block["entry"] == "iwf-1002" and block["kind"] == "md5" and block["distance"] == 0
    body, kind = multipart([("archive.jpg", EXACT_FILE + b"\n")])
    assert post(proxy, "/forum/upload", body, kind)[0] == 200


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bomb", bomb_png(), "too-large"),
        ("truncated", encode(LISTED, quality=90)[:20000], "truncated"),
        ("huge-declared", png_declaring(100_000, 100_000), "too-large"),
    ],
)
def test_hostile_images_pass_logged_and_the_proxy_stays_up(
    proxy: Proxy, site: Site, name: str, data: bytes, reason: str
) -> None:
    before = proxy.metric("blocklist_images_unchecked_total")
    why = proxy.metric_series("blocklist_images_unchecked_total", reason=reason)
    status, _, _ = post(proxy, "/api/v1/media", data, "image/png")
    assert status == 200, name
    assert site.uploads[-1] == ("/api/v1/media", data)
    assert proxy.metric("blocklist_images_unchecked_total") == before + 1
    # Counted under this file's reason (another test's file may have left the same label).
    assert proxy.metric_series("blocklist_images_unchecked_total", reason=reason) == why + 1
    assert proxy.health()[0] == 200


def test_health_and_metrics_show_the_hash_list(proxy: Proxy) -> None:
    before = proxy.metric("blocklist_uploads_checked_total")
    assert post(proxy, "/api/v1/media", CLEAN[0], "image/jpeg")[0] == 200
    status, doc = proxy.health()
    assert status == 200 and doc["status"] == "ok"
    assert doc["hashes"]["entries"] == 3  # type: ignore[index]
    assert proxy.metric("blocklist_hashes_loaded") == 1
    assert proxy.metric("blocklist_list_loaded") == 0  # no URL list: the hash list alone
    assert proxy.metric("blocklist_uploads_checked_total") == before + 1  # this test's upload


def test_a_new_version_is_followed_and_kept_as_the_last_good_copy(
    tmp_path: pathlib.Path, site: Site, confdir: pathlib.Path, ca: TestCA
) -> None:
    # A store and a proxy of its own: the module's list stays as the other tests expect it.
    url = (tmp_path / "store").as_uri()
    sync(url, feed(tmp_path), name="hotline", data_dir=tmp_path / "data", fmt="hashes-jsonl")
    proxy = make(tmp_path / "following", url, site, confdir, ca)
    with running(proxy):
        later = encode(LATER, quality=80)
        assert post(proxy, "/api/v1/media", later, "image/jpeg")[0] == 200
        sync(
            url,
            feed(tmp_path, {"id": "iwf-2001", "pdq": reference_pdq(LATER)}),
            name="hotline",
            data_dir=tmp_path / "data",
            fmt="hashes-jsonl",
        )
        wait_for(lambda: proxy.health()[1]["hashes"]["entries"] == 4, 30, "the new version")  # type: ignore[index]
        status, _, answer = post(
            proxy, "/api/v1/media", later, "image/jpeg", Accept="application/json"
        )
        assert status == 451 and json.loads(answer)["list"] == "hotline"
        assert proxy.blocks()[-1]["entry"] == "iwf-2001"
        copy = proxy.workdir / "lastgood-hashes.bin"
        assert copy.exists() and copy.stat().st_mode & 0o077 == 0


def test_refuse_policy_and_start_from_the_last_good_copy(
    tmp_path: pathlib.Path, store, site: Site, confdir: pathlib.Path, ca: TestCA
) -> None:
    proxy = make(
        tmp_path / "strict", store[0], site, confdir, ca, blocklist_image_uncheckable="refuse"
    )
    with running(proxy):
        assert post(proxy, "/api/v1/media", bomb_png(), "image/png")[0] == 413
        assert post(proxy, "/api/v1/media", encode(LISTED)[:20000], "image/jpeg")[0] == 422
        assert post(proxy, "/api/v1/media", CLEAN[2], "image/jpeg")[0] == 200
        wait_for((tmp_path / "strict" / "lastgood-hashes.bin").exists, 30, "the local copy")
    # The store is gone: the proxy starts on its last-known-good copy of the hash list.
    gone = make(tmp_path / "strict", (tmp_path / "nowhere").as_uri(), site, confdir, ca)
    with running(gone):
        assert post(gone, "/api/v1/media", variants(LISTED)["jpeg-q40"], "image/jpeg")[0] == 451
        assert gone.health()[1]["hashes"]["source"] == "last-good"  # type: ignore[index]


def test_the_operators_guide_self_test(
    tmp_path: pathlib.Path, site: Site, confdir: pathlib.Path, ca: TestCA
) -> None:
    """docs/operators-guide.md, "Refusing known abuse images": a config with the hotline's
    hash feed and the shipped self-test list, the real sync, then the project's screenshot
    and a smaller copy of it uploaded as curl -F does: both refused, the site gets nothing."""
    import io
    import subprocess

    from PIL import Image

    from testlab.harness import ROOT, VENV_BIN

    config = tmp_path / "sync.toml"
    config.write_text(
        f'store = "{(tmp_path / "store").as_uri()}"\n'
        f'[feeds.iwf-hashes]\nurl = "{feed(tmp_path).as_uri()}"\nformat = "hashes-jsonl"\n'
        "[feeds.selftest-hashes]\n"
        f'url = "{(ROOT / "samples" / "selftest-hashes.jsonl").as_uri()}"\n'
        'format = "hashes-jsonl"\nlist = "selftest"\n'
    )
    done = subprocess.run(
        [str(VENV_BIN / "blocklist-sync"), "--config", str(config)],
        capture_output=True, text=True, timeout=120,
        env={"BLOCKLIST_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "activated hash list version 1, 4 entries" in done.stdout
    screenshot = (ROOT / "docs" / "splash.png").read_bytes()
    copy = io.BytesIO()
    Image.open(io.BytesIO(screenshot)).convert("RGB").resize((300, 300)).save(
        copy, "JPEG", quality=60
    )
    proxy = make(tmp_path / "guide", (tmp_path / "store").as_uri(), site, confdir, ca)
    with running(proxy):
        before = len(site.uploads)
        body, kind = multipart([("splash.png", screenshot)])
        assert post(proxy, "/upload", body, kind)[0] == 451
        body, kind = multipart([("copy.jpg", copy.getvalue())])
        status, _, answer = post(proxy, "/upload", body, kind, Accept="application/json")
        assert status == 451 and json.loads(answer)["list"] == "selftest"
        assert len(site.uploads) == before
        blocks = proxy.blocks()
        assert [(b["entry"], b["kind"]) for b in blocks] == [
            ("selftest-image", "md5"),
            ("selftest-image", "pdq"),
        ]
