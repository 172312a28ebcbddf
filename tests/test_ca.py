"""The proxy's CA is named after the operator (issue 26, item 5): it is what every device's
trust store and certificate viewer shows, so pupils and staff see who runs the filter, not
"mitmproxy". An existing CA (the school's own, or one made before) is never replaced."""

from __future__ import annotations

import pathlib

from cryptography import x509
from cryptography.x509.oid import NameOID

from testlab.harness import Proxy, running, synced_store


def names(pem: pathlib.Path) -> tuple[str, str]:
    subject = x509.load_pem_x509_certificate(pem.read_bytes()).subject
    org = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(org), str(cn)


def test_the_ca_is_named_after_the_operator_and_never_replaced(
    make_proxy, tmp_path: pathlib.Path
) -> None:
    confdir = tmp_path / "conf"
    options = {"blocklist_operator": "Example School IT"}
    proxy: Proxy = make_proxy(synced_store(tmp_path), options=options)
    proxy.confdir = confdir
    with running(proxy):
        assert names(confdir / "mitmproxy-ca-cert.pem") == (
            "Example School IT",
            "Example School IT web filter CA",
        )
        response, _ = proxy.https_get("blocked.example.com", "/page.html")  # signed by it
        assert response.status == 451
    made = (confdir / "mitmproxy-ca.pem").read_bytes()
    again: Proxy = make_proxy(
        synced_store(tmp_path / "again"), options={"blocklist_operator": "Someone Else"}
    )
    again.confdir = confdir
    with running(again):
        assert (confdir / "mitmproxy-ca.pem").read_bytes() == made
