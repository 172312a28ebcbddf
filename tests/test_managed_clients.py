"""Managed and unmanaged devices on one proxy (issue 26, item 6): a school decrypts listed
hosts for its managed devices, which trust its CA, and shows them the splash page; a pupil's
own phone has not the CA and would get a certificate error instead, so a host with any
listed entry is refused to it at the CONNECT, never decrypted. Two real clients, from two
loopback addresses."""

from __future__ import annotations

import http.client
import pathlib
import ssl

import pytest

from testlab.harness import Proxy, World, running, synced_store, wait_for

MANAGED = "127.0.0.2"
UNMANAGED = "127.0.0.1"


def https_get(proxy: Proxy, source: str, host: str, path: str) -> tuple[int, bytes]:
    """GET https://host/path through a CONNECT tunnel from the address ``source``."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        proxy.port,
        timeout=15,
        context=proxy.client_context(trust_mitm=source == MANAGED),
        source_address=(source, 0),
    )
    conn.set_tunnel(host, 443)
    try:
        conn.request("GET", path, headers={"Accept": "text/html"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def proxy(make_proxy, tmp_path: pathlib.Path) -> Proxy:
    return make_proxy(
        synced_store(tmp_path), options={"blocklist_managed_clients": f"{MANAGED}/32"}
    )


def test_listed_hosts_are_decrypted_for_managed_devices_and_refused_to_the_others(
    proxy: Proxy, world: World
) -> None:
    with running(proxy):
        # Managed: the splash page, over a decrypted connection it trusts.
        status, body = https_get(proxy, MANAGED, "blocked.example.com", "/page.html")
        assert status == 451 and b"Access denied" in body
        # Unmanaged: the CONNECT itself is refused; nothing decrypted, no certificate error.
        before = world.listed_tls.connections
        with pytest.raises(OSError, match="451"):
            https_get(proxy, UNMANAGED, "blocked.example.com", "/page.html")
        assert world.listed_tls.connections == before
        assert proxy.metric_series("blocklist_tls_total", decision="refuse-unmanaged") == 1
        # Unlisted hosts pass untouched for both.
        for source in (MANAGED, UNMANAGED):
            status, _ = https_get(proxy, source, "unlisted.example.org", "/x")
            assert status == 200


def test_a_bad_network_is_refused_when_set(make_proxy, tmp_path: pathlib.Path) -> None:
    proxy = make_proxy(
        synced_store(tmp_path), options={"blocklist_managed_clients": "10.20.0.0/33"}
    )
    proxy.start(wait=False)
    assert proxy.wait_exit() != 0
    log = proxy.log()
    # One line naming the option; before, a refused option rolled back into a loop of
    # thousands of lines and a RecursionError's traceback.
    assert "blocklist: blocklist_managed_clients: '10.20.0.0/33'" in log
    assert "Traceback" not in log and len(log.splitlines()) < 20, log


def test_a_device_without_the_ca_is_counted_and_said_without_the_host(
    make_proxy, tmp_path: pathlib.Path, world: World
) -> None:
    """With every client taken as managed (no blocklist_managed_clients), a device without
    the proxy's CA refuses the decrypted listed host's certificate. mitmproxy's own line
    names the host and stays out of the log (blocklist_log_connections is off); the proxy
    counts it and says so without the host, so an operator sees devices that lack the CA."""
    with running(make_proxy(synced_store(tmp_path))) as proxy:
        before = world.listed_tls.connections
        for _ in range(2):
            with pytest.raises(ssl.SSLCertVerificationError):
                proxy.https_get("blocked.example.com", "/page.html", trust_mitm=False)
        wait_for(
            lambda: (
                proxy.metric_series("blocklist_client_tls_errors_total", reason="certificate") == 2
            ),
            10,
            "both refusals counted",
        )
        assert world.listed_tls.connections == before  # nothing fetched for it
        log = proxy.log()
        said = [line for line in log.splitlines() if "refused the proxy's certificate" in line]
        assert len(said) == 1, log  # once a minute at most, not once a connection
        assert "blocklist_managed_clients" in said[0]
        assert "blocked.example.com" not in log
