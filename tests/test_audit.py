"""Confidentiality audit: after a sync and traffic that hits listed URLs, nothing the product
wrote holds a listed URL, host or path in plaintext: every Redis key and value, every file
of the data directories (store, last-known-good copy), the proxy's log, the block log and
what its status port serves (the status page, /healthz, /metrics).
The sync runs with diversion enabled and ``blocklist-divert resolve`` runs after it, so the
store also holds the hostnames (encrypted), the diversion set, the resolver's memory and
its last run: no hostname may show there either. The set necessarily lists addresses, so
the IP-literal entry's address is allowed in a diversion set and nowhere else.

The traffic covers every way a listed URL reaches the proxy: plain HTTP and its evasion
spellings, embedded in a redirector URL, HTTPS to a listed page (decrypted), CONNECT and
TLS to a host listed whole (refused), a suppressed entry, and a reload (waited for).

The audit can fail: with ``blocklist_log_url`` on it finds the URLs in the block log, and
with ``blocklist_log_connections`` on it finds the hosts in the proxy's log.
"""

from __future__ import annotations

import http.client
import pathlib
import ssl
import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis

from blocklist_addon.lists import hostkey
from testlab.dnsserver import DNSServer
from testlab.harness import SAMPLE_FEED, VENV_BIN, Proxy, feed_with, running, sync, wait_for

#: What must never appear: the sample feed's hosts and paths, in any case.
NEEDLES = [
    b"blocked.example.com",
    b"whole-site.blocked.test",
    b"192.0.2.44",
    b"www.example.org",
    b"fresh.example.net",
    b"page.html",
    b"gallery/",
    b"img/photo",
    b"listed/page",
    b"new.html",
]


#: The hosts of the sample feed (and the fresh one), which the diversion resolves.
HOSTS = {
    "blocked.example.com": "192.0.2.10",
    "whole-site.blocked.test": "192.0.2.11",
    "www.example.org": "203.0.113.12",
    "fresh.example.net": "203.0.113.13",
}
DIVERSION_SET = b'{"format":"blocklist-divert-set"'


def resolve_diversion(store: str, key: pathlib.Path, dns: DNSServer) -> str:
    """The real ``blocklist-divert resolve``; its output (checked for hostnames too)."""
    for host, address in HOSTS.items():
        dns.set(host, a=[address])
    command = [
        str(VENV_BIN / "blocklist-divert"), "--store", store, "--key-file", str(key),
        "resolve", "--resolver", dns.address,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published diversion set" in done.stdout
    return done.stdout + done.stderr


def needles_in(blob: bytes) -> set[bytes]:
    """The needles ``blob`` holds (a diversion set holds the listed address by design)."""
    lowered = blob.lower()
    allowed = {b"192.0.2.44"} if blob.startswith(DIVERSION_SET) else set()
    return {needle for needle in NEEDLES if needle not in allowed and needle in lowered}


def check(blob: bytes, where: object) -> None:
    assert not needles_in(blob), (needles_in(blob), where, blob[:200])


def redis_contents(port: int) -> Iterator[bytes]:
    client = redis.Redis(port=port)
    try:
        for key in client.scan_iter(count=1000):
            yield key
            yield from redis_values(client, key)
    finally:
        client.close()


def redis_values(client: redis.Redis, key: bytes) -> Iterator[bytes]:
    """Everything stored under ``key``: hash fields and values, members, the string."""
    kind = client.type(key)
    if kind == b"string":
        yield client.get(key) or b""
    elif kind == b"zset":
        yield from client.zrange(key, 0, -1)
    elif kind == b"hash":
        for field, value in client.hgetall(key).items():
            yield field
            yield value
    elif kind in (b"list", b"set"):
        yield from client.lrange(key, 0, -1) if kind == b"list" else client.smembers(key)
    else:
        raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")


def files(*roots: pathlib.Path) -> Iterator[tuple[pathlib.Path, bytes]]:
    for root in roots:
        for path in root.rglob("*"):
            yield path, str(path.relative_to(root)).encode()
            if path.is_file():
                yield path, path.read_bytes()


def audit(
    make_proxy: Callable[..., Proxy],
    redis_factory,
    tmp_path: pathlib.Path,
    options: dict[str, str] | None = None,
) -> dict[str, set[bytes]]:
    """Sync, send blocked traffic of every kind, suppress, reload; then every needle found,
    by where it was found (``redis``, ``files``, ``proxy log``, ``block log``, ``status page``)."""
    server = redis_factory()
    data = tmp_path / "sync-data"
    hostkey.generate(tmp_path / "divert.key")
    env = {
        "BLOCKLIST_DATA_DIR": str(data),
        "BLOCKLIST_DIVERT_KEY_FILE": str(tmp_path / "divert.key"),
    }
    sync(server.url, SAMPLE_FEED, data_dir=data, env=env)
    proxy = make_proxy(server.url, workdir=tmp_path / "proxy", options=options)
    with running(proxy):
        for url in [
            "http://blocked.example.com/page.html",
            "http://BLOCKED.EXAMPLE.COM./gallery/../page.html?x=1",
            "http://3221226028/img/photo.jpg",
            "http://www.example.org/listed/page?id=42",
            "http://redirect.example.net/?u=http%3A%2F%2Fblocked.example.com%2Fpage.html",
            "http://whole-site.blocked.test/any",
        ]:
            assert proxy.get(url, headers={"Accept": "text/html"}).status == 451
        response, _ = proxy.https_get("blocked.example.com", "/gallery/photo/2.jpg")
        assert response.status == 451
        # A client without the proxy's CA: the handshake fails (decrypted, as listed).
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            proxy.https_get("whole-site.blocked.test", "/x", trust_mitm=False)

        # An operator suppresses one entry (by the id in the block log), and a new version
        # (one more entry) is synced and loaded.
        entry = str(proxy.blocks()[0]["entry"])
        suppress = subprocess.run(
            [str(VENV_BIN / "blocklist-sync"), "--store", server.url, "suppress", entry],
            capture_output=True, text=True, timeout=60, env={**env, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert suppress.returncode == 0, suppress.stderr
        fresh = "http://fresh.example.net/new.html"
        sync(server.url, feed_with(tmp_path, fresh), data_dir=data, env=env)
        wait_for(lambda: proxy.get(fresh).status == 451, 10, "the new version to be enforced")
        assert len(proxy.blocks()) == 8  # the TLS hello of a client without the CA makes none

        with DNSServer() as dns:
            output = resolve_diversion(server.url, tmp_path / "divert.key", dns)
        # The status port's page (with the diversion set just published), health and metrics.
        status_page = [proxy._status(path)[1] for path in ("/", "/healthz", "/metrics")]
        assert b"<h2>Diversion set</h2>" in status_page[0]
    places: dict[str, list[bytes]] = {
        "resolve output": [output.encode()],
        "status page": status_page,
        "redis": list(redis_contents(server.port)),
        "files": [
            blob
            for path, blob in files(data, tmp_path / "proxy")
            if path not in (proxy.log_path, proxy.blocks_path)
        ],
        "proxy log": [proxy.log_path.read_bytes()],
        "block log": [proxy.blocks_path.read_bytes()],
    }
    assert len(places["redis"]) > 10 and len(places["files"]) >= 2
    assert any(blob.startswith(DIVERSION_SET) for blob in places["redis"])
    assert any(blob.startswith(b"blocklist:divert:") for blob in places["redis"])  # hosts kept
    assert (tmp_path / "proxy" / "lastgood.bin").exists()
    found: dict[str, set[bytes]] = {}
    for place, blobs in places.items():
        for blob in blobs:
            if leaked := needles_in(blob):
                found.setdefault(place, set()).update(leaked)
    return found


def test_no_listed_url_anywhere_after_sync_and_traffic(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    assert audit(make_proxy, redis_factory, tmp_path) == {}


def test_the_audit_catches_url_logging(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """The README's claim: turning ``blocklist_log_url`` on makes the audit fail."""
    found = audit(make_proxy, redis_factory, tmp_path, {"blocklist_log_url": "true"})
    assert set(found) == {"block log"}
    assert {b"blocked.example.com", b"page.html", b"fresh.example.net"} <= found["block log"]


def test_the_audit_catches_connection_logging(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """... and so does ``blocklist_log_connections``: mitmproxy's own lines name hosts."""
    found = audit(make_proxy, redis_factory, tmp_path, {"blocklist_log_connections": "true"})
    assert set(found) == {"proxy log"}
    assert b"whole-site.blocked.test" in found["proxy log"]


def test_no_hostname_in_the_file_store_with_diversion(tmp_path: pathlib.Path) -> None:
    """The embedded store with diversion enabled: the kept hostnames are encrypted."""
    hostkey.generate(tmp_path / "divert.key")
    store = tmp_path / "store"
    env = {"BLOCKLIST_DIVERT_KEY_FILE": str(tmp_path / "divert.key")}
    sync(store.as_uri(), SAMPLE_FEED, data_dir=tmp_path / "data", env=env)
    sync(
        store.as_uri(),
        feed_with(tmp_path, "http://fresh.example.net/new.html"),
        data_dir=tmp_path / "data",
        env=env,
    )
    with DNSServer() as dns:
        output = resolve_diversion(store.as_uri(), tmp_path / "divert.key", dns)
    check(output.encode(), "resolve output")
    written = list(files(store, tmp_path / "data"))
    assert (store / "divert" / "blob" / "hosts").is_file()
    assert (store / "divert" / "blob" / "resolve-memory").is_file()
    assert (store / "divert" / "state" / "last-run.json").is_file()
    assert any(blob.startswith(DIVERSION_SET) for _, blob in written)
    for path, blob in written:
        check(blob, path)


def test_no_listed_hash_in_any_log_and_hash_lists_stay_private(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """Image hash lists: the store holds the hashes themselves (a PDQ hash is compared by
    distance, so it cannot be stored as a digest), so they live only under the hash list's
    own keys and in 0600 files; no log, block line or command output ever shows one."""
    import http.client
    import json

    from testlab.images import draw, encode, md5, reference_pdq, variants

    listed, exact = draw(3), encode(draw(4), "PNG")
    records = [
        {"id": "audit-1", "pdq": reference_pdq(listed)},
        {"id": "audit-2", "md5": md5(exact), "sha1": "ab" * 20},
        {"id": "audit-3", "sha256": "cd" * 32},
    ]
    feed = tmp_path / "hashes.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in records))
    secrets = [str(v).lower() for r in records for k, v in r.items() if k != "id"]

    server = redis_factory()
    data = tmp_path / "sync-data"
    sync(server.url, feed, name="hotline", data_dir=data, fmt="hashes-jsonl")
    proxy = make_proxy(server.url, workdir=tmp_path / "proxy")
    outputs = []
    with running(proxy):
        for body in (variants(listed)["jpeg-q40"], exact):
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
            conn.request("POST", "http://uploads.example.net/up", body=body)
            assert conn.getresponse().status == 451  # forward mode: leaving a school
            conn.close()
        env = {"BLOCKLIST_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
        for argv in (["suppress", "--kind", "hashes", "audit-3"], ["status", "--json"]):
            done = subprocess.run(
                [str(VENV_BIN / "blocklist-sync"), "--store", server.url, *argv],
                capture_output=True, text=True, timeout=60, env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout + done.stderr)
        assert len(proxy.blocks()) == 2

    texts = [proxy.log_path.read_text(), proxy.blocks_path.read_text(), *outputs]
    for text in texts:
        for secret in secrets:
            assert secret not in text.lower(), secret
    # Raw hashes only under the hash list's own keys.
    raw = [bytes.fromhex(s) for s in secrets]
    client = redis.Redis(port=server.port)
    try:
        for key in client.scan_iter(count=1000):
            if not key.startswith(b"blocklist:hashes:"):
                value = b"".join(redis_values(client, key))
                assert not any(r in value for r in raw), key
    finally:
        client.close()
    # The proxy's copy of the hash list is 0600 (the file store's own files: test_hashsync).
    copies = [p for p in (tmp_path / "proxy").rglob("*hashes*") if p.is_file()]
    assert copies, "no last-known-good copy of the hash list"
    for path in copies:
        assert path.stat().st_mode & 0o077 == 0, path
