"""The files in deploy/ work as shipped.

The hardened Redis (``deploy/redis/redis.conf`` and ``users.acl``) is started for real, with
test passwords in place of the CHANGE-ME ones and the test's own port and directories: the sync
publishes as ``blocklist-sync``, a proxy enforces and follows new versions as
``blocklist-proxy``, and neither user (nor an anonymous client) can do more than its role.
"""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Callable

import pytest
import redis
from harness import ROOT, Proxy, assert_splash, feed_with, running, sync, wait_for

DEPLOY = ROOT / "deploy"


def password_file(directory: pathlib.Path, user: str) -> tuple[str, pathlib.Path]:
    password = secrets.token_hex(16)
    path = directory / f"{user}.password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password, path


def test_hardened_redis_serves_each_role_and_nothing_more(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    sync_password, sync_file = password_file(tmp_path, "sync")
    proxy_password, proxy_file = password_file(tmp_path, "proxy")
    acl = (DEPLOY / "redis" / "users.acl").read_text()
    assert acl.count(">CHANGE-ME-") == 2
    acl = acl.replace("CHANGE-ME-sync", sync_password).replace("CHANGE-ME-proxy", proxy_password)
    (tmp_path / "users.acl").write_text(acl)
    # The file as shipped, but for the paths of a real install (Redis chdirs to dir at once).
    conf = [
        f"dir {tmp_path}" if line.startswith("dir ") else
        f"aclfile {tmp_path / 'users.acl'}" if line.startswith("aclfile ") else line
        for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines()
    ]  # fmt: skip
    assert sum(line.startswith(("dir ", "aclfile ")) for line in conf) == 2
    (tmp_path / "redis.conf").write_text("\n".join(conf) + "\n")
    server = redis_factory(config=tmp_path / "redis.conf")
    where = f"127.0.0.1:{server.port}/0"

    data = tmp_path / "data"
    as_sync = {"BLOCKLIST_REDIS_PASSWORD_FILE": str(sync_file)}
    sync(f"redis://blocklist-sync@{where}", feed_with(tmp_path), data_dir=data, env=as_sync)

    proxy = make_proxy(
        f"redis://blocklist-proxy@{where}", env={"BLOCKLIST_REDIS_PASSWORD_FILE": str(proxy_file)}
    )
    with running(proxy):
        assert_splash(proxy.get("http://blocked.example.com/page.html"), page=False)
        fresh = "http://fresh.example.net/new.html"
        sync(
            f"redis://blocklist-sync@{where}",
            feed_with(tmp_path, fresh),
            data_dir=data,
            env=as_sync,
        )
        wait_for(lambda: proxy.get(fresh).status == 451, 5, "the new version via pub/sub")
        assert proxy.health()[1]["status"] == "ok"
        assert proxy.metric("blocklist_store_errors_total") == 0

    anonymous = redis.Redis(port=server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("blocklist:active")
    as_proxy = redis.Redis(port=server.port, username="blocklist-proxy", password=proxy_password)
    assert as_proxy.get("blocklist:active") is not None
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_proxy.set("blocklist:active", b"1")
    as_sync_user = redis.Redis(port=server.port, username="blocklist-sync", password=sync_password)
    for command in [("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("DEBUG", "SLEEP", "0")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_sync_user.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_sync_user.set("other:key", b"x")  # only its own prefix
    for client in (anonymous, as_proxy, as_sync_user):
        client.close()


def test_the_self_test_entry_of_the_operators_guide(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """docs/operators-guide.md's check: the self-test feed blocks blocklist-check.invalid,
    over HTTP (the splash page) and at the CONNECT when nothing is decrypted."""
    store = (tmp_path / "store").as_uri()
    sync(store, ROOT / "samples" / "selftest-feed.txt", name="selftest", data_dir=tmp_path)
    with running(make_proxy(store, options={"blocklist_intercept": "never"})) as proxy:
        assert_splash(proxy.get("http://blocklist-check.invalid/"), page=False)
        assert_splash(proxy.get("http://blocklist-check.invalid/any/page.html"), page=False)
        assert proxy.connect("blocklist-check.invalid") == 451
        assert proxy.get("http://blocked.example.com/page.html").status == 200  # not listed here
        assert proxy.blocks()[0]["list"] == "selftest"
