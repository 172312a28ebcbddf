"""A routed ISP in network namespaces (issue 13): the diversion set as BGP routes.

No gateway holds an nft set here. A core router (BIRD 2, the test's stand-in for a vendor
box) learns /32 and /128 routes over a real iBGP session from the proxy host and installs
them in kernel table 100, which only subscriber traffic consults
(``ip rule add iif sub0 lookup 100``): the proxy host's own connections to the origins use
the ordinary table and are not sent back to it::

      client  sub0: 198.51.100.2  2001:db8:1::2
         |
      core    sub0: 198.51.100.1  2001:db8:1::1   ip rule: iif sub0 -> table 100 (BGP)
              up0:  203.0.113.1   2001:db8:2::1   forwarding, loose uRPF
              px0:  192.0.2.1     2001:db8:3::1   BIRD: iBGP AS 64512 with the proxy host
         |                     \\
      server  up0: 203.0.113.x    proxy  core0: 192.0.2.2  2001:db8:3::2
              origins                    deploy/nftables-routed-proxy.nft, the transparent
                                         proxy on :8081, the BGP speaker (BIRD or ExaBGP)

The core's import filter is what a vendor router's route-map does (operator guide): only
/32 and /128 carrying the operator's community, at most ``MAX_PREFIXES``.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from testlab.divert_lab import Site
from testlab.netns import CommandError, Lab, Namespace, Topology, add_address, gateway_topology
from testlab.origins import Origins, TestCA

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROUTED_NFT = ROOT / "deploy" / "nftables-routed-proxy.nft"
BIRD_DIVERT = ROOT / "deploy" / "bird-divert.conf"
EXABGP_CONF = ROOT / "deploy" / "exabgp.conf"

ASN = 64512
COMMUNITY = "64512:666"
PROXY4, PROXY6 = "192.0.2.2", "2001:db8:3::2"  # the proxy host: next hop of every route
CORE4, CORE6 = "192.0.2.1", "2001:db8:3::1"  # the core router, toward the proxy host
TABLE = 100  # the core's table for subscriber traffic
MAX_PREFIXES = 1000
PROXY_IF, CORE_IF = "px0", "core0"  # the core's interface to the proxy host, and back


def core_config() -> str:
    """The core router: BGP routes into tables of their own, exported to kernel table 100."""
    community = "({}, {})".format(*COMMUNITY.split(":"))
    accept = (
        f"if {community} ~ bgp_community && (65535, 65281) ~ bgp_community "
        "&& net.len = {len} then accept; reject;"
    )
    return f"""\
router id {CORE4};
protocol device {{ scan time 10; }}
ipv4 table divert4;
ipv6 table divert6;
protocol kernel kernel4 {{
    kernel table {TABLE};
    ipv4 {{ table divert4; import none; export all; }};
}}
protocol kernel kernel6 {{
    kernel table {TABLE};
    ipv6 {{ table divert6; import none; export all; }};
}}
protocol bgp proxy {{
    local {CORE4} as {ASN};
    neighbor {PROXY4} as {ASN};
    direct;
    hold time 9;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{
        table divert4;
        gateway direct;
        import filter {{ {accept.format(len=32)} }};
        import limit {MAX_PREFIXES} action disable;
        export none;
    }};
    ipv6 {{
        table divert6;
        gateway direct;
        import filter {{ {accept.format(len=128)} }};
        import limit {MAX_PREFIXES} action disable;
        export none;
    }};
}}
"""


@dataclass(eq=False)
class Routed:
    """The topology, the core router's BIRD, origins on the server's addresses."""

    lab: Lab
    site: Site
    proxy_ns: Namespace
    workdir: pathlib.Path

    @property
    def core(self) -> Namespace:
        return self.site.topo.gateway

    @property
    def control(self) -> pathlib.Path:
        return self.workdir / "core.ctl"

    @classmethod
    def build(cls, lab: Lab, ca: TestCA, servers: Iterable[str], workdir: pathlib.Path) -> Routed:
        servers = list(servers)
        topo = gateway_topology(lab, servers)
        site = Site(lab, topo, ca, Origins(ca))
        try:
            routed = cls(lab, site, lab.namespace("proxy"), workdir)
            routed._wire()
            for address in servers:
                site.serve(address)
        except BaseException:
            site.close()
            raise
        return routed

    def _wire(self) -> None:
        core, proxy = self.core, self.proxy_ns
        self.lab.link(core, PROXY_IF, proxy, CORE_IF)
        for ns, interface, v4, v6 in (
            (core, PROXY_IF, CORE4, CORE6),
            (proxy, CORE_IF, PROXY4, PROXY6),
        ):
            add_address(ns, interface, v4)
            add_address(ns, interface, v6)
        proxy.ip("route", "add", "default", "via", CORE4, "dev", CORE_IF, "onlink")
        proxy.ip("-6", "route", "add", "default", "via", CORE6, "dev", CORE_IF, "onlink")
        proxy.sysctl("net.ipv4.ip_forward", "1")
        proxy.sysctl("net.ipv6.conf.all.forwarding", "1")
        proxy.sysctl("net.ipv4.conf.all.send_redirects", "0")
        # The proxy answers subscribers from the origins' addresses, through the core.
        for interface in ("all", PROXY_IF):
            core.sysctl(f"net.ipv4.conf.{interface}.rp_filter", "2")
        for family in ("-4", "-6"):
            core.ip(family, "rule", "add", "iif", Topology.SUBSCRIBERS, "lookup", str(TABLE))
        proxy.run("nft", "-D", f"CORE={CORE_IF}", "-f", str(ROUTED_NFT))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "core.conf").write_text(core_config())
        with open(self.workdir / "core.log", "ab") as log:
            core.popen(
                ["bird", "-f", "-c", str(self.workdir / "core.conf"), "-s", str(self.control)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def close(self) -> None:
        self.site.close()

    # -- the core router's view ------------------------------------------------------------

    def routes(self) -> dict[str, str]:
        """Table 100 of the core: {prefix: next hop}; anything else there (a route without a
        gateway, another device) shows up as its own value, so it cannot pass unnoticed."""
        found: dict[str, str] = {}
        for family in ("-4", "-6"):
            try:
                out = self.core.ip("-j", family, "route", "show", "table", str(TABLE))
            except CommandError as exc:  # no route was ever in it
                if "table does not exist" not in str(exc):
                    raise
                continue
            for route in json.loads(out or "[]"):
                prefix = str(ipaddress.ip_network(route["dst"]))
                found[prefix] = f"{route.get('gateway', '-')} dev {route.get('dev', '-')}"
        return found

    def birdc(self, *args: str) -> str:
        done = subprocess.run(
            ["birdc", "-s", str(self.control), *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def received(self) -> tuple[int, int]:
        """Prefixes the core has received in UPDATEs since the session started, both
        families: (announced, withdrawn)."""
        text = self.birdc("show", "protocols", "all", "proxy")
        counts = [0, 0]
        for index, kind in enumerate(("updates", "withdraws")):
            for match in re.finditer(rf"Import {kind}:\s+(\d+)", text):
                counts[index] += int(match[1])
        return counts[0], counts[1]

    def session_up(self) -> bool:
        return "Established" in self.birdc("show", "protocols", "proxy")


def expected(addresses: Iterable[str]) -> dict[str, str]:
    """What table 100 holds for ``addresses``: a /32 or /128 each, via the proxy host."""
    out: dict[str, str] = {}
    for address in addresses:
        ip = ipaddress.ip_address(address)
        hop = PROXY4 if ip.version == 4 else PROXY6
        out[str(ipaddress.ip_network(ip))] = f"{hop} dev {PROXY_IF}"
    return out
