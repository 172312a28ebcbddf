"""blocklist-divert's TOML configuration (divert/config.py)."""

from __future__ import annotations

import pathlib

import pytest

from divert.config import ConfigError, DivertConfig, load_config, parse_resolver


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "divert.toml"
    path.write_text(text)
    return path


def test_defaults_are_safe() -> None:
    config = DivertConfig()
    assert config.max_per_host == 16
    assert config.max_total == 50_000
    assert config.max_growth == 2.0
    assert config.grace == 6 * 3600
    assert config.nft_table == "blocklist"
    assert config.resolvers == ()


def test_full_config(tmp_path: pathlib.Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            store = "redis://127.0.0.1:6379/0"
            key_file = "divert.key"
            resolvers = ["192.0.2.53", "[2001:db8::53]:5353"]
            protect = ["198.51.100.0/24"]
            protect_file = "/etc/blocklist-proxy/protect.txt"
            max_per_host = 8
            max_total = 1000
            max_growth = 1.5
            growth_allowance = 0
            grace = 60
            timeout = 0.5
            deadline = 10
            concurrency = 20
            interval = 60
            withdraw_after = 10
            next_hop = ["198.51.100.1", "2001:db8::1"]
            """,
        )
    )
    assert config.key_file == tmp_path / "divert.key"
    assert config.protect_file == pathlib.Path("/etc/blocklist-proxy/protect.txt")
    assert config.resolvers == ("192.0.2.53", "[2001:db8::53]:5353")
    assert config.max_growth == 1.5
    assert config.next_hop == ("198.51.100.1", "2001:db8::1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_per_hots = 3", "unknown setting"),
        ("max_per_host = 0", "max_per_host"),
        ("max_total = -1", "max_total"),
        ("max_total = 1.5", "max_total"),
        ("max_growth = 0.5", "max_growth"),
        ("grace = -1", "grace"),
        ("timeout = 0", "timeout"),
        ("deadline = 'soon'", "deadline"),
        ("max_failed = 2", "max_failed"),
        ("max_vanished = 1.5", "max_vanished"),
        ("max_vanished = -0.1", "max_vanished"),
        ("vanished_allowance = 2.5", "vanished_allowance"),
        ("resolvers = ['dns.example.net']", "not an IP address"),
        ("resolvers = ['192.0.2.53:0']", "port"),
        ("protect = ['10.0.0.0/33']", "protect"),
        ("next_hop = ['192.0.2.1', '192.0.2.2']", "at most one IPv4"),
        # A scope id is any text, and next_hop goes verbatim into BIRD files and ExaBGP lines.
        ("next_hop = ['fe80::1%eth0']", "scope"),
        ('next_hop = ["fe80::1%x\\nroute 0.0.0.0/0 via 192.0.2.9"]', "scope"),
        ("resolvers = ['fe80::53%eth0']", "scope"),
        ("protect = ['fe80::1%eth0']", "scope"),
        ("nft_table = 'a b'", "nft_table"),
        ("key_file = 3", "path"),
        ("store = ", "not valid TOML"),
    ],
)
def test_mistakes_are_one_clear_error(tmp_path: pathlib.Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_unreadable_config(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("[2001:DB8::53]:5353", ("2001:db8::53", 5353)),
        (" 127.0.0.1:40053 ", ("127.0.0.1", 40053)),
    ],
)
def test_parse_resolver(text: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(text) == expected


@pytest.mark.parametrize("text", ["", "[2001:db8::53", "[2001:db8::53]x", "192.0.2.53:x", "a:b"])
def test_parse_resolver_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_resolver(text)
