"""Block lines (blocklist_addon/ops/blocklog.py): how the client is named, what a line holds."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest
from mitmproxy.test import taddons

from blocklist_addon.ops.blocklog import BlockEvent, BlockLog, client_field, record
from blocklist_addon.urls.matcher import Match

ROOT = pathlib.Path(__file__).resolve().parent.parent

CLIENTS = [
    # address, full, truncated
    ("192.0.2.77", "192.0.2.77", "192.0.2.0/24"),
    ("2001:db8:1:2::7", "2001:db8:1:2::7", "2001:db8:1::/48"),
    ("::ffff:198.51.100.9", "::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4-mapped
    ("fe80::1%eth0", "fe80::1%eth0", "fe80::/48"),  # scoped
    ("not-an-address", "not-an-address", None),
]


@pytest.mark.parametrize(("address", "full", "truncated"), CLIENTS)
def test_client_field(address: str, full: str, truncated: str | None) -> None:
    assert client_field(address, "full") == full
    assert client_field(address, "truncated") == truncated
    assert client_field(address, "omit") is None
    assert client_field(None, "full") is None


def test_a_line_holds_the_url_only_when_asked() -> None:
    event = BlockEvent(
        match=Match("iwf", "e1", "00" * 8, False),
        where="request",
        action="splash",
        client="192.0.2.77",
        reference="abc123",
        url="http://blocked.example.com/page.html",
        method="GET",
    )
    without = json.loads(record(event, client_mode="truncated", with_url=False))
    assert without == {
        "time": without["time"],
        "event": "block",
        "action": "splash",
        "where": "request",
        "list": "iwf",
        "entry": "e1",
        "embedded": False,
        "reference": "abc123",
        "client": "192.0.2.0/24",
        "method": "GET",
    }
    with_url = json.loads(record(event, client_mode="omit", with_url=True))
    assert with_url["url"] == "http://blocked.example.com/page.html"
    assert "client" not in with_url


def event(reference: str) -> BlockEvent:
    return BlockEvent(
        match=Match("iwf", "e1", "00" * 8, False),
        where="request",
        action="splash",
        client="192.0.2.77",
        reference=reference,
        url=None,
        method="GET",
    )


def references(path: pathlib.Path) -> list[str]:
    return [json.loads(line)["reference"] for line in path.read_text().splitlines()]


def test_a_missing_log_directory_is_made_and_a_renamed_log_is_followed(
    tmp_path: pathlib.Path,
) -> None:
    """As systemd's LogsDirectory= would, the directory is made (it used to stop the proxy
    with a traceback); after logrotate's rename the next line goes to the path, not into the
    renamed file."""
    path = tmp_path / "missing" / "dir" / "blocks.jsonl"
    blocklog = BlockLog()
    with taddons.context(blocklog) as tctx:
        tctx.configure(blocklog, blocklist_log_file=str(path))
        blocklog.write(event("one"))
        path.rename(path.with_suffix(".jsonl.1"))
        blocklog.write(event("two"))
        path.unlink()  # deleted outright: made again
        blocklog.write(event("three"))
    assert references(path.with_suffix(".jsonl.1")) == ["one"]
    assert references(path) == ["three"]
    assert path.parent.stat().st_mode & 0o777 == 0o750
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_the_shipped_logrotate_file_rotates_without_losing_a_line(tmp_path: pathlib.Path) -> None:
    """deploy/logrotate/blocklist-proxy run by the real logrotate (forced, on a copy whose
    paths point into tmp_path): every line lands in the rotated file or the new one."""
    logs = tmp_path / "log"
    shipped = (ROOT / "deploy" / "logrotate" / "blocklist-proxy").read_text()
    config = tmp_path / "logrotate.conf"
    config.write_text(
        shipped.replace("/var/log/blocklist-proxy", str(logs)).replace(
            "create 0640 blocklist adm",
            "create 0640",  # the guide's service user
        )
    )
    path = logs / "blocks.jsonl"
    blocklog = BlockLog()
    with taddons.context(blocklog) as tctx:
        tctx.configure(blocklog, blocklist_log_file=str(path))
        blocklog.write(event("before"))
        done = subprocess.run(
            ["logrotate", "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        blocklog.write(event("after"))
    assert references(logs / "blocks.jsonl.1") == ["before"]  # delaycompress: not yet gzipped
    assert references(path) == ["after"]
