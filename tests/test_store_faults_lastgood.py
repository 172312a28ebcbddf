"""The proxy's last-known-good copy damaged, unreadable or stale while the store is down at
start, with a real mitmdump: it never starts empty-handed, and one line says what it found.

Each test starts a proxy (about a second); the store is a Redis port nobody listens on.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Callable

import pytest

from testlab.harness import SAMPLE_FEED, Proxy, free_port, running, sync, wait_for

LISTED = "http://blocked.example.com/page.html"


@pytest.fixture
def good_copy(make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path) -> pathlib.Path:
    """A last-known-good copy of the sample list, written by a proxy that read it."""
    store = (tmp_path / "store").as_uri()
    sync(store, SAMPLE_FEED, data_dir=tmp_path / "data")
    workdir = tmp_path / "first"
    with running(make_proxy(store, workdir=workdir)):
        wait_for((workdir / "lastgood.bin").exists, 10, "the last-known-good copy")
    return workdir / "lastgood.bin"


def damage(copy: pathlib.Path, how: str) -> None:
    raw = bytearray(copy.read_bytes())
    if how == "bit flipped":
        raw[len(raw) // 2] ^= 0x01
        copy.write_bytes(bytes(raw))
    elif how == "truncated":
        copy.write_bytes(bytes(raw[: len(raw) - 7]))
    elif how == "no header":
        copy.write_bytes(bytes(raw[raw.index(b"\n") + 1 :]))
    elif how == "unreadable":  # a directory where the file goes: EISDIR, as root gets no EACCES
        copy.unlink()
        copy.mkdir()
    elif how == "another user's":  # whole and intact, but who wrote it?
        os.chown(copy, 65534, 65534)
    elif how == "writable by others":
        copy.chmod(0o666)
    elif how == "in a directory others can write":
        copy.parent.chmod(0o777)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "bit flipped",
        "truncated",
        "no header",
        "unreadable",
        "another user's",
        "writable by others",
        "in a directory others can write",
    ],
)
def test_a_damaged_copy_with_the_store_down_refuses_to_start_saying_why(
    how: str, good_copy: pathlib.Path, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Exit 1, and the error line itself says both halves: the store could not be read (and
    why), and the copy exists but is unusable (and why), not that there is none."""
    workdir = tmp_path / "restarted"
    workdir.mkdir()
    copy = workdir / "lastgood.bin"
    shutil.copyfile(good_copy, copy)
    damage(copy, how)
    down = f"redis://127.0.0.1:{free_port()}/0"
    proxy = make_proxy(down, workdir=workdir, options={"blocklist_start_timeout": "2"})
    proxy.start(wait=False)
    assert proxy.wait_exit() == 1
    errors = [line for line in proxy.log().splitlines() if "no list to enforce" in line]
    assert len(errors) == 1, proxy.log()
    line = errors[0]
    assert "unreachable" in line and f"{copy} is unusable" in line, line
    assert "there is no last-known-good copy" not in line


def test_a_stale_copy_with_the_store_down_is_enforced_and_called_stale(
    good_copy: pathlib.Path, make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Older than blocklist_max_age: still enforced (better than nothing), reported stale."""
    workdir = tmp_path / "restarted"
    workdir.mkdir()
    shutil.copyfile(good_copy, workdir / "lastgood.bin")
    down = f"redis://127.0.0.1:{free_port()}/0"
    options = {"blocklist_start_timeout": "2", "blocklist_max_age": "1"}
    with running(make_proxy(down, workdir=workdir, options=options)) as proxy:
        assert proxy.get(LISTED).status == 451
        wait_for(lambda: proxy.health()[1]["status"] == "stale", 10, "the copy to count stale")
        status, doc = proxy.health()
        assert (status, doc["source"], doc["store"]) == (503, "last-good", "down")
        assert "enforcing the last-known-good copy" in proxy.log()
