"""Block lines (blocklist_addon/ops/blocklog.py): how the client is named, what a line holds."""

from __future__ import annotations

import json

import pytest

from blocklist_addon.ops.blocklog import BlockEvent, client_field, record
from blocklist_addon.urls.matcher import Match

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
