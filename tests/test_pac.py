"""deploy/pac/proxy.pac evaluated by a JavaScript engine (Node, with the PAC helper functions
browsers provide): hosts are spread over the instances, each host always to the same first
instance with the others as failover, and local names go direct (issue 26, items 1 and 10).

A browser tries a PAC's list in order, so a fixed list sent every request to the first
instance and left the second idle."""

from __future__ import annotations

import collections
import json
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAC = ROOT / "deploy" / "pac" / "proxy.pac"
#: The PAC helpers the file uses, as browsers define them (a subset, without DNS).
HELPERS = """
function isPlainHostName(host) { return host.indexOf(".") < 0; }
function dnsDomainIs(host, domain) {
  return host.length >= domain.length && host.substring(host.length - domain.length) === domain;
}
function isInNet(host, pattern, mask) {
  function n(a) { return a.split(".").reduce(function (x, o) { return x * 256 + (+o); }, 0); }
  return (n(host) & n(mask)) >>> 0 === (n(pattern) & n(mask)) >>> 0;
}
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def evaluate(hosts: list[str], proxies: list[str] | None = None) -> list[str]:
    """FindProxyForURL for each host, with PROXIES replaced when given."""
    source = PAC.read_text()
    if proxies is not None:
        source += f"\nPROXIES = {json.dumps(proxies)};\n"
    script = (
        HELPERS
        + source
        + f"""
var hosts = {json.dumps(hosts)};
console.log(JSON.stringify(hosts.map(function (h) {{
  return FindProxyForURL("https://" + h + "/", h);
}})));
"""
    )
    done = subprocess.run(
        ["node", "-"], input=script, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


HOSTS = [f"site{i}.example.{tld}" for i in range(3000) for tld in ("com", "net", "org")]


@pytest.mark.parametrize("count", [2, 3, 4])
def test_hosts_are_spread_evenly_and_every_instance_stays_a_failover(count: int) -> None:
    proxies = [f"proxy.school.example:{8081 + i}" for i in range(count)]
    answers = evaluate(HOSTS, proxies)
    firsts = collections.Counter(a.split(";")[0] for a in answers)
    assert len(firsts) == count
    share = len(HOSTS) / count
    assert all(abs(n - share) < 0.1 * share for n in firsts.values()), firsts
    for answer in answers:
        entries = [e.strip() for e in answer.split(";")]
        assert sorted(entries) == sorted(f"PROXY {p}" for p in proxies)  # all, once each
        assert "DIRECT" not in answer  # no silent way around the filter


def test_one_host_always_gets_the_same_first_instance() -> None:
    assert evaluate(HOSTS[:200]) == evaluate(HOSTS[:200])
    assert len(set(evaluate(["blocked.example.com"] * 5))) == 1


def test_local_names_and_addresses_go_direct() -> None:
    local = ["intranet", "school.example", "www.school.example", "printer.local", "10.1.2.3",
             "192.168.0.7", "127.0.0.1"]  # fmt: skip
    assert evaluate(local) == ["DIRECT"] * len(local)
    assert evaluate(["notschool.example", "198.51.100.7"])[0].startswith("PROXY ")
