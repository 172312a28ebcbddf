"""An upstream that fails TLS verification (issue 26, item 12): on a decrypted listed host the
proxy connects to the origin itself, and an origin whose certificate it does not trust ends
the request with mitmproxy's 502. That used to leave nothing in the log and no count; now
it is logged without the URL or the host, and counted by reason."""

from __future__ import annotations

import pathlib

from testlab.harness import running, synced_store
from testlab.origins import Origins, TestCA

HOST = "blocked.example.com"  # listed (a page of it): decrypted, then fetched upstream


def test_an_untrusted_upstream_certificate_is_logged_and_counted(
    make_proxy, tmp_path: pathlib.Path
) -> None:
    rogue = Origins(TestCA(tmp_path / "rogue-ca"))  # a CA the proxy does not trust
    try:
        origin = rogue.start("rogue", tls=True)
        proxy = make_proxy(synced_store(tmp_path), routes={f"{HOST}:443": origin.port})
        with running(proxy):
            response, _ = proxy.https_get(HOST, "/other.html")  # unlisted page: goes upstream
            assert response.status == 502
            assert (
                proxy.metric_series("blocklist_upstream_tls_errors_total", reason="certificate")
                == 1
            )
            log = proxy.log()
            assert "TLS with an upstream server failed (certificate)" in log
            lines = [line for line in log.splitlines() if "upstream server failed" in line]
            assert lines and not any(HOST in line or "other.html" in line for line in lines)
    finally:
        rogue.close()
