"""The routed form of the ISP chapter (docs/operators-guide.md, section 4, "Routed networks:
the diversion set over BGP"), walked on Debian 13 from the guide's own text: once with BIRD 2
(3b) and once with ExaBGP (3a), each on a system of its own.

Opt-in like tests/test_walk.py (minutes; root, mmdebstrap, unshare, chroot):
``BLOCKLIST_WALK_TESTS=1 .venv/bin/python -m pytest -s tests/test_walk_bgp.py``. The system,
the install and the machinery are testlab/walk.py's (a fresh mmdebstrap'd trixie, the base
tarball cached in var/walk/, the guide's install done in it); the steps the routed form
shares with the gateway's (Redis, the sync, the key, divert.toml, the proxy) are taken from
the guide as tests/test_walk_isp.py takes them, and the Internet around the proxy host and
the subscriber's checks are testlab/walk.py's, as that walk's.

- The networks: the walk's own network namespace is the proxy host (Redis, the sync, the
  transparent proxy, the BGP speaker from Debian's ``bird2`` or ``exabgp`` as the guide
  installs it, ``run``, the routed table), its interface toward the core ``eth0`` as the guide's ``CORE=eth0``. Inside
  it the walk makes ``core`` (the core router: BIRD 2 with the guide's whole bird.conf for a
  Linux core, its own /etc/bird through /etc/netns/core/, control socket
  /run/core-bird.ctl; ``eth1`` the subscribers' side, ``eth2`` toward the proxy host,
  ``eth0`` the Internet), ``sub`` (a subscriber, 198.51.100.2 and 2001:db8:1::2) and
  ``inet`` (the origins, and a DNS server on the guide's resolvers 192.0.2.53 and
  2001:db8::53). The proxy host is 192.0.2.2 and 2001:db8:3::2 (the guide's ``next_hop``,
  and the addresses deploy/bird-divert.conf ships with), the core 192.0.2.1: the shipped
  file is installed unedited. Everything goes with the walk's namespaces.
- What is not typed as written, and why: ``apt-get install`` gets ``-y`` and runs before the
  chapter's network exists (it needs the mirror). systemd is not PID 1 in a chroot:
  ``systemctl`` lines run testlab/walk.py's SYSTEMCTL (the unit as installed, User=,
  Environment=, $VARIABLES, READY=1), and the package's own start of BIRD at install is
  ``systemctl start bird`` once the network exists (ExaBGP's package starts nothing without
  its config). 3a's cron line is not scheduled (no cron): its command is run by hand after
  the sync, as cron's next run. ``bird2`` is installed in the ExaBGP walk too, for the core
  router, but not started on the proxy host. The core router's commands run in
  ``ip netns exec core`` and its ``birdc`` gets ``-s /run/core-bird.ctl`` (two BIRDs share
  the chroot's /run); the subscriber's in ``ip netns exec sub``.
- The working state, as the guide promises it: the core learns a /32 or /128 for each
  address of the set (the listed hosts', the IP-literal entry's, the canary's), next hop the
  proxy host, with NO_EXPORT and the operator's community, and its count matches
  ``blocklist-divert status``; the canary answers the self-test page; a listed page 451 over
  IPv4 and IPv6, a host listed whole refused at the handshake, an unlisted page on a
  diverted host fetched by the proxy; an undiverted host reached directly (the origin sees
  the subscriber; the proxy's connection count and the routed table's counter do not move).
  Then what the guide's table "When something dies" says: ``run`` stopped (BIRD: the
  unit stopped; ExaBGP: its API process killed), the speaker keeps announcing the last set
  (and the 451 stays), ``run`` back (BIRD: started; ExaBGP: respawned by ExaBGP) without a
  change; the proxy stopped: every route withdrawn after ``withdraw_after``, the listed page
  reached directly, the canary no answer; the proxy back: announced again; the speaker
  stopped: the core drops every route at once; started: back (BIRD from the include files,
  ExaBGP from a new ``run``); a newly listed host routed right after its sync (ExaBGP: after
  the cron line's resolve); ``run``'s log with no traceback, refused command or permission
  error.
- What the first walk found, fixed in the guide: the routed form did not say which steps of
  the gateway's setup the proxy host takes (its step 0 now does: section 2's 1 and 2,
  "Setting it up" 1, 2 and 4, step 5's unit copied but not started); its step 2 repeated
  ``health_url`` and ``withdraw_after``, so appended to step 2's divert.toml TOML refused
  the file; 3b installed no BIRD; the Linux core's config gave its IPv6 half as a comment
  (and no router id or device protocol for a BIRD of its own), its ``ip rule`` as a comment
  with a placeholder; the router's check ``birdc show route where (64512, 666) ~
  bgp_community count`` is a shell syntax error unquoted, and quoted counts only
  master4/master6 (0: the learned routes are in divert4/divert6); ``ip route show table
  100`` showed no IPv6; the table "When something dies" said a restarted BIRD is back
  "within a second" (4.1 s here: BIRD's connect delay is 5 s). Machinery: SYSTEMCTL now
  replaces ``$VARIABLES`` (Debian's bird.service needs it). 3a (ExaBGP) was prose with no
  command (who reads divert.toml, the password and a state directory for ExaBGP's user,
  the cron line): it is now a block of commands, walked here.
- Measured here (2 shared cores, the base tarball cached): the BIRD form alone 3 min 49 s
  from nothing (install 71 s, its own steps 66 s, 33 s of them waiting for
  ``withdraw_after``); both forms 10 min 31 s at a load of 6 to 8 (installs 111 and 188 s,
  own steps 60 and 64 s). Withdrawal 30 to 33 s after the proxy stopped; BIRD back 4.1 to
  5.1 s after its restart, ExaBGP 2.0 to 4.1 s.
- Not walked: systemd itself (the units' sandboxing: ProtectSystem=strict and
  ReadWritePaths= for the include files; cron's schedule), a vendor router (the IOS-like
  lines), BFD, a second core router.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import re
import textwrap

import pytest
from test_walk_isp import isp_steps

from testlab.walk import (
    GUIDE,
    LISTED,
    NEWLY,
    REDIS_PASSWORD,
    SRC,
    SUB,
    UNLISTED,
    Steps,
    block,
    blocked,
    canary_lines,
    canary_table,
    canary_works,
    expect,
    fails_open,
    install_first,
    installed_system,
    internet,
    list_newly,
    opt_in,
    plain_block,
    reached,
    report,
    run_steps,
    section,
    shell_quote,
    systemctl,
    systemctl_lines,
    withdrawn_metric,
    working_state,
    write_systemctl,
    zone,
)

pytestmark = opt_in("the ISP chapter's routed form (BGP: BIRD 2, ExaBGP)")

CORE = "ip netns exec core"
CORE_CTL = "/run/core-bird.ctl"
ZONE = zone("2001:db8:4")
#: The set the core must learn: the listed hosts', the feed's IP literal, the canary.
ROUTES4 = ["192.0.2.44", "192.0.2.254", "203.0.113.20", "203.0.113.21", "203.0.113.22"]
ROUTES6 = ["2001:db8::254", "2001:db8:4::20"]

#: (walk) the core router, the subscriber and the Internet around the proxy host.
NETWORKS = (
    textwrap.dedent("""\
    grep -q ' walk$' /etc/hosts || echo '127.0.1.1 walk' >> /etc/hosts   # as Debian's installer writes the host's name
    ip netns add core; ip netns add sub; ip netns add inet
    ip link add eth0 type veth peer name eth2 netns core
    ip -n core link add eth1 type veth peer name eth0 netns sub
    ip -n core link add eth0 type veth peer name eth0 netns inet
    ip addr add 192.0.2.2/30 dev eth0; ip addr add 2001:db8:3::2/64 dev eth0 nodad
    ip -n core addr add 192.0.2.1/30 dev eth2; ip -n core addr add 2001:db8:3::1/64 dev eth2 nodad
    ip -n core addr add 198.51.100.1/24 dev eth1; ip -n core addr add 2001:db8:1::1/64 dev eth1 nodad
    ip -n core addr add 203.0.113.1/24 dev eth0; ip -n core addr add 2001:db8:2::1/64 dev eth0 nodad
    ip -n sub addr add 198.51.100.2/24 dev eth0; ip -n sub addr add 2001:db8:1::2/64 dev eth0 nodad
    ip -n inet addr add 203.0.113.2/24 dev eth0; ip -n inet addr add 2001:db8:2::2/64 dev eth0 nodad
    ip link set eth0 up
    for i in eth0 eth1 eth2; do ip -n core link set $i up; done
    for ns in core sub inet; do ip -n $ns link set lo up; done
    for ns in sub inet; do ip -n $ns link set eth0 up; done
    # the proxy host's default route points at the core router (the guide's step 1)
    ip route add default via 192.0.2.1; ip -6 route add default via 2001:db8:3::1
    ip netns exec core sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    ip -n core route add default via 203.0.113.2; ip -n core -6 route add default via 2001:db8:2::2
    ip -n sub route add default via 198.51.100.1; ip -n sub -6 route add default via 2001:db8:1::1
    ip -n inet route add 198.51.100.0/24 via 203.0.113.1; ip -n inet route add 192.0.2.0/30 via 203.0.113.1
    ip -n inet -6 route add 2001:db8:1::/64 via 2001:db8:2::1; ip -n inet -6 route add 2001:db8:3::/64 via 2001:db8:2::1
    """)
    + internet(ZONE)
    + textwrap.dedent(f"""\
    for n in $(seq 60); do {SUB} curl -s -m 1 -o /dev/null -g 'http://[2001:db8:4::30]/' && break; sleep 0.5; done
    {SUB} curl -sS -m 5 http://{UNLISTED}/index.html | grep -q 'origin page'   # the core routes
    """)
)


def until(name: str, condition: str, tries: int) -> str:
    """Poll the shell ``condition`` once a second, ``tries`` times at most; say how long it
    took (in /tmp/took-NAME)."""
    tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    said = re.sub(r"[^A-Za-z0-9_ ,.:()-]", "", name)  # inside the shell's and awk's quotes
    return textwrap.dedent(f"""\
        # {name}
        ok=; t0=$(date +%s.%N); for n in $(seq {tries}); do
          if {condition}; then ok=1; break; fi
          sleep 1
        done
        [ -n "$ok" ] || {{ echo "timed out ({tries} s): {said}"; exit 1; }}
        echo "$(date +%s.%N) $t0" | awk '{{printf "took %.1f s: {said}\\n", $1 - $2}}' | tee /tmp/took-{tag}
        """)


def routes_are(addresses4: list[str], addresses6: list[str]) -> str:
    """The shell condition: the core's table 100 holds exactly these, each via the proxy
    host (TABLE100's function defined)."""
    v4 = " ".join(f"{a}=192.0.2.2" for a in sorted(addresses4))
    v6 = " ".join(f"{a}=2001:db8:3::2" for a in sorted(addresses6))
    return f'[ "$(table100 4)" = "{v4}" ] && [ "$(table100 6)" = "{v6}" ]'


#: (walk) table100 FAMILY: the core's table 100 as "prefix=next hop" words, sorted.
TABLE100 = textwrap.dedent("""\
    table100() { ip -n core -"$1" route show table 100 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "via") print $1 "=" $(i + 1)}' | sort | tr '\\n' ' ' | sed 's/ $//'; }
    """)


def bgp_steps(speaker: str) -> tuple[Steps, Steps, list[str]]:
    """The routed form with ``speaker`` ("bird": 3b, "exabgp": 3a): (steps with the
    machine's network: packages; steps in the walk's networks; not run)."""
    guide = GUIDE.read_text()
    scale = section(guide, "## 4. An ISP at scale")
    setup = section(scale, "### Setting it up")
    routed = section(scale, "### Routed networks")
    not_run: list[str] = []

    # What the routed form shares with the gateway: section 2's Redis and sync, the key,
    # divert.toml with its first sync and resolve, the proxy (step 0 of the routed form).
    isp_packages, isp, isp_not_run = isp_steps()
    named = dict(isp)
    not_run += [n for n in isp_not_run if "nftables" not in n and "notrack" not in n]
    assert re.search(r"steps 1 \(the key\), 2 \(.*\) and 4", re.sub(r"\s+", " ", routed)), (
        "the routed form should say which steps of 'Setting it up' it takes"
    )
    run_unit = block(setup, "sh", "blocklist-divert.service")
    unit_lines = [
        line for line in run_unit.splitlines() if line.startswith(("cp ", "sed ", "    "))
    ]
    assert unit_lines and unit_lines[0].startswith("cp "), run_unit
    unit_copy = "\n".join(unit_lines) + "\n"

    # 1. The proxy host; 2. divert.toml's BGP keys; 3a (ExaBGP) or 3b (BIRD).
    host = block(routed, "sh", "nftables-routed-proxy.nft")
    keys = block(routed, "toml", "next_hop")
    packages = isp_packages[0][1] + "apt-get install -y bird2   # (walk) the core router's\n"
    if speaker == "bird":
        three = block(routed, "sh", "install -d -o blocklist -g bird")
        unit = "blocklist-divert"
        log = "/tmp/blocklist-divert.service.log"
    else:
        three = block(routed, "sh", "apt-get install exabgp")
        unit = "exabgp"
        log = "/tmp/exabgp.service.log"
    speaker_packages, three = install_first(three)
    packages += speaker_packages
    enable = re.search(
        r"^(systemctl daemon-reload && )?systemctl enable --now (\S+).*$", three, re.MULTILINE
    )
    assert enable and enable.group(2) == unit, three
    three = three.replace(enable.group(0), systemctl("start", unit))
    three, skipped = systemctl_lines(three)
    not_run += skipped
    cron = re.search(
        r"^echo '(\S+ \S+ \S+ \S+ \S+) (\S+) (.*)' \\\n\s*> (/etc/cron.d/\S+)$", three, re.MULTILINE
    )
    if speaker == "exabgp":
        assert cron and cron.group(2) == "blocklist", three
        not_run.append(
            f"{cron.group(4)}: cron's schedule ({cron.group(1)}); its command is run by hand after each sync"
        )

    # 4. The core router: its bird.conf, its rules; the checks from the router.
    core_conf = plain_block(routed, "protocol bgp")
    core_sh = block(routed, "sh", "lookup 100")
    verify = plain_block(routed, "birdc")
    checks = [
        re.sub(r"\s+#.*$", "", line)
        for line in verify.splitlines()
        if line.startswith(("birdc ", "ip "))
    ]
    assert len(checks) == 2 and checks[0].startswith("birdc "), verify
    count_line = checks[0].replace("birdc ", f"birdc -s {CORE_CTL} ", 1)
    core = (
        "# (walk) the core router's own /etc/bird (ip netns exec core binds /etc/netns/core/bird there)\n"
        "mkdir -p /etc/netns/core/bird\n"
        f"cat > /etc/netns/core/bird/bird.conf <<'EOF'\n{core_conf}EOF\n"
        f"{CORE} bird -p\n"
        f"{CORE} bird -f -s {CORE_CTL} > /tmp/core-bird.log 2>&1 &\n"
        f"cat > /root/walk/core.sh <<'EOF'\n{core_sh}EOF\n"
        f"{CORE} sh -ex /root/walk/core.sh\n"
    )
    verify_steps = (
        TABLE100
        + until(
            "the core learns the set (the canary, the listed hosts, the IP literal)",
            routes_are(ROUTES4, ROUTES6),
            60,
        )
        + f"{CORE} birdc -s {CORE_CTL} show protocols all blocklist_proxy | grep -q Established\n"
        + f"{CORE} {count_line} | tee /tmp/core-count\n"
        + f"{CORE} sh -c {shell_quote(checks[1])}\n"
        + f"{REDIS_PASSWORD} blocklist-divert status | tee /tmp/status\n"
        + "total=$(sed -n 's/^active set: version [0-9]*, \\([0-9]*\\) addresses.*/\\1/p' /tmp/status)\n"
        + 'grep -Eq "(^| )$total of [0-9]+ routes" /tmp/core-count || { echo "the router holds not the $total of status"; exit 1; }\n'
        + f"{CORE} birdc -s {CORE_CTL} show route table all all > /tmp/core-routes.txt\n"
        + "grep -c 'BGP.community: (64512,666) (65535,65281)\\|BGP.community: (65535,65281) (64512,666)' /tmp/core-routes.txt | grep -qx \"$total\" || { cat /tmp/core-routes.txt; exit 1; }\n"
    )

    # The canary from a subscriber (step 6), and what the guide's table says it means.
    canary = canary_lines(setup)
    works, nothing, _refused = canary_table(setup)
    canary_ok = canary_works(canary, works, tries=10, every_word=False)
    working = working_state(
        ZONE, proxy="192.0.2.2", proxy_is="the proxy host", table="blocklist_routed"
    )
    if speaker == "bird":
        stop_run = (
            systemctl("stop", "blocklist-divert")
            + "\n# the guide: BIRD keeps announcing the last set while run is stopped\n"
        )
        start_run = systemctl("start", "blocklist-divert") + "\n"
    else:
        # The guide: ExaBGP keeps the routes and starts run again, whose first
        # announcement clears what its predecessor left.
        stop_run = textwrap.dedent("""\
            # (walk) run, ExaBGP's API process, dies (SIGKILL, by its PID)
            exabgp=$(cat /run/walk-units/exabgp.service.pid)
            api() { for p in $(cat /proc/$exabgp/task/$exabgp/children); do grep -qa blocklist-divert /proc/$p/cmdline && echo $p; done; true; }
            first=$(api); test -n "$first"
            kill -KILL $first
            """)
        start_run = until(
            "ExaBGP starts run again",
            '[ -n "$(api)" ] && [ "$(api)" != "$first" ]',
            30,
        )
    run_stopped = (
        TABLE100
        + stop_run
        + f"{CORE} birdc -s {CORE_CTL} show protocols blocklist_proxy | grep -q Established\n"
        + f"{routes_are(ROUTES4, ROUTES6)} || {{ echo 'the routes left with run'; exit 1; }}\n"
        + blocked("a listed page: still the splash page", f"http://{LISTED}/page.html")
        + start_run
        + f"{routes_are(ROUTES4, ROUTES6)} || {{ echo 'the routes changed with run back'; exit 1; }}\n"
    )
    withdrawn = withdrawn_metric(1) if speaker == "bird" else ""
    restored = withdrawn_metric(0) if speaker == "bird" else ""
    withdrawal = (
        TABLE100
        + systemctl("stop", "blocklist-proxy@8081")
        + "\n"
        + until(
            "withdrawn after withdraw_after: the core's table 100 empty", routes_are([], []), 90
        )
        + withdrawn
        + f"grep -q WITHDRAWN {log}\n"
        + fails_open(ZONE)
        + expect(
            "the canary: the table's 'no answer' row",
            f"{SUB} {canary[0]}",
            nothing,
        )
        + systemctl("start", "blocklist-proxy@8081")
        + "\n"
        + until(
            "the proxy healthy again: the set announced again", routes_are(ROUTES4, ROUTES6), 60
        )
        + blocked("and the listed page blocked", f"http://{LISTED}/page.html", tries=5)
        + restored
    )
    name = {"bird": "BIRD", "exabgp": "ExaBGP"}[speaker]
    daemon = {"bird": "bird", "exabgp": "exabgp"}[speaker]
    back = {"bird": "the set back from the include files", "exabgp": "a new run announces the set"}
    dies = (
        TABLE100
        + systemctl("stop", daemon)
        + "\n"
        + until(f"{name} stopped: the core drops every route", routes_are([], []), 30)
        + reached("the listed page, reached directly", f"http://{LISTED}/page.html", "-4")
        + systemctl("start", daemon)
        + "\n"
        + until(f"{name} started: {back[speaker]}", routes_are(ROUTES4, ROUTES6), 300)
        + blocked("and the listed page blocked", f"http://{LISTED}/page.html", tries=5)
    )
    resolve = block(setup, "sh", "resolve")
    newly = (
        TABLE100
        + list_newly(ZONE, resolve)
        + (
            ""
            if speaker == "bird"
            else f"runuser -u blocklist -- env {cron.group(3)}   # (walk) cron's next run\n"
        )
        + until(
            "the new version followed at once: the core routes the new host",
            routes_are([*ROUTES4, "203.0.113.40"], ROUTES6),
            60,
        )
        + blocked("the new host's page: the splash page", f"http://{NEWLY}/new.html", tries=5)
    )

    package_start: Steps = (
        [
            (
                "(walk) BIRD as its package starts it on a booted system",
                systemctl("start", "bird") + "\n",
            )
        ]
        if speaker == "bird"
        else []
    )
    steps: Steps = [
        ("(walk) networks: core router, subscriber, Internet, DNS, origins", NETWORKS),
        *package_start,
        ("0. 2.1 Redis, locked down", named["2.1 Redis, locked down"]),
        ("0. 2.2 sync into Redis", named["2.2 sync into Redis"]),
        ("0. 4.1 the hostnames, encrypted", named["4.1 the hostnames, encrypted"]),
        ("0. 4.2 divert.toml, sync and resolve", named["4.2 divert.toml, sync and resolve"]),
        ("0. 4.4 the proxy", named["4.4 the proxy"]),
        ("0. 4.5 run's unit, copied", f"cd {SRC}\n{unit_copy}"),
        ("1. the proxy host", f"cd {SRC}\n{host}"),
        (
            "2. divert.toml's BGP keys",
            f"cat >> /etc/blocklist-proxy/divert.toml <<'EOF'\n{keys}EOF\n",
        ),
        ("3b. BIRD 2" if speaker == "bird" else "3a. ExaBGP", f"cd {SRC}\n{three}"),
        ("4. the core router", core),
        ("4. verify from the router", verify_steps),
        ("(4.6) the canary from a subscriber", canary_ok),
        ("(walk) the working state", working),
        (f"(walk) run stopped: {name} keeps the routes", run_stopped),
        ("(walk) the proxy stopped: withdrawn; back: announced", withdrawal),
        (f"(walk) {name} stopped and started", dies),
        ("(walk) a newly listed host", newly),
        (
            "(walk) run's log: no traceback, no refused command, no permission error",
            f"tail -n 60 {log}\n"
            f"if grep -Ein 'traceback|refused a command|permission denied' {log}; then exit 1; fi\n"
            + (
                ""
                if speaker == "bird"
                else f"grep 'not resolving: /etc/blocklist-proxy/divert.key is not readable' {log}   # it follows the store, and says so\n"
            ),
        ),
    ]
    return [(f"packages: Redis, {name}", packages)], steps, not_run


@pytest.mark.parametrize("speaker", ["bird", "exabgp"])
def test_the_routed_isp_chapter_walked_on_debian_13(speaker: str) -> None:
    """Each speaker on a system of its own (the install, then Debian's packages: they need
    the mirror; bird2 for the core router in both)."""
    packages, steps, not_run = bgp_steps(speaker)
    with installed_system() as (root, installed):
        write_systemctl(root)
        figures = installed | run_steps(root, packages, net=False)
        figures |= run_steps(root, steps, net=True)
    report(f"the install and the routed ISP chapter (BGP, {speaker})", figures, not_run)
