"""Hostnames for diversion, encrypted at rest: ``blocklist-divert keygen``'s key file and the
sync keeping the active list's hosts (blocklist_addon/lists/hostkey.py and hosts.py, the
sync's ``--divert-key-file``), on the file store and a real Redis."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import pytest

from blocklist_addon import Blocklist
from blocklist_addon.lists import hostkey
from blocklist_addon.lists.hostkey import HostKeyError
from blocklist_addon.lists.hosts import HostStore
from blocklist_addon.lists.store import open_store
from sync import cli
from testlab.harness import VENV_BIN

FEED_A = [
    "http://listed-a.example.com/page.html",
    "http://listed-a.example.com/gallery/",
    "http://www.shared.example.net/one.html",
    "http://192.0.2.44/img/photo.jpg",
    "http://[2001:db8::44]/x.html",
]
FEED_B = [
    "http://listed-b.example.org/a",
    "http://www.shared.example.net/two.html",
]
HOSTS_A = {"listed-a.example.com", "www.shared.example.net", "192.0.2.44", "[2001:db8::44]"}
HOSTS_B = {"listed-b.example.org", "www.shared.example.net"}


# -- the key file ---------------------------------------------------------------------


def test_keygen_writes_0600_and_never_overwrites(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "divert.key"
    old_umask = os.umask(0)
    try:
        key = hostkey.generate(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert hostkey.load(path) == key
    before = path.read_bytes()
    with pytest.raises(HostKeyError, match="already exists"):
        hostkey.generate(path)
    assert path.read_bytes() == before


def test_a_key_readable_by_everyone_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "divert.key"
    hostkey.generate(path)
    path.chmod(0o644)
    with pytest.raises(HostKeyError, match="readable by everyone"):
        hostkey.load(path)
    path.chmod(0o640)  # a service group may read it
    hostkey.load(path)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o660, 0o622])
def test_a_key_writable_by_others_is_refused(tmp_path: pathlib.Path, mode: int) -> None:
    """Who can write the key can replace it (and read what is stored with the new one)."""
    path = tmp_path / "divert.key"
    hostkey.generate(path)
    path.chmod(mode)
    with pytest.raises(HostKeyError, match="writable by"):
        hostkey.load(path)


def test_a_key_owned_by_another_user_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "divert.key"
    hostkey.generate(path)
    other = os.getuid() + 1 if os.getuid() == 0 else None
    if other is None:
        pytest.skip("changing a file's owner needs root")
    os.chown(path, other, -1)
    with pytest.raises(HostKeyError, match="owned by"):
        hostkey.load(path)


def test_a_key_behind_a_symlink_is_refused(tmp_path: pathlib.Path) -> None:
    """A link can be swapped to point at another key; the path itself must be the file."""
    real = tmp_path / "real.key"
    hostkey.generate(real)
    link = tmp_path / "divert.key"
    link.symlink_to(real)
    with pytest.raises(HostKeyError, match="symbolic link"):
        hostkey.load(link)


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"QUFB\n", b"A" * 44 + b"\n"])
def test_not_a_key(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "divert.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(HostKeyError, match="not a hostname key"):
        hostkey.load(path)


def test_missing_key_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(HostKeyError, match="cannot read key file"):
        hostkey.load(tmp_path / "nope.key")


def test_digests_are_keyed_and_stable(tmp_path: pathlib.Path) -> None:
    one = hostkey.generate(tmp_path / "one.key")
    two = hostkey.generate(tmp_path / "two.key")
    assert one.digest("listed-a.example.com") == one.digest("listed-a.example.com")
    assert one.digest("listed-a.example.com") != one.digest("listed-b.example.org")
    assert one.digest("listed-a.example.com") != two.digest("listed-a.example.com")
    assert len(one.digest("x.test")) == 16 and int(one.digest("x.test"), 16) >= 0
    assert one.key_id != two.key_id
    assert "listed" not in repr(one) and str(one.raw) not in repr(one)
    token = one.encrypt(b"www.shared.example.net")
    assert b"shared" not in token
    assert one.decrypt(token) == b"www.shared.example.net"
    with pytest.raises(HostKeyError, match="do not open with this key"):
        two.decrypt(token)


# -- the sync keeping hosts -------------------------------------------------------------


@pytest.fixture
def key_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "divert.key"
    hostkey.generate(path)
    return path


def write_feed(path: pathlib.Path, urls: list[str]) -> pathlib.Path:
    path.write_text("".join(f"{u}\n" for u in urls))
    return path


def write_config(
    tmp_path: pathlib.Path, store_url: str, *feeds: str, key: str = ""
) -> pathlib.Path:
    path = tmp_path / "sync.toml"
    text = f'store = "{store_url}"\n'
    if key:
        text += f'divert_key_file = "{key}"\n'
    for name in feeds:
        text += f'[feeds.{name}]\nurl = "{(tmp_path / f"{name}.txt").as_uri()}"\nformat = "text"\n'
    path.write_text(text)
    return path


async def sync(*argv: str) -> int:
    return await cli.run(cli.build_parser().parse_args(list(argv)))


async def stored_hosts(store_url: str, key_path: pathlib.Path) -> set[str]:
    hosts = HostStore(open_store(store_url, namespace="divert"), hostkey.load(key_path))
    try:
        return set((await hosts.load_active()).hosts)
    finally:
        await hosts.store.close()


async def active_list(store_url: str) -> Blocklist:
    store = open_store(store_url)
    try:
        loaded = await store.load_active()
        assert loaded is not None
        return Blocklist.from_bytes(loaded[1])
    finally:
        await store.close()


async def test_sync_keeps_the_active_lists_hosts_encrypted(
    tmp_path: pathlib.Path, store_url: str, key_path: pathlib.Path
) -> None:
    write_feed(tmp_path / "a.txt", FEED_A)
    write_feed(tmp_path / "b.txt", FEED_B)
    config = write_config(tmp_path, store_url, "a", "b", key="divert.key")  # relative
    assert await sync("--config", str(config)) == 0
    assert await stored_hosts(store_url, key_path) == HOSTS_A | HOSTS_B

    # Without the key nothing reads them; with another key neither.
    other = tmp_path / "other.key"
    hostkey.generate(other)
    with pytest.raises(HostKeyError, match="another key"):
        await stored_hosts(store_url, other)


async def test_suppressed_hosts_are_not_kept(
    tmp_path: pathlib.Path, store_url: str, key_path: pathlib.Path
) -> None:
    write_feed(tmp_path / "b.txt", FEED_B)
    config = write_config(tmp_path, store_url, "b")
    key = ("--divert-key-file", str(key_path))
    assert await sync("--config", str(config), *key) == 0
    listed = await active_list(store_url)
    only_entry = listed.match(FEED_B[0])
    assert only_entry is not None

    # The only entry on listed-b.example.org suppressed: the host is no longer diverted.
    assert await sync("--config", str(config), *key, "suppress", only_entry.entry_id) == 0
    assert await stored_hosts(store_url, key_path) == HOSTS_B - {"listed-b.example.org"}
    assert await sync("--config", str(config), *key, "unsuppress", only_entry.entry_id) == 0
    assert await stored_hosts(store_url, key_path) == HOSTS_B


async def test_a_host_with_one_entry_left_stays(
    tmp_path: pathlib.Path, store_url: str, key_path: pathlib.Path
) -> None:
    write_feed(tmp_path / "a.txt", FEED_A)
    config = write_config(tmp_path, store_url, "a")
    key = ("--divert-key-file", str(key_path))
    assert await sync("--config", str(config), *key) == 0
    entry = (await active_list(store_url)).match(FEED_A[0])
    assert entry is not None
    assert await sync("--config", str(config), *key, "suppress", entry.entry_id) == 0
    assert await stored_hosts(store_url, key_path) == HOSTS_A  # the gallery/ entry remains


async def test_a_failed_feed_keeps_its_last_good_hosts_and_a_removed_one_drops(
    tmp_path: pathlib.Path, store_url: str, key_path: pathlib.Path
) -> None:
    write_feed(tmp_path / "a.txt", FEED_A)
    write_feed(tmp_path / "b.txt", FEED_B)
    config = write_config(tmp_path, store_url, "a", "b")
    os.environ["BLOCKLIST_DIVERT_KEY_FILE"] = str(key_path)
    try:
        assert await sync("--config", str(config)) == 0
        (tmp_path / "b.txt").write_bytes(b"<html><body>maintenance</body></html>\n")
        write_feed(tmp_path / "a.txt", [*FEED_A, "http://new.example.com/x"])
        assert await sync("--config", str(config)) == 1
        assert await stored_hosts(store_url, key_path) == HOSTS_A | HOSTS_B | {"new.example.com"}

        only_a = write_config(tmp_path, store_url, "a")
        assert await sync("--config", str(only_a)) == 0
        assert await stored_hosts(store_url, key_path) == HOSTS_A | {"new.example.com"}
    finally:
        del os.environ["BLOCKLIST_DIVERT_KEY_FILE"]


async def test_enabling_diversion_later_refetches_an_unchanged_feed(
    tmp_path: pathlib.Path, store_url: str, key_path: pathlib.Path
) -> None:
    write_feed(tmp_path / "a.txt", FEED_A)
    config = write_config(tmp_path, store_url, "a")
    assert await sync("--config", str(config)) == 0
    assert await sync("--config", str(config), "--divert-key-file", str(key_path)) == 0
    assert await stored_hosts(store_url, key_path) == HOSTS_A
    # A new key: the feed is read again (not "not modified") and its hosts re-encrypted.
    new_key = tmp_path / "new.key"
    hostkey.generate(new_key)
    assert await sync("--config", str(config), "--divert-key-file", str(new_key)) == 0
    assert await stored_hosts(store_url, new_key) == HOSTS_A


async def test_status_counts_the_hosts(
    tmp_path: pathlib.Path,
    store_url: str,
    key_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_feed(tmp_path / "a.txt", FEED_A)
    config = write_config(tmp_path, store_url, "a", key=str(key_path))
    assert await sync("--config", str(config)) == 0
    capsys.readouterr()
    assert await sync("--config", str(config), "status") == 0
    out = capsys.readouterr().out
    assert "hostnames for diversion: 4 (encrypted) of list version 1" in out
    assert "example" not in out.replace(store_url, "")


@pytest.mark.parametrize("bad", ["missing", "world-readable"])
async def test_a_bad_key_file_fails_the_hosts_step_and_the_lists_are_synced_anyway(
    tmp_path: pathlib.Path, store_url: str, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    """The hostnames for diversion are one step of the sync: a bad key stops that step
    (exit 1, one line saying why), not the URL and hash lists, which were not synced at all
    before (exit 2)."""
    write_feed(tmp_path / "a.txt", FEED_A)
    (tmp_path / "h.jsonl").write_text(json.dumps({"id": "h1", "sha256": "ab" * 32}) + "\n")
    key = tmp_path / "divert.key"
    if bad == "world-readable":
        hostkey.generate(key)
        key.chmod(0o644)
    config = write_config(tmp_path, store_url, "a", key=str(key))
    config.write_text(
        config.read_text()
        + f'[feeds.h]\nurl = "{(tmp_path / "h.jsonl").as_uri()}"\nformat = "hashes-jsonl"\n'
    )
    assert await sync("--config", str(config)) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "hostnames for diversion: FAILED" in line]
    assert len(failed) == 1 and ("cannot read" in failed[0] or "readable" in failed[0]), err
    assert len(await active_list(store_url)) == len(FEED_A)
    hashes = open_store(store_url, namespace="hashes")
    try:
        assert await hashes.active() is not None
    finally:
        await hashes.close()


def test_keygen_command(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "k" / "divert.key"
    path.parent.mkdir()
    command = [str(VENV_BIN / "blocklist-divert"), "keygen", "--key-file", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wrote a new hostname key" in done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    hostkey.load(path)
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr
