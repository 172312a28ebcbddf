"""The ISP chapters (docs/operators-guide.md, section 4: two-stage diversion with nftables,
on Redis as section 2, steps 1 and 2, set it up; then section 2 whole: every web connection
through two transparent proxies), walked on Debian 13.

Opt-in like tests/test_walk.py (minutes; root, mmdebstrap, unshare, chroot):
``BLOCKLIST_WALK_TESTS=1 .venv/bin/python -m pytest -s tests/test_walk_isp.py``, or
``make test-walk``. The system, the install and the machinery are testlab/walk.py's: a fresh
mmdebstrap'd trixie, the guide's install done in it, the chapter's steps run by chroot; so
are the Internet around the gateway and the subscriber's checks, shared with the BGP walk.

- The guide's commands are taken from the guide itself (its ``sh``, ``toml`` and ``yaml``
  blocks, and the commands it quotes), not copied here. Debian's packages come from
  Debian: ``redis-server`` as section 2 says, ``nftables`` as the base system has it.
- The networks: the walk's own network namespace is the gateway (Redis, the proxy,
  ``blocklist-divert run``, the table); inside it the walk makes two more, ``sub`` (a
  subscriber, 198.51.100.2 and 2001:db8:1::2, its gateway's interface named ``eth1`` as in
  the guide) and ``inet`` (the Internet behind ``eth0``: the origins, and a DNS server on
  the guide's resolver addresses 192.0.2.53 and 2001:db8::53, testlab/dnsserver.py serving a
  zone the walk writes). The subscriber resolves names through it (``/etc/netns/sub/``), as
  a customer's machine does. Everything goes with the walk's namespaces.
- What is not typed as written, and why: ``apt-get install`` gets ``-y``; the package
  install of section 2, step 1 runs before the chapter's network exists (it needs the
  mirror), the rest of that block in it. systemd is not PID 1 in a chroot: ``systemctl
  restart/enable --now UNIT`` run testlab/walk.py's SYSTEMCTL, which starts the unit the
  guide's commands installed (drop-ins, User=, Environment= as uncommented by the guide's
  ``sed``, the unit's directories, AmbientCapabilities=, waiting for READY=1 where the unit
  is Type=notify); its sandboxing settings are not applied. ``systemctl daemon-reload`` and
  ``systemctl enable nftables`` (the boot) are not run; the boot is simulated instead (the
  ruleset flushed and /etc/nftables.conf loaded again, as the guide describes).
  ``[feeds.iwf]`` is samples/sample-feed.txt (test_walk.py). The optional notrack chain
  (a plain router only) and the TTL rules are not loaded. The subscriber's commands (the
  canary's two curl lines, and the walk's own checks) run in ``ip netns exec sub``; the
  guide's ``blocklist-divert export --format json`` gets the password file as its ``apply``
  line shows.
  ``protect.txt`` is written with the walk's own prefixes (the guide says what it lists).
- The working state: before the first set the canary answers nothing (the table's row);
  once ``run`` applied the set, both canary addresses answer the self-test page, a listed
  page answers 451 over IPv4 and IPv6, a host listed whole is refused at the TLS handshake,
  an unlisted page on a diverted host passes (the origin sees the gateway), an undiverted
  host is reached directly (the origin sees the subscriber; the proxy's connection count and
  the table's counters do not move); the proxy stopped: ``Connection refused`` within
  ``withdraw_after``, then withdrawn (sets empty, the listed page reached directly, the
  canary no answer); the proxy back: restored, 451 again; a reboot's reload of
  /etc/nftables.conf repaired by ``run``; a newly listed host diverted right after the sync.
  The canary's outcomes are matched by the words of the guide's own table, read from it.
- What the first walks found, fixed where it was: section 2's ``# then run redis-server
  with it`` was no command (Debian's package already runs a Redis on 6379 that lets every
  local user in: the shipped redis.conf now replaces its file, and the service restarts);
  Debian 13's curl 8.14 says ``Could not connect to server`` both for an undiverted canary
  and for a proxy that is down, so the guide's canary lines could not tell the table's
  rows apart (now ``curl -sSv``, the table in ``-v``'s words); the table's first row quoted
  the browser's HTML title, which curl never shows (``Blocking works.``); ``blocklist-divert
  status`` was said to list the canary, which it never did (``export --format json`` does);
  ``systemctl enable --now blocklist-divert`` returned before ``run`` had written the
  status file the next line reads (the unit is now Type=notify, READY=1 after the first
  check). Machinery only: ``ip netns`` needs / to be a mount point in the chroot.
  Section 2's step 4 (the firewall) was prose with no command, and the file as shipped
  redirects to port 8080, where none of the chapter's two instances (8081, 8082) listens:
  the step now has commands (its ``numgen`` line over both ports, both ports guarded).
- Section 2 (the second test, on the same system after section 4's): the canary through
  the proxies, 451 on IPv4 and IPv6, a host listed whole refused at the handshake, unlisted
  pages fetched by the proxies (the origin sees the gateway), each instance with its share
  of the connections, the self-test in the block log.
- Not here: the routed (BGP) form of section 4, walked by tests/test_walk_bgp.py (with BIRD
  and with ExaBGP), which takes this module's steps for what it shares with the gateway.
- Measured here (2 shared cores, the base tarball cached): both tests 5 min 51 s from
  nothing, of which the install 167 s, section 4's steps 67 s (32 s of them waiting for
  ``withdraw_after``) and section 2's 7 s; section 4 alone took 5 min 42 s and 6 min 13 s.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import pathlib
import re
import textwrap
from collections.abc import Iterator

import pytest

from testlab.walk import (
    GUIDE,
    HANDSHAKE_REFUSED,
    LISTED,
    NEWLY,
    REDIS_PASSWORD,
    SRC,
    SUB,
    UNLISTED,
    WHOLE,
    Steps,
    block,
    blocked,
    canary_lines,
    canary_table,
    canary_works,
    connections,
    curl,
    expect,
    fails_open,
    install_first,
    installed_system,
    internet,
    list_newly,
    metrics,
    opt_in,
    origin_saw,
    quoted,
    reached,
    report,
    run_steps,
    section,
    systemctl,
    systemctl_lines,
    withdrawn_metric,
    working_state,
    write_systemctl,
    zone,
)

pytestmark = opt_in("the ISP chapter (two-stage diversion)")

ZONE = zone("2001:db8:3")

#: (walk) the subscriber and the Internet around the gateway (the walk's namespace).
NETWORKS = (
    textwrap.dedent("""\
    ip netns add sub
    ip netns add inet
    ip link add eth1 type veth peer name eth0 netns sub
    ip link add eth0 type veth peer name eth0 netns inet
    ip addr add 198.51.100.1/24 dev eth1; ip addr add 2001:db8:1::1/64 dev eth1 nodad
    ip addr add 203.0.113.1/24 dev eth0; ip addr add 2001:db8:2::1/64 dev eth0 nodad
    ip -n sub addr add 198.51.100.2/24 dev eth0; ip -n sub addr add 2001:db8:1::2/64 dev eth0 nodad
    ip -n inet addr add 203.0.113.2/24 dev eth0; ip -n inet addr add 2001:db8:2::2/64 dev eth0 nodad
    ip link set eth1 up; ip link set eth0 up
    for ns in sub inet; do ip -n $ns link set lo up; ip -n $ns link set eth0 up; done
    ip route add default via 203.0.113.2; ip -6 route add default via 2001:db8:2::2
    ip -n sub route add default via 198.51.100.1; ip -n sub -6 route add default via 2001:db8:1::1
    ip -n inet route add 198.51.100.0/24 via 203.0.113.1; ip -n inet -6 route add 2001:db8:1::/64 via 2001:db8:2::1
    """)
    + internet(ZONE)
    + textwrap.dedent(f"""\
    for n in $(seq 60); do {SUB} ping -c1 -W1 2001:db8:1::1 > /dev/null && break; sleep 0.5; done
    """)
)


def isp_steps() -> tuple[Steps, Steps, list[str]]:
    """(steps with the machine's network: packages; steps in the walk's networks; not run)."""
    guide = GUIDE.read_text()
    small = section(guide, "## 2. A small ISP")
    scale = section(guide, "## 4. An ISP at scale")
    setup = section(scale, "### Setting it up")
    not_run: list[str] = []

    # Section 2, step 1: Redis locked down. The package needs the mirror; the rest runs in
    # the walk's network, where Redis is started.
    redis = block(small, "sh", "apt-get install redis-server")
    packages, redis = install_first(redis)
    redis, skipped = systemctl_lines(redis)
    not_run += skipped
    assert "python3 /root/walk/systemctl.py restart redis-server" in redis, (
        "section 2, step 1 should start Redis with the shipped redis.conf"
    )
    redis += "redis-cli ping 2>&1 | grep -q NOAUTH   # (walk) up, and no way in without a user\n"
    # Section 2, step 2: the sync into Redis.
    sync = block(small, "sh", "s|^# store = ")
    sync, skipped = systemctl_lines(sync)
    not_run += skipped

    # Section 4, steps 1 and 2: the key, divert.toml, the first sync and resolve.
    key = block(setup, "sh", "blocklist-divert keygen")
    divert_toml = block(setup, "toml", "key_file = ")
    protect = re.search(r"^protect_file = \"(\S+)\"", divert_toml, re.MULTILINE)
    assert protect
    resolve = block(setup, "sh", "resolve")
    # (walk) what protect.txt lists, per the guide: the resolvers, the customers' ranges
    protect_txt = f"printf '192.0.2.53/32\\n2001:db8::53/128\\n198.51.100.0/24\\n2001:db8:1::/64\\n' > {protect.group(1)}   # (walk)\n"

    # Step 3: the table, and its include for the boot.
    table = block(setup, "sh", "nft -D SUBSCRIBERS=eth1 -f deploy/nftables-divert.nft")
    include = block(setup, "sh", "nftables-divert-include.nft")
    include, skipped = systemctl_lines(include)
    not_run += skipped
    notrack = block(setup, "sh", "nftables-divert-notrack.nft")
    not_run.append(f"{notrack.strip()}  # on a plain router that tracked nothing only")

    # Step 4: the proxy.
    proxy_yaml = block(setup, "yaml", "blocklist_intercept: never")
    proxy_units = block(setup, "sh", "blocklist-proxy@.service")
    proxy_units, skipped = systemctl_lines(proxy_units)
    not_run += skipped
    assert "systemctl.py start blocklist-proxy@8081" in proxy_units

    # Step 5: run.
    run_unit = block(setup, "sh", "blocklist-divert.service")
    run_unit, skipped = systemctl_lines(run_unit)
    not_run += skipped
    apply_line = block(setup, "sh", "blocklist-divert apply").strip()

    # Step 6: the canary, from a subscriber; what the table says each outcome means.
    canary = canary_lines(setup)
    works, nothing, refused = canary_table(setup)
    listing = quoted(setup, "blocklist-divert export --format json")

    canary_none = "".join(
        expect(
            "(walk) before the first set: the table's 'no answer' row",
            f"{SUB} {c}",
            nothing,
        )
        for c in canary
    )
    canary_ok = canary_works(canary, works, tries=30, every_word=True)
    working = working_state(ZONE, proxy="203.0.113.1", proxy_is="the gateway", table="blocklist")
    withdrawal = (
        systemctl("stop", "blocklist-proxy@8081")
        + "\n"
        + expect(
            "the table: diverted, nothing answers on the proxy's port (within withdraw_after)",
            f"{SUB} {canary[0]}",
            refused,
        )
        + expect(
            "withdrawn after withdraw_after: the table's 'no answer' row",
            f"{SUB} {canary[0]}",
            nothing,
            tries=60,
        )
        + withdrawn_metric(1)
        + "grep -q WITHDRAWN /tmp/blocklist-divert.service.log\n"
        + fails_open(ZONE)
    )
    restore = (
        systemctl("start", "blocklist-proxy@8081")
        + "\n"
        + expect(
            "the proxy healthy again: diverted again",
            f"{SUB} {canary[0]}",
            works[-1],
            tries=60,
        )
        + blocked("and the listed page blocked", f"http://{LISTED}/page.html")
        + withdrawn_metric(0)
    )
    reboot = (
        "# (walk) a boot's load of /etc/nftables.conf (flush ruleset): the sets come back empty\n"
        "nft flush ruleset && nft -f /etc/nftables.conf\n"
        "if nft list set inet blocklist divert4 | grep -q 192.0.2.254; then exit 1; fi\n"
        + expect(
            "run refills them (verify_interval)",
            "nft list set inet blocklist divert4",
            "192.0.2.254",
            tries=40,
        )
        + "grep -q repairing /tmp/blocklist-divert.service.log\n"
        + expect(
            "and the canary answers again",
            f"{SUB} {canary[1]}",
            works[-1],
            tries=10,
        )
    )
    newly = list_newly(ZONE, resolve) + blocked(
        "run resolves the new version at once: the new host is diverted",
        f"http://{NEWLY}/new.html",
        tries=20,
    )

    steps: Steps = [
        ("(walk) networks, DNS, origins", NETWORKS),
        ("2.1 Redis, locked down", f"cd {SRC}\n{redis}"),
        ("2.2 sync into Redis", f"cd {SRC}\n{sync}"),
        ("4.1 the hostnames, encrypted", f"cd {SRC}\n{key}"),
        (
            "4.2 divert.toml, sync and resolve",
            f"cat > /etc/blocklist-proxy/divert.toml <<'EOF'\n{divert_toml}EOF\n{protect_txt}cd {SRC}\n{resolve}",
        ),
        ("4.3 the table", f"cd {SRC}\n{table}"),
        ("4.3 the table at boot", f"cd {SRC}\n{include}"),
        (
            "(walk) the canary before the first set",
            f"{SUB} curl -sS -m 5 http://{UNLISTED}/index.html | grep -q 'origin page'   # the gateway forwards\n"
            + canary_none,
        ),
        (
            "4.4 the proxy",
            f"cat > /etc/blocklist-proxy/proxy.yaml <<'EOF'\n{proxy_yaml}EOF\ncd {SRC}\n{proxy_units}",
        ),
        ("4.5 run", f"cd {SRC}\n{run_unit}"),
        (
            "4.5 apply by hand: refused while run keeps the sets",
            f"out=$({apply_line} 2>&1) && exit 1; printf '%s\\n' \"$out\"\n",
        ),
        ("4.6 the canary from a subscriber", canary_ok),
        (
            "4.6 status, block log, metric",
            f"{REDIS_PASSWORD} {listing} | tee /tmp/set.json\ngrep -q '\"192.0.2.254\"' /tmp/set.json\ngrep -q '\"2001:db8::254\"' /tmp/set.json\n"
            f"{REDIS_PASSWORD} blocklist-divert status\n"
            f"{metrics()} | grep 'blocklist_blocks_total{{.*selftest'\n",
        ),
        ("(walk) the working state", working),
        ("(walk) withdrawal", withdrawal),
        ("(walk) restore", restore),
        ("(walk) a reboot's reload of the ruleset", reboot),
        ("(walk) a newly listed host", newly),
    ]
    return [("2.1 Redis: the package", packages)], steps, not_run


def small_isp_steps() -> Steps:
    """Section 2 whole: Redis, the sync, two transparent proxies, the firewall that sends
    every web connection of the customers through them; and the transparent-mode check."""
    guide = GUIDE.read_text()
    small = section(guide, "## 2. A small ISP")
    check = section(guide, "## Check that blocking works")
    _, steps, _ = isp_steps()
    named = dict(steps)
    proxy_yaml = block(small, "yaml", "block_global: false")
    log_file = re.search(r"^blocklist_log_file: (\S+)", proxy_yaml, re.MULTILINE)
    assert log_file
    units, _ = systemctl_lines(block(small, "sh", "blocklist-proxy@.service"))
    instances = re.findall(r"blocklist-proxy@(\d+)", units.splitlines()[-1])
    assert instances == ["8081", "8082"], units
    firewall = block(small, "sh", "blocklist-transparent.nft")
    assert "192.0.2.254" in check  # the check's canary address in transparent mode
    checks = (
        expect(
            "the canary: through the proxy",
            f"{SUB} curl -sSv -m 10 http://192.0.2.254/",
            "Blocking works",
        )
        + blocked("a listed page: the splash page", f"http://{LISTED}/page.html", "-4")
        + blocked("over IPv6", f"http://{LISTED}/gallery/a.html", "-6")
        + expect(
            "a host listed whole, over HTTPS: refused at the handshake",
            curl(f"https://{WHOLE}/", "-k"),
            HANDSHAKE_REFUSED,
        )
        + "".join(
            reached(
                "an unlisted page passes, through the proxies",
                f"http://{UNLISTED}/index.html",
                "-4",
            )
            for _ in range(4)
        )
        + origin_saw("203.0.113.1", "/index.html", ZONE[UNLISTED]["a"][0], "the proxy fetched it")
        + "".join(
            f'test "$({connections(i)})" != "" && test "$({connections(i)})" != 0   # each instance had its share\n'
            for i in instances
        )
        + f'grep -q \'"list":"selftest"\' {log_file.group(1)}\n'
    )
    return [
        ("(walk) networks, DNS, origins", named["(walk) networks, DNS, origins"]),
        ("2.1 Redis, locked down", named["2.1 Redis, locked down"]),
        ("2.2 sync into Redis", named["2.2 sync into Redis"]),
        (
            "2.3 the proxies",
            f"cat > /etc/blocklist-proxy/proxy.yaml <<'EOF'\n{proxy_yaml}EOF\ncd {SRC}\n{units}",
        ),
        ("2.4 the firewall", f"cd {SRC}\n{firewall}"),
        ("(walk) the working state", checks),
    ]


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[pathlib.Path, dict[str, float]]]:
    """The install, and Debian's redis-server (it needs the mirror)."""
    with installed_system() as (root, installed):
        packages, _, _ = isp_steps()
        write_systemctl(root)
        yield root, installed | run_steps(root, packages, net=False)


def test_the_isp_chapter_walked_on_debian_13(
    system: tuple[pathlib.Path, dict[str, float]],
) -> None:
    root, installed = system
    _, steps, not_run = isp_steps()
    figures = installed | run_steps(root, steps, net=True)
    report("the install and the ISP chapter (two-stage diversion)", figures, not_run)


def test_the_small_isp_chapter_walked_on_debian_13(
    system: tuple[pathlib.Path, dict[str, float]],
) -> None:
    """Section 2 after section 4's walk on the same system (the install is common; Redis's
    passwords are made again, as typed)."""
    root, _ = system
    figures = run_steps(root, small_isp_steps(), net=True)
    report("the small ISP chapter (every web connection through the proxies)", figures, [])
