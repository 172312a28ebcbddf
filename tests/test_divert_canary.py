"""The diversion's own end-to-end check (issue 25, item 1): the guide's self-test name,
blocklist-check.invalid, never resolves, so it is never diverted and cannot test a gateway
that diverts. The self-test feed also lists two documentation addresses (the canary); the
sync keeps them with the hostnames, ``resolve`` puts them in the diversion set, the gateway
diverts them, and the proxy answers them with the self-test page. Everything real, in the
lab of tests/test_gateway.py: a subscriber, the gateway (shipped table, transparent proxy,
``blocklist-divert run`` resolving through a DNS server the test runs), the internet.

What each outcome means to the subscriber, as the guide says: the self-test page means the
whole path works; no answer (here: the gateway has no route, so "unreachable") means the
address was not diverted (no set applied, or withdrawn)."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from testlab.divert_lab import (
    Site,
    divert_key,
    listed_store,
    set_contents,
    set_elements,
    start_proxy,
    start_run,
)
from testlab.dnsserver import DNSServer
from testlab.harness import VENV_BIN, Proxy, wait_for
from testlab.netns import Lab, unavailable
from testlab.origins import TestCA

pytestmark = pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CANARY4, CANARY6 = "192.0.2.254", "2001:db8::254"
SERVER, SERVER6 = "203.0.113.20", "2001:db8:2::20"
DNS = "203.0.113.53"


def test_the_self_test_feed_lists_the_canary() -> None:
    lines = (SAMPLES / "selftest-feed.txt").read_text().splitlines()
    assert f"http://{CANARY4}/" in lines and f"http://[{CANARY6}]/" in lines


@pytest.fixture
def site(ca: TestCA) -> Iterator[Site]:
    with Lab() as lab:
        made = Site.build(lab, ca, [SERVER, SERVER6])
        try:
            yield made
        finally:
            made.close()


def sync_config(directory: pathlib.Path, store: str, key: pathlib.Path) -> pathlib.Path:
    """sync.toml as the guide has it: the licensed feed (the sample here) and the self-test
    feed, hostnames kept under the divert key."""
    config = directory / "sync.toml"
    config.write_text(
        f'store = "{store}"\ndivert_key_file = "{key}"\n'
        f'[feeds.iwf]\nurl = "{(SAMPLES / "sample-feed.txt").as_uri()}"\nformat = "text"\n'
        'list = "iwf"\n'
        f'[feeds.selftest]\nurl = "{(SAMPLES / "selftest-feed.txt").as_uri()}"\n'
        'format = "text"\nlist = "selftest"\n'
    )
    return config


def command(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_subscriber_checks_the_diversion_with_the_canary_address(
    site: Site, tmp_path: pathlib.Path, confdir: pathlib.Path
) -> None:
    site.topo.add_server_address(DNS)
    with site.topo.server.entered():
        dns = DNSServer(host=DNS, port=53).start()
    proxy: Proxy | None = None
    try:
        for name in ("blocked.example.com", "whole-site.blocked.test", "www.example.org"):
            dns.set(name, a=[SERVER], aaaa=[SERVER6])
        key, store = divert_key(tmp_path), (tmp_path / "store").as_uri()
        command("blocklist-sync", "--config", str(sync_config(tmp_path, store, key)))
        gateway = site.topo.gateway
        proxy = start_proxy(
            gateway, site.ca, tmp_path / "proxy", store, confdir, blocklist_intercept="never"
        )
        # Before any set is applied: not diverted, and nothing else answers the address.
        for canary in (CANARY4, CANARY6):
            with pytest.raises(OSError):
                site.get(canary, canary, "/")

        config = tmp_path / "divert.toml"
        config.write_text(
            f'store = "{store}"\nkey_file = "{key}"\nresolvers = ["{DNS}"]\n'
            f'health_url = "http://127.0.0.1:{proxy.status_port}/healthz"\n'
            "withdraw_after = 2\ninterval = 3600\n"
        )
        status_file = tmp_path / "run" / "status.json"
        start_run(gateway, config, status_file, tmp_path / "run.log")

        def applied() -> bool:
            return CANARY4 in set_contents(gateway, "divert4") and CANARY6 in set_contents(
                gateway, "divert6"
            )

        wait_for(applied, 30, "run to put the canary in the sets")
        for canary, host in ((CANARY4, CANARY4), (CANARY6, f"[{CANARY6}]")):
            page = site.get(canary, host, "/", headers={"Accept": "text/html"})
            assert page.status == 451, page.text
            assert "Self-test: blocked as expected" in page.text
            assert "abuse" not in page.text.lower()  # the self-test accuses no one
        assert {b["list"] for b in proxy.blocks()} == {"selftest"}

        # The proxy stopped: run withdraws the set (fail-open), and the canary goes
        # unanswered again, which is what the subscriber then sees.
        proxy.stop()
        wait_for(
            lambda: json.loads(status_file.read_text()).get("phase") == "withdrawn",
            20,
            "the withdrawal",
        )
        with pytest.raises(OSError):
            site.get(CANARY4, CANARY4, "/")
    finally:
        if proxy is not None:
            proxy.stop()
        dns.stop()


def test_a_proxy_without_the_self_test_list_answers_the_canary_with_a_502(
    site: Site, tmp_path: pathlib.Path, confdir: pathlib.Path
) -> None:
    """The guide's outcome table: diverted, but the proxy's list lacks the self-test feed.
    The proxy then fetches the address itself (nothing answers there) and says 502."""
    gateway = site.topo.gateway
    set_elements(gateway, [CANARY4])  # what apply does with a set holding the canary
    proxy = start_proxy(
        gateway, site.ca, tmp_path / "proxy", listed_store(tmp_path), confdir,
        blocklist_intercept="never",
    )  # fmt: skip
    try:
        response = site.get(CANARY4, CANARY4, "/")
        assert response.status == 502, response.text
        assert not proxy.blocks()
    finally:
        proxy.stop()
