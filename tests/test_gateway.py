"""The two-stage gateway for real (issue 12, items 5, 6 and 9): the shipped nft table on a
gateway namespace, ``blocklist-proxy --mode transparent`` behind it, a client and origins in
their own namespaces, real packets. The first tests fill the diversion set by hand (``nft``,
as ``blocklist-divert apply`` would); the last ones run ``blocklist-divert run`` on the
gateway, withdrawing on ill health and resolving through a DNS server the test controls.

Needs root, ``ip`` and ``nft``; skips with the reason otherwise (CI runs it as root).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import pathlib
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from divert.dataset import DiversionSet
from divert.planes import nft
from testlab.divert_lab import (
    DIVERT_NFT,
    Site,
    divert_key,
    listed_store,
    load_notrack,
    load_table,
    publish,
    set_contents,
    set_elements,
    start_proxy,
    start_run,
    tracked,
)
from testlab.dnsserver import DNSServer
from testlab.harness import Proxy, assert_splash, feed_with, sync, wait_for
from testlab.netns import Lab, Namespace, unavailable
from testlab.origins import TestCA

pytestmark = pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))

UNDIVERTED = "203.0.113.10"
DIVERTED = "203.0.113.20"
UNDIVERTED6 = "2001:db8:2::10"
DIVERTED6 = "2001:db8:2::20"
#: A page entry on an address: the IP-literal case of item 9.
IP_ENTRY = f"http://{DIVERTED}/img/photo.jpg"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab() as made:
        yield made


@pytest.fixture(scope="module")
def site(lab: Lab, ca: TestCA) -> Iterator[Site]:
    made = Site.build(lab, ca, [UNDIVERTED, DIVERTED, UNDIVERTED6, DIVERTED6])
    try:
        set_elements(made.topo.gateway, [DIVERTED, DIVERTED6])
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def proxy(
    site: Site, tmp_path_factory: pytest.TempPathFactory, confdir: pathlib.Path
) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("gateway")
    proxy = start_proxy(
        site.topo.gateway,
        site.ca,
        directory / "proxy",
        listed_store(directory, IP_ENTRY),
        confdir,
        blocklist_intercept="never",
    )
    try:
        yield proxy
    finally:
        proxy.stop()


def connections(proxy: Proxy) -> float:
    return proxy.metric("blocklist_client_connections_total")


# -- the table ------------------------------------------------------------------------------


def test_the_table_loads_with_empty_sets_and_reloading_keeps_the_addresses(
    lab: Lab, site: Site
) -> None:
    fresh = lab.namespace("table")
    load_table(fresh, "eth9")
    assert set_contents(fresh, "divert4") == []
    assert set_contents(fresh, "divert6") == []
    ruleset = fresh.run("nft", "list", "table", "inet", "blocklist")
    assert 'iifname "eth9"' in ruleset
    set_elements(fresh, ["203.0.113.99", "2001:db8:2::99"])
    load_table(fresh, "eth9")  # an operator reloading the file
    assert set_contents(fresh, "divert4") == ["203.0.113.99"]
    assert set_contents(fresh, "divert6") == ["2001:db8:2::99"]
    assert fresh.run("nft", "list", "table", "inet", "blocklist").count("redirect") == 2


def test_the_table_refuses_to_load_without_the_subscriber_interface(lab: Lab) -> None:
    fresh = lab.namespace("nodefine")
    with pytest.raises(AssertionError, match="SUBSCRIBERS"):
        fresh.run("nft", "-f", str(DIVERT_NFT))


# -- stage 1: what is not diverted never reaches the proxy ----------------------------------


@pytest.mark.parametrize("address", [UNDIVERTED, UNDIVERTED6])
def test_undiverted_traffic_is_forwarded_without_the_proxy(
    site: Site, proxy: Proxy, address: str
) -> None:
    before = connections(proxy)
    response = site.get(address, "unlisted.example.org", "/page.html")
    assert response.status == 200
    assert site.http[address].remotes[-1] == site.topo.client_address(address)  # directly
    reply, seen = site.https_get(address, "unlisted.example.org", "/")
    assert reply.status == 200 and seen == site.ca.origin_der
    assert site.quic_probe(address) == b"\xc0quic-initial"
    assert connections(proxy) == before


# -- stage 2: the transparent proxy on diverted addresses -----------------------------------


@pytest.mark.parametrize("address", [DIVERTED, DIVERTED6])
def test_a_listed_page_on_a_diverted_address_gets_the_splash_page(
    site: Site, proxy: Proxy, address: str
) -> None:
    origin = site.http[address]
    before, seen_before = origin.connections, connections(proxy)
    page = site.get(address, "blocked.example.com", "/page.html", headers={"Accept": "text/html"})
    assert_splash(page, page=True)
    assert_splash(site.get(address, "Blocked.Example.COM.", "/gallery/x.jpg"), page=False)
    assert origin.connections == before
    assert connections(proxy) == seen_before + 2


def test_an_ip_literal_entry_on_a_diverted_address_is_blocked(site: Site, proxy: Proxy) -> None:
    assert_splash(site.get(DIVERTED, DIVERTED, "/img/photo.jpg"), page=False)


@pytest.mark.parametrize("address", [DIVERTED, DIVERTED6])
def test_an_unlisted_page_on_a_diverted_address_is_served_unchanged(
    site: Site, proxy: Proxy, address: str
) -> None:
    origin = site.http[address]
    response = site.get(address, "blocked.example.com", "/other.html?q=1")
    assert response.status == 200
    assert response.text == f"origin {origin.name}: GET /other.html?q=1 (0 bytes)"
    assert response.headers["X-Origin"] == origin.name
    assert "Via" not in response.headers
    assert origin.requests[-1] == ("GET", "blocked.example.com", "/other.html?q=1")
    # Fetched by the proxy (from the gateway's address), not diverted a second time.
    assert origin.remotes[-1] == site.topo.gateway_address(address)


@pytest.mark.parametrize("address", [DIVERTED, DIVERTED6])
def test_https_to_a_diverted_address_passes_untouched_with_the_origins_certificate(
    site: Site, proxy: Proxy, address: str
) -> None:
    origin = site.https[address]
    for sni in ("unlisted.example.org", "blocked.example.com"):  # page entries: not visible
        response, seen = site.https_get(address, sni, "/page.html")
        assert seen == site.ca.origin_der
        assert response.status == 200
        assert origin.requests[-1] == ("GET", sni, "/page.html")
        assert origin.remotes[-1] == site.topo.gateway_address(address)


@pytest.mark.parametrize("address", [DIVERTED, DIVERTED6])
def test_https_to_a_host_listed_whole_is_refused_at_the_client_hello(
    site: Site, proxy: Proxy, address: str
) -> None:
    origin = site.https[address]
    before, refused = origin.connections, len(proxy.blocks())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        site.https_get(address, "www.whole-site.blocked.test", "/")
    assert origin.connections == before  # not a single byte reached the origin
    wait_for(lambda: len(proxy.blocks()) > refused, 10, "the refusal in the block log")
    assert proxy.blocks()[-1]["where"] == "tls"


@pytest.mark.parametrize("address", [DIVERTED, DIVERTED6])
def test_quic_to_a_diverted_address_is_rejected(site: Site, proxy: Proxy, address: str) -> None:
    received = site.udp[address].received
    with pytest.raises(ConnectionRefusedError):
        site.quic_probe(address)
    assert site.udp[address].received == received


def test_other_ports_to_a_diverted_address_pass_directly(site: Site, proxy: Proxy) -> None:
    """The documented choice of deploy/nftables-divert.nft: only web traffic is diverted.
    Mail, SSH, VPNs and the rest to an address a listed host shares with others reach it
    directly, as without the table: rejecting them would cut third parties off for one
    listed page (and tell a scanner which addresses are diverted)."""
    before = connections(proxy)
    with site.topo.server.listen(DIVERTED, 8080) as listener:
        listener.settimeout(15)
        with site.client.connect(DIVERTED, 8080):
            accepted, peer = listener.accept()
            accepted.close()
    assert peer[0] == site.topo.CLIENT4  # from the client itself, not via the proxy
    assert connections(proxy) == before


def test_set_updates_while_a_client_connects_in_a_loop_fail_and_leak_nothing(
    site: Site, proxy: Proxy
) -> None:
    """Each update replaces both sets (5,000 other addresses changing around the diverted
    one) in one transaction: no connection fails, none to the listed page gets past."""
    gateway = site.topo.gateway
    command = [*gateway.exec_prefix(), "nft"]
    others = [
        DiversionSet(ipv6=[f"2001:db8:ffff::{flip:x}:{i:x}" for i in range(5000)])
        for flip in range(2)
    ]
    stop, swaps, failures = threading.Event(), [0], []

    def swap() -> None:
        while not stop.is_set():
            other = others[swaps[0] % 2]
            dset = DiversionSet(ipv4=[DIVERTED], ipv6=[DIVERTED6, *other.ipv6])
            try:
                nft.apply(dset, nft=command)
            except Exception as exc:  # reported by the test, not lost in the thread
                failures.append(exc)
                return
            swaps[0] += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: dict[str, int] = {}
    versions: set[int] = set()  # the update counts seen as a round of requests began
    try:
        # The condition is waited on, not a rate: 200 requests made across at least 10
        # versions of the sets, however slow the machine; the deadline only bounds a hang.
        deadline = time.monotonic() + 300
        while (sum(outcomes.values()) < 200 or len(versions) < 10) and time.monotonic() < deadline:
            versions.add(swaps[0])
            for address, host, expected in (
                (DIVERTED, "blocked.example.com", 451),
                (DIVERTED6, "blocked.example.com", 451),
                (UNDIVERTED, "blocked.example.com", 200),  # stage 1 never touches it
            ):
                try:
                    status = site.get(address, host, "/page.html").status
                except OSError as exc:
                    status = type(exc).__name__
                key = "ok" if status == expected else f"{address}: {status}"
                outcomes[key] = outcomes.get(key, 0) + 1
    finally:
        stop.set()
        swapper.join(30)
        set_elements(gateway, [DIVERTED, DIVERTED6])
    assert not failures
    assert len(versions) >= 10, f"requests saw only {len(versions)} set versions in 300 s"
    assert sum(outcomes.values()) >= 200, outcomes
    assert outcomes == {"ok": sum(outcomes.values())}, outcomes


# -- item 9: transparent mode decrypting by SNI, not by address -----------------------------


def test_intercept_listed_decides_by_sni_not_by_a_listed_address(
    ca: TestCA, confdir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """An IP-literal entry on a shared address must not decrypt every virtual host on it:
    clients without the CA would get certificate errors for all of them."""
    with Lab() as lab:
        site = Site.build(lab, ca, [DIVERTED])
        try:
            set_elements(site.topo.gateway, [DIVERTED])
            store = listed_store(tmp_path, IP_ENTRY)
            proxy = start_proxy(
                site.topo.gateway, site.ca, tmp_path / "proxy", store, confdir
            )  # intercept=listed
            try:
                # Another virtual host on the listed address: its own certificate.
                response, seen = site.https_get(DIVERTED, "unlisted.example.org", "/img/photo.jpg")
                assert (response.status, seen) == (200, ca.origin_der)
                trusting = site.client_context(proxy.mitm_ca)
                # A listed host by SNI: decrypted, the splash page.
                response, seen = site.https_get(
                    DIVERTED, "blocked.example.com", "/page.html", context=trusting
                )
                assert seen != ca.origin_der
                assert_splash(response, page=False)
                # No SNI (https://203.0.113.20/...): the address is the host; decrypted.
                response, seen = site.https_get(DIVERTED, None, "/img/photo.jpg", context=trusting)
                assert seen != ca.origin_der
                assert_splash(response, page=False)
            finally:
                proxy.stop()
        finally:
            site.close()


# -- blocklist-divert run: a dead proxy must not black-hole the diverted addresses -----------

WITHDRAW_AFTER = 2.0


def test_a_stopped_proxy_is_withdrawn_within_withdraw_after_and_the_client_goes_direct(
    ca: TestCA, confdir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    with Lab() as lab:
        site = Site.build(lab, ca, [DIVERTED, DIVERTED6])
        gateway = site.topo.gateway
        proxy: Proxy | None = None
        try:
            store = listed_store(tmp_path, IP_ENTRY)
            asyncio.run(publish(store, DiversionSet.build({"h": [DIVERTED, DIVERTED6]})))
            proxy = start_proxy(
                site.topo.gateway,
                site.ca,
                tmp_path / "proxy",
                store,
                confdir,
                blocklist_intercept="never",
            )
            config = tmp_path / "divert.toml"
            config.write_text(
                f'store = "{store}"\n'
                f'health_url = "http://127.0.0.1:{proxy.status_port}/healthz"\n'
                f"withdraw_after = {WITHDRAW_AFTER}\ninterval = 3600\n"
            )
            status_file = tmp_path / "run" / "status.json"
            start_run(gateway, config, status_file, tmp_path / "run.log")
            run_log = lambda: (tmp_path / "run.log").read_text()  # noqa: E731
            diverted = {DIVERTED, DIVERTED6}
            wait_for(lambda: in_sets(gateway) == diverted, 30, "run to fill the sets")
            assert_splash(site.get(DIVERTED, "blocked.example.com", "/page.html"), page=False)

            proxy.stop()
            wait_for(lambda: not in_sets(gateway), WITHDRAW_AFTER + 15, "the withdrawal")
            status = json.loads(status_file.read_text())
            assert status["phase"] == "withdrawn"
            assert status["since"] - status["proxy"]["failing_since"] >= WITHDRAW_AFTER
            assert "WITHDRAWN" in run_log()
            # Unfiltered, but not black-holed: straight to the origin, from the client.
            for address in (DIVERTED, DIVERTED6):
                response = site.get(address, "blocked.example.com", "/page.html")
                assert response.status == 200
                assert site.http[address].remotes[-1] == site.topo.client_address(address)

            proxy.start()
            wait_for(lambda: in_sets(gateway) == diverted, 30, "the sets refilled")
            assert_splash(site.get(DIVERTED6, "blocked.example.com", "/page.html"), page=False)
            assert "healthy again" in run_log()
        finally:
            if proxy is not None:
                proxy.stop()  # by its PID: deleting the namespace does not end it
            site.close()


def in_sets(gateway: Namespace) -> set[str]:
    return set(set_contents(gateway, "divert4")) | set(set_contents(gateway, "divert6"))


# -- blocklist-divert run resolving: hosts that move, and DNS that lies -----------------------

MOVED = "203.0.113.21"
DNS = "203.0.113.53"
FAN_OUT = [f"203.0.113.{i}" for i in range(100, 108)]


def test_run_follows_a_moving_host_and_refuses_the_cleanfeed_attack_and_sudden_growth(
    ca: TestCA, confdir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The resolver behind ``run`` asks a DNS server the test controls (in the server
    namespace). A listed host that moves is diverted at its new address after the next
    resolution; a listed host pointed at a busy third party's (protected) address, and a set
    that suddenly grows beyond the gate, are refused: the sets keep the old addresses and the
    third party's traffic never reaches the proxy."""
    with Lab() as lab:
        site = Site.build(lab, ca, [UNDIVERTED, DIVERTED, MOVED, DIVERTED6])
        site.topo.add_server_address(DNS)
        gateway = site.topo.gateway
        with site.topo.server.entered():
            dns = DNSServer(host=DNS, port=53).start()
        proxy: Proxy | None = None
        try:
            for name in ("blocked.example.com", "whole-site.blocked.test", "www.example.org"):
                dns.set(name, a=[DIVERTED], aaaa=[DIVERTED6])
            key = divert_key(tmp_path)
            store = (tmp_path / "store").as_uri()
            env = {"BLOCKLIST_DIVERT_KEY_FILE": str(key)}
            sync(store, feed_with(tmp_path, IP_ENTRY), data_dir=tmp_path / "data", env=env)
            proxy = start_proxy(
                site.topo.gateway,
                site.ca,
                tmp_path / "proxy",
                store,
                confdir,
                blocklist_intercept="never",
            )
            config = tmp_path / "divert.toml"
            config.write_text(
                f'store = "{store}"\nkey_file = "{key}"\nresolvers = ["{DNS}"]\n'
                f'protect = ["{UNDIVERTED}/32"]\ngrowth_allowance = 0\n'
                f'health_url = "http://127.0.0.1:{proxy.status_port}/healthz"\n'
                "withdraw_after = 2\ninterval = 1\n"
            )
            status_file = tmp_path / "run" / "status.json"
            log_path = tmp_path / "run.log"
            start_run(gateway, config, status_file, log_path)
            first = {DIVERTED, DIVERTED6, "203.0.113.20", "192.0.2.44"}
            wait_for(lambda: in_sets(gateway) == first, 30, "the first resolution applied")

            def resolved_since(moment: float) -> dict | None:
                """The first resolution that started after ``moment`` (once applied)."""
                try:
                    last = json.loads(status_file.read_text())["last_resolve"]
                except (OSError, ValueError):
                    return None
                return last if last and last["at"] > moment else None

            # The host moves: diverted at its new address after the next resolution.
            dns.set("blocked.example.com", a=[MOVED], aaaa=[DIVERTED6])
            moved = first | {MOVED}
            wait_for(lambda: in_sets(gateway) == moved, 30, "the new address diverted")
            assert_splash(site.get(MOVED, "blocked.example.com", "/page.html"), page=False)

            # Cleanfeed's attack: a listed host pointed at a busy third party.
            before = connections(proxy)
            dns.set("whole-site.blocked.test", a=[UNDIVERTED])
            now = time.time()
            outcome = wait_for(lambda: resolved_since(now), 30, "a resolution after the attack")
            assert in_sets(gateway) == moved, outcome
            response = site.get(UNDIVERTED, "unlisted.example.org", "/")
            assert response.status == 200
            assert site.http[UNDIVERTED].remotes[-1] == site.topo.CLIENT4  # not via the proxy
            assert connections(proxy) == before

            # A set suddenly more than doubling (growth_allowance 0): refused, old set stays.
            dns.set("www.example.org", a=FAN_OUT, aaaa=[DIVERTED6])
            now = time.time()
            outcome = wait_for(lambda: resolved_since(now), 30, "a resolution after the growth")
            assert outcome["ok"] is False and "REFUSED" in outcome["outcome"], outcome
            assert in_sets(gateway) == moved
            run_log = log_path.read_text()
            assert "REFUSED" in run_log
            for name in ("blocked.example.com", "whole-site", "www.example.org"):
                assert name not in run_log  # gate decisions name hosts by digest only
        finally:
            if proxy is not None:
                proxy.stop()
            dns.stop()
            site.close()


# -- the optional notrack chain ---------------------------------------------------------------


def test_with_the_notrack_chain_only_diverted_traffic_is_tracked(
    ca: TestCA, tmp_path: pathlib.Path, confdir: pathlib.Path
) -> None:
    """deploy/nftables-divert-notrack.nft: undiverted connections pass untracked (they cost
    the gateway nothing), diverted ones are still redirected to the proxy."""
    with Lab() as lab:
        site = Site.build(lab, ca, [UNDIVERTED, DIVERTED, UNDIVERTED6, DIVERTED6])
        try:
            gateway = site.topo.gateway
            set_elements(gateway, [DIVERTED, DIVERTED6])
            topo = site.topo
            load_notrack(
                gateway, [topo.GATEWAY4, topo.GATEWAY_UP4], [topo.GATEWAY6, topo.GATEWAY_UP6]
            )
            load_table(gateway)  # reloading the table keeps the notrack chain
            assert "skip_tracking" in gateway.run(
                "nft", "list", "chain", "inet", "blocklist", "skip_tracking"
            )
            proxy = start_proxy(
                gateway, ca, tmp_path / "proxy", listed_store(tmp_path), confdir,
                blocklist_intercept="never",
            )  # fmt: skip
            try:
                before = connections(proxy)
                for address in (UNDIVERTED, UNDIVERTED6):
                    response = site.get(address, "unlisted.example.org", "/page.html")
                    assert response.status == 200
                    assert site.http[address].remotes[-1] == site.topo.client_address(address)
                    reply, seen = site.https_get(address, "unlisted.example.org", "/")
                    assert reply.status == 200 and seen == site.ca.origin_der
                    assert site.quic_probe(address) == b"\xc0quic-initial"
                    assert not tracked(gateway, address), address
                # The gateway's own connections stay tracked, replies included.
                conn = http.client.HTTPConnection(UNDIVERTED, 80, timeout=15)
                with gateway.entered():
                    conn.connect()
                conn.request("GET", "/page.html", headers={"Host": "unlisted.example.org"})
                assert conn.getresponse().status == 200
                conn.close()
                entries = tracked(gateway, UNDIVERTED)
                assert entries and not any("UNREPLIED" in line for line in entries), entries
                for address in (DIVERTED, DIVERTED6):
                    assert_splash(
                        site.get(address, "blocked.example.com", "/page.html"), page=False
                    )
                    assert tracked(gateway, address), address
                    with pytest.raises(ConnectionRefusedError):  # QUIC still rejected
                        site.quic_probe(address)
                assert connections(proxy) == before + 2  # the two diverted, nothing else
            finally:
                proxy.stop()
        finally:
            site.close()
