"""The diversion table at boot (issue 25, item 5): the operator's guide's lines that include
it from /etc/nftables.conf, run as written in a network namespace this test makes, with
/etc seen through an overlay in a private mount namespace (this machine's /etc and its
root namespace's ruleset are never touched). Including deploy/nftables-divert.nft itself
failed with "unknown identifier 'SUBSCRIBERS'"; the wrapper defines it. Then a simulated
reboot (the ruleset flushed, /etc/nftables.conf loaded again: empty sets) that
``blocklist-divert run`` repairs."""

from __future__ import annotations

import asyncio
import pathlib
import shlex
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from test_divert_run import HealthServer, eventually

from divert.dataset import DiversionSet
from testlab.divert_lab import DIVERT_NFT, publish, set_contents, start_run
from testlab.netns import Lab, Namespace, unavailable

pytestmark = pytest.mark.skipif(
    bool(unavailable("nft", "unshare")), reason=unavailable("nft", "unshare") or ""
)

ROOT = DIVERT_NFT.parent.parent
GUIDE = ROOT / "docs" / "operators-guide.md"
#: Debian's /etc/nftables.conf as installed (nftables 1.0.6 and later).
DEBIAN_NFTABLES_CONF = """\
#!/usr/sbin/nft -f

flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter;
\t}
\tchain forward {
\t\ttype filter hook forward priority filter;
\t}
\tchain output {
\t\ttype filter hook output priority filter;
\t}
}
"""
A = DiversionSet.build({"h1": ["203.0.113.20", "2001:db8:2::20"]})


def guide_lines() -> str:
    """The guide's lines that install the table for the boot, but ``systemctl`` (no
    systemd here)."""
    text = GUIDE.read_text()
    start = text.index("install -m 0644 deploy/nftables-divert.nft")
    end = text.index("systemctl enable nftables", start)
    return textwrap.dedent(text[start:end])


@dataclass
class Etc:
    """/etc as the gateway's commands see it: an overlay over this machine's /etc, with
    Debian's nftables.conf and the guide's /etc/blocklist-proxy (install: ``mkdir -p``)."""

    ns: Namespace
    upper: pathlib.Path
    work: pathlib.Path

    @classmethod
    def make(cls, ns: Namespace, directory: pathlib.Path) -> Etc:
        upper, work = directory / "etc-upper", directory / "etc-work"
        (upper / "blocklist-proxy").mkdir(parents=True)
        work.mkdir()
        (upper / "nftables.conf").write_text(DEBIAN_NFTABLES_CONF)
        return cls(ns, upper, work)

    def sh(self, script: str) -> str:
        """``script`` in the namespace, in the repository (the guide's relative deploy/
        paths), with this /etc; AssertionError with its output when it fails."""
        overlay = f"lowerdir=/etc,upperdir={self.upper},workdir={self.work}"
        mount = f"mount -t overlay overlay -o {shlex.quote(overlay)} /etc"
        unshare = ["unshare", "--mount", "--propagation", "private"]
        done = subprocess.run(
            [*self.ns.exec_prefix(), *unshare, "sh", "-ec", f"{mount}\n{script}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"
        return done.stdout


@pytest.fixture
async def gateway(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Namespace, HealthServer]]:
    with Lab() as lab:
        ns = lab.namespace("boot")
        health = await HealthServer().start(ns.listen("127.0.0.1", 0))
        try:
            yield ns, health
        finally:
            await health.stop()


def sets(ns: Namespace) -> set[str]:
    try:
        return set(set_contents(ns, "divert4")) | set(set_contents(ns, "divert6"))
    except AssertionError:  # no table (between the flush and the reload)
        return set()


def test_including_the_table_itself_fails_as_the_issue_found(tmp_path: pathlib.Path) -> None:
    """Why the wrapper exists: nftables.conf gets no -D."""
    with Lab() as lab:
        etc = Etc.make(lab.namespace("noinc"), tmp_path)
        with pytest.raises(AssertionError, match="unknown identifier 'SUBSCRIBERS'"):
            etc.sh(
                f"echo 'include \"{DIVERT_NFT}\"' >> /etc/nftables.conf\nnft -f /etc/nftables.conf"
            )


async def test_the_guides_boot_include_loads_and_run_repairs_the_sets_after_a_reboot(
    gateway: tuple[Namespace, HealthServer], tmp_path: pathlib.Path
) -> None:
    ns, health = gateway
    etc = Etc.make(ns, tmp_path)
    await asyncio.to_thread(etc.sh, guide_lines())
    ruleset = ns.run("nft", "list", "ruleset")
    assert "table inet filter" in ruleset  # Debian's own table, from nftables.conf
    table = ns.run("nft", "list", "table", "inet", "blocklist")
    assert table.count('iifname "eth1"') == 4 and table.count("redirect to :8081") == 2
    assert sets(ns) == set()
    # Loaded a second time (nft -f /etc/nftables.conf, systemctl reload nftables): no error.
    await asyncio.to_thread(etc.sh, "nft -f /etc/nftables.conf")

    store = (tmp_path / "store").as_uri()
    await publish(store, A)
    config = tmp_path / "divert.toml"
    config.write_text(
        f'store = "{store}"\nhealth_url = "{health.url}"\n'
        "withdraw_after = 1\ninterval = 3600\nverify_interval = 1\n"
    )
    log = tmp_path / "run.log"
    start_run(ns, config, tmp_path / "run" / "status.json", log)
    wanted = {*A.ipv4, *A.ipv6}
    await eventually(lambda: sets(ns) == wanted, "run to fill the sets", timeout=30)

    # The reboot: nothing in the kernel, then nftables.service loading /etc/nftables.conf.
    ns.run("nft", "flush", "ruleset")
    await asyncio.to_thread(etc.sh, "nft -f /etc/nftables.conf")
    reloaded = time.monotonic()
    await eventually(lambda: sets(ns) == wanted, "run to repair the sets", timeout=30)
    print(f"sets refilled {time.monotonic() - reloaded:.1f} s after the reload")
    assert "repairing" in log.read_text()
