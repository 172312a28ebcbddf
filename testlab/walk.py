"""Walking docs/operators-guide.md as written on a fresh Debian 13: the guide's own words
(its sections, fenced blocks and quoted commands), the system (mmdebstrap's trixie, unpacked
afresh, entered by chroot in namespaces of its own) and the guide's install done in it.

Used by the opt-in walks, ``tests/test_walk*.py`` (``make test-walk``); see tests/test_walk.py
for what is typed differently from the guide, and why.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "operators-guide.md"
UNIT = ROOT / "deploy" / "systemd" / "blocklist-proxy@.service"
WALK = ROOT / "var" / "walk"
BASE = WALK / "base-trixie.tar"
MIRROR = "http://deb.debian.org/debian"
HOST_CA = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
SRC = "/opt/blocklist-proxy-src"  # where the guide puts the checkout


def opt_in(walks: str) -> list[pytest.MarkDecorator]:
    """A walk module's ``pytestmark``: opt-in (minutes, root), run with BLOCKLIST_WALK_TESTS=1."""
    return [
        pytest.mark.opt_in,
        pytest.mark.skipif(
            os.environ.get("BLOCKLIST_WALK_TESTS") != "1",
            reason=f"walks {walks} on a fresh Debian 13: BLOCKLIST_WALK_TESTS=1",
        ),
    ]


# -- the guide's own words ------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """From the heading line to the next heading of the same level."""
    start = text.index(heading)
    level = heading.split(" ", 1)[0]
    end = text.find(f"\n{level} ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    """The fenced blocks of a language, dedented (the school's steps are indented)."""
    found = re.finditer(rf"^( *)```{lang}\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(m.group(2)) for m in found]


def block(text: str, lang: str, containing: str) -> str:
    matches = [b for b in blocks(text, lang) if containing in b]
    assert len(matches) == 1, f"the guide should have one {lang} block with {containing!r}"
    return matches[0]


def fenced(text: str) -> list[tuple[str, str]]:
    """Every fenced block in order, as (its language, "" when it names none; its text,
    dedented): unlike blocks(), a closing fence is never taken for an opening one."""
    found = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        opening = re.match(r"^( *)```(\S*)\s*$", lines[i])
        i += 1
        if not opening:
            continue
        body = []
        while i < len(lines) and not re.match(rf"^{opening.group(1)}```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        found.append((opening.group(2), textwrap.dedent("".join(body))))
    return found


def plain_block(text: str, containing: str) -> str:
    """The one fenced block that names no language (a router's config) with ``containing``."""
    matches = [b for lang, b in fenced(text) if not lang and containing in b]
    assert len(matches) == 1, f"the guide should have one plain block with {containing!r}"
    return matches[0]


def quoted(text: str, pattern: str) -> str:
    """A command the guide quotes in its text (`...`), whitespace joined across lines."""
    flat = re.sub(r"\s*\n\s*", " ", text)
    match = re.search(rf"`({pattern}[^`]*)`", flat)
    assert match, f"the guide no longer quotes {pattern!r}"
    return match.group(1)


def unit_start(instances: list[str]) -> str:
    """What `systemctl enable --now blocklist-proxy@PORT` does, read from the shipped unit:
    its LogsDirectory= and StateDirectory= made for User=, then ExecStart= as User= with
    Environment=, in the background."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    user, group = settings["User"][0], settings["Group"][0]
    lines = []
    for directory, base, mode in (
        ("LogsDirectory", "/var/log", settings.get("LogsDirectoryMode", ["0755"])[0]),
        ("StateDirectory", "/var/lib", settings.get("StateDirectoryMode", ["0755"])[0]),
    ):
        for name in settings.get(directory, []):
            lines.append(f"install -d -o {user} -g {group} -m {mode} {base}/{name}")
    env = " ".join(shlex.quote(e) for e in settings.get("Environment", []))
    for instance in instances:
        command = " ".join(settings["ExecStart"]).replace("%i", instance)
        lines.append(f"runuser -u {user} -- env {env} {command} > /tmp/proxy-{instance}.log 2>&1 &")
    return "\n".join(lines) + "\n"


def wait_healthy(instances: list[str]) -> str:
    """Type=notify: systemctl returns once the unit is ready; here, once /healthz answers."""
    urls = " ".join(f"http://127.0.0.1:1{i}/healthz" for i in instances)
    return textwrap.dedent(f"""\
        for url in {urls}; do
          for n in $(seq 120); do curl -sf "$url" > /dev/null && break; sleep 0.5; done
        done
        """)


Steps = list[tuple[str, str]]


def install_steps() -> tuple[Steps, list[str]]:
    """The install, as far as the first sync with the self-test feed: (steps, not run)."""
    guide = GUIDE.read_text()
    install = section(guide, "## Common to all: install")
    check = section(guide, "## Check that blocking works")
    not_run = []

    first = block(install, "sh", "useradd")
    clone = re.search(r"^git clone REPOSITORY-URL .*$", first, re.MULTILINE)
    assert clone and "cp -a a checkout there" in clone.group(0)
    first = first.replace(clone.group(0), f"cp -a /root/checkout {SRC}   # (walk) the checkout")
    assert "apt-get install " in first
    first = first.replace("apt-get install ", "apt-get install -y ")
    sync = block(install, "sh", "blocklist-sync status")
    timer = block(install, "sh", "blocklist-sync.timer")
    copy = [line for line in timer.splitlines() if line.startswith("cp ")]
    enable = [line for line in timer.splitlines() if line.startswith("systemctl ")]
    assert copy and enable
    not_run.append(f"{enable[0]}  # no systemd as PID 1 in a chroot: the units are verified")
    units = re.findall(r"deploy/systemd/(\S+)", copy[0])
    timer_units = "\n".join(copy) + (
        "\nsystemd-analyze verify "  # what systemctl would refuse to load, offline
        + " ".join(f"/etc/systemd/system/{u}" for u in units)
        + "\n"
    )
    feed = textwrap.dedent(f"""\
        # (walk) the licensee's feed, as the operator edits [feeds.iwf]: the sample list
        cd /etc/blocklist-proxy
        grep -q '^url = "https://feed.example.net/urllist.csv"' sync.toml
        sed -i -e 's|^url = "https://feed.example.net/urllist.csv"|url = "file://{SRC}/samples/sample-feed.txt"|' \\
               -e 's|^format = "csv" |format = "text"|' -e 's|^token_file = |# token_file = |' sync.toml
        """)
    selftest = block(check, "sh", "selftest.txt")
    return (
        [
            ("install", first),
            ("the feed (stand-in)", feed),
            ("first sync", f"cd {SRC}\n{sync}"),
            ("self-test feed", f"cd {SRC}\n{selftest}"),
            ("the next sync", f"cd {SRC}\n{sync}"),
            ("the sync timer's units (verified)", f"cd {SRC}\n{timer_units}"),
        ],
        not_run,
    )


# -- the system ------------------------------------------------------------------------------


def enter(root: pathlib.Path, *, net: bool) -> list[str]:
    """A shell in root by chroot, in new mount, PID and UTS namespaces (and network ones)."""
    inner = textwrap.dedent("""\
        root=$1; shift
        mount --rbind "$root" "$root"   # / a mount point in the chroot: ip netns needs one
        mount --rbind /dev "$root/dev"
        mount -t sysfs sys "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
        mount -t tmpfs tmpfs "$root/tmp"; mount -t tmpfs tmpfs "$root/run"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        hostname walk; [ -z "$WALK_NET" ] || ip link set lo up
        exec chroot "$root" env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \\
          PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
          ${PIP_CERT:+PIP_CERT=$PIP_CERT} "$@"
        """)
    flags = ["--mount", "--pid", "--fork", "--uts", f"--mount-proc={root}/proc"]
    net_flags = ["--net", "env", "WALK_NET=1"] if net else []
    return ["unshare", *flags, *net_flags, "sh", "-c", inner, "sh", str(root)]


def run_steps(root: pathlib.Path, named: list[tuple[str, str]], *, net: bool) -> dict[str, float]:
    """The steps in one shell (background processes live on from step to step), each with
    -e, stopping at the first that fails; the output is printed, and the failing step's
    name and output end the test."""
    directory = root / "root" / "walk"
    directory.mkdir(parents=True, exist_ok=True)
    driver = ["#!/bin/sh"]
    for n, (name, script) in enumerate(named):
        path = directory / f"{n:02d}.sh"
        path.write_text(script)
        driver.append(
            f"printf '\\n@@ step %s\\n' {shlex.quote(name)}; s=$(date +%s.%N); (cd /root && sh -ex /root/walk/{n:02d}.sh); rc=$?\n"
            f'printf "\\n@@ done rc=%s %s %s\\n" $rc $(date +%s.%N) $s; [ $rc = 0 ] || exit $rc'
        )
    (directory / "run.sh").write_text("\n".join(driver) + "\n")
    env = {**os.environ}
    if HOST_CA.is_file():  # this machine's TLS-intercepting egress, for pip
        shutil.copy(HOST_CA, root / "etc" / "walk-host-ca.pem")
        env["PIP_CERT"] = "/etc/walk-host-ca.pem"
    done = subprocess.run(
        [*enter(root, net=net), "sh", "/root/walk/run.sh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
        env=env,
    )
    (directory / "output.log").write_text(done.stdout)  # whole, for BLOCKLIST_WALK_KEEP=1
    print(done.stdout[-20000:], flush=True)
    figures = {}
    current = None
    for line in done.stdout.splitlines():
        if line.startswith("@@ step "):
            current = line[len("@@ step ") :]
        elif line.startswith("@@ done ") and current:
            _, _, rc, end, start = line.split()
            figures[current] = float(end) - float(start)
            assert rc == "rc=0", f"the guide's step {current!r} failed ({rc}): see the output above"
    assert done.returncode == 0, f"the walk stopped after {current!r}: exit {done.returncode}"
    assert len(figures) == len(named)
    return figures


@contextlib.contextmanager
def installed_system() -> Iterator[tuple[pathlib.Path, dict[str, float]]]:
    """A fresh Debian 13 with the guide's install done in it, and the install's figures;
    removed afterwards (``BLOCKLIST_WALK_KEEP=1`` keeps it)."""
    for tool in ("mmdebstrap", "unshare", "chroot", "tar"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        pytest.fail("the walk needs root (namespaces, chroot)")
    WALK.mkdir(parents=True, exist_ok=True)
    if not BASE.exists():
        started = time.monotonic()
        partial = WALK / "partial-base-trixie.tar"  # mmdebstrap: a .tar name makes a tarball
        subprocess.run(
            ["mmdebstrap", "--quiet", "trixie", str(partial), MIRROR], check=True, timeout=1800
        )
        partial.rename(BASE)
        print(f"\n[walk] base (mmdebstrap): {time.monotonic() - started:.0f} s", flush=True)
    root = WALK / f"run-{os.getpid()}"
    root.mkdir()
    try:
        subprocess.run(["tar", "-x", "-C", str(root), "-f", str(BASE)], check=True, timeout=600)
        checkout = root / "root" / "checkout"
        checkout.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "HEAD"], stdout=subprocess.PIPE, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
        install, not_run = install_steps()
        figures = run_steps(root, install, net=False)
        for command in not_run:
            print(f"[walk] not run: {command}")
        yield root, figures
    finally:
        if os.environ.get("BLOCKLIST_WALK_KEEP") != "1":
            shutil.rmtree(root)


def report(chapter: str, figures: dict[str, float], not_run: list[str]) -> None:
    print(f"\n[walk] {chapter} on Debian 13 (HEAD {git_head()}), step by step:")
    for name, seconds in figures.items():
        print(f"[walk]   {name}: {seconds:.1f} s")
    print(f"[walk] in all: {sum(figures.values()):.0f} s")
    for command in not_run:
        print(f"[walk] not run: {command}")


def install_first(script: str) -> tuple[str, str]:
    """A block's ``apt-get install`` line, typed with -y before the walk's network exists (it
    needs the mirror), and the block with that line said done: (the line, the block)."""
    line = re.search(r"^apt-get install .*$", script, re.MULTILINE)
    assert line, f"the guide's block should install its packages: {script[:80]!r}"
    return (
        line.group(0).replace("apt-get install ", "apt-get install -y ") + "\n",
        script.replace(line.group(0), "# (walk) installed before: " + line.group(0)),
    )


def git_head() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


# -- systemd, where it is not PID 1 ----------------------------------------------------------

#: What ``systemctl start``/``stop`` do with one unit, for a chroot with no systemd: written
#: into the system as /root/walk/systemctl.py and run by its python3. It reads the unit
#: installed in the system (/etc/systemd/system before /usr/lib/systemd/system, template
#: units for NAME@INSTANCE, drop-ins NAME.d/*.conf) as the guide's commands left it, makes
#: its RuntimeDirectory=, StateDirectory= and LogsDirectory= for User= (and says where, as
#: systemd does, in $RUNTIME_DIRECTORY and so on), runs ExecStartPre= and then ExecStart= as
#: User=/Group= with Environment=/EnvironmentFile= and AmbientCapabilities= (setpriv), its
#: output in /tmp/NAME.log (the journal's stand-in); for Type=notify it returns once the
#: service says READY=1 on $NOTIFY_SOCKET, and fails when it exits first or after
#: TimeoutStartSec=; $NAME and ${NAME} in the command lines are replaced from that
#: environment. ``stop`` sends SIGTERM to the service's process group, by its PID.
#: Not emulated: the sandboxing settings (ProtectSystem=, ReadWritePaths=, PrivateTmp=, ...)
#: and Restart=.
SYSTEMCTL = r"""
import os, pathlib, pwd, grp, re, shlex, signal, socket, subprocess, sys, time

RUN = pathlib.Path("/run/walk-units"); RUN.mkdir(parents=True, exist_ok=True)
DIRS = {"RuntimeDirectory": "/run", "StateDirectory": "/var/lib", "LogsDirectory": "/var/log",
        "CacheDirectory": "/var/cache", "ConfigurationDirectory": "/etc"}
RESETTABLE = {"ExecStart", "ExecStartPre", "Environment", "EnvironmentFile"}

def unit_files(name):
    base = name
    if "@" in name:
        prefix, rest = name.split("@", 1)
        base = prefix + "@" + rest[rest.rindex("."):]
    for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"):
        for candidate in (name, base):
            path = pathlib.Path(d, candidate)
            if path.is_file():
                drop = []
                for dd in ("/usr/lib/systemd/system", "/etc/systemd/system"):
                    drop += sorted(pathlib.Path(dd, candidate + ".d").glob("*.conf"))
                return [path, *drop]
    sys.exit(f"Unit {name} not found.")

def settings(name):
    instance = name.split("@", 1)[1].rsplit(".", 1)[0] if "@" in name else ""
    found = {}
    for path in unit_files(name):
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            value = value.replace("%i", instance).replace("%%", "%")
            if value == "" and key in RESETTABLE:
                found[key] = []
            else:
                found.setdefault(key, []).append(value)
    return found

def command(value, env):
    # Its prefix flags and its words: $NAME (split on whitespace, no word when empty) and
    # ${NAME} (one word) replaced from env, as systemd does (Debian's bird.service uses them).
    flags = ""
    while value and value[0] in "+-!@:":
        flags += value[0]; value = value[1:]
    words = []
    for word in shlex.split(value):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words += env.get(whole[1], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word))
    return flags, words

def start(name):
    s = settings(name)
    user = s.get("User", ["root"])[-1]
    entry = pwd.getpwnam(user)
    group = s.get("Group", [grp.getgrgid(entry.pw_gid).gr_name])[-1]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8",
           "HOME": entry.pw_dir, "USER": user, "LOGNAME": user, "SHELL": entry.pw_shell}
    for key, base in DIRS.items():
        for value in s.get(key, []):
            mode = int(s.get(key + "Mode", ["0755"])[-1], 8)
            for sub in value.split():
                path = pathlib.Path(base, sub)
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, entry.pw_uid, grp.getgrnam(group).gr_gid); path.chmod(mode)
                env[key.upper().replace("DIRECTORY", "_DIRECTORY")] = str(path)
    for value in s.get("EnvironmentFile", []):
        path = value.lstrip("-")
        if os.path.exists(path):
            for line in pathlib.Path(path).read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1); env[k.strip()] = v.strip().strip('"')
    for value in s.get("Environment", []):
        for item in shlex.split(value):
            k, v = item.split("=", 1); env[k] = v
    log = open(f"/tmp/{name}.log", "ab")
    caps = [c.lower().removeprefix("cap_") for v in s.get("AmbientCapabilities", []) for c in v.split()]
    as_user = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups"]
    if caps:
        spec = ",".join("+" + c for c in caps)
        as_user += [f"--inh-caps={spec}", f"--ambient-caps={spec}"]
    for value in s.get("ExecStartPre", []):
        flags, argv = command(value, env)
        done = subprocess.run(argv if "+" in flags else [*as_user, "--", *argv], env=env, stdout=log, stderr=log)
        if done.returncode and "-" not in flags:
            sys.exit(f"{name}: ExecStartPre {argv} exited {done.returncode}")
    flags, argv = command(s["ExecStart"][-1], env)
    notify = s.get("Type", ["simple"])[-1] == "notify"
    if notify:
        address = RUN / f"{name}.notify"
        address.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); listener.bind(str(address))
        os.chmod(address, 0o777)
        env["NOTIFY_SOCKET"] = str(address)
    process = subprocess.Popen(argv if "+" in flags else [*as_user, "--", *argv], env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               cwd=s.get("WorkingDirectory", ["/"])[-1], start_new_session=True)
    (RUN / f"{name}.pid").write_text(f"{process.pid}\n")
    if not notify:
        return
    listener.settimeout(0.2)
    timeout = float(s.get("TimeoutStartSec", ["90"])[-1].removesuffix("s"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"Job for {name} failed: exited {process.returncode} (see /tmp/{name}.log)")
        try:
            if b"READY=1" in listener.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            pass
    sys.exit(f"Job for {name} failed: no READY=1 within {timeout} s")

def stop(name):
    path = RUN / f"{name}.pid"
    if not path.exists():
        return
    pid = int(path.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    path.unlink()

action, names = sys.argv[1], sys.argv[2:]
for name in names:
    name = name if "." in name.rsplit("@", 1)[-1] else name + ".service"
    if action in ("stop", "restart"):
        stop(name)
    if action in ("start", "restart"):
        start(name)
"""


def systemctl(action: str, *units: str) -> str:
    """The shell line that does what ``systemctl ACTION UNIT...`` does (SYSTEMCTL)."""
    return (
        f"python3 /root/walk/systemctl.py {action} {' '.join(units)}   # (walk) systemctl {action}"
    )


def write_systemctl(root: pathlib.Path) -> None:
    """SYSTEMCTL into the system, for ``systemctl()``'s lines."""
    directory = root / "root" / "walk"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "systemctl.py").write_text(SYSTEMCTL)


def systemctl_lines(script: str) -> tuple[str, list[str]]:
    """The guide's systemctl lines as SYSTEMCTL does them: (script, lines not run)."""
    not_run = []
    out = []
    for line in script.splitlines():
        started = re.match(r"^systemctl daemon-reload && systemctl enable --now (.+)$", line)
        restart = re.match(r"^systemctl (restart|start) (.+)$", line)
        if started:
            out.append(systemctl("start", *started.group(1).split()))
        elif restart:
            out.append(systemctl(restart.group(1), *restart.group(2).split()))
        elif line.startswith("systemctl "):
            not_run.append(f"{line}  # no systemd as PID 1 in a chroot")
            out.append(f"# (walk, not run) {line}")
        else:
            out.append(line)
    return "\n".join(out) + "\n", not_run


# -- the ISP walks: the Internet around the proxy's host, and what the subscriber checks ----
#
# tests/test_walk_isp.py (section 4 on a gateway; section 2) and tests/test_walk_bgp.py
# (section 4's routed form) put a subscriber (network namespace ``sub``) and the Internet
# (``inet``: the origins, a DNS server on the guide's resolvers) around the proxy's host, and
# check the same working state from the subscriber; only the way between them differs.

#: The subscriber's commands, in its namespace.
SUB = "ip netns exec sub"
#: The subscriber's IPv4 address, as an origin sees it when nothing diverts.
SUBSCRIBER = "198.51.100.2"
SUBSCRIBER6 = "2001:db8:1::2"
LISTED, WHOLE, UNLISTED = "blocked.example.com", "whole-site.blocked.test", "unlisted.example.org"
#: The host the hotline lists during the walk (in the zone once listed).
NEWLY = "newly.example.net"
#: What ``blocklist-divert export``/``status`` are given to read Redis.
REDIS_PASSWORD = "BLOCKLIST_REDIS_PASSWORD_FILE=/etc/blocklist-proxy/redis-sync.password"
#: curl's words for a connection closed at the TLS handshake (35, 52 or 56 by version).
HANDSHAKE_REFUSED = r"curl: \((35|52|56)\)"

Zone = dict[str, dict[str, list[str]]]


def zone(v6: str) -> Zone:
    """The names the walk's DNS server answers: the origins, IPv4 in 203.0.113.0/24 and IPv6
    in the prefix ``v6`` (``"2001:db8:3"``)."""
    return {
        LISTED: {"a": ["203.0.113.20"], "aaaa": [f"{v6}::20"]},
        WHOLE: {"a": ["203.0.113.21"]},
        "www.example.org": {"a": ["203.0.113.22"]},
        UNLISTED: {"a": ["203.0.113.30"], "aaaa": [f"{v6}::30"]},
        NEWLY: {"a": ["203.0.113.40"]},
    }


def internet(names: Zone) -> str:
    """(walk) The Internet's hosts in ``inet`` (whose eth0 is up and routed both ways): the
    origins of ``names`` (every page exists; each request's peer is in
    /tmp/origin-ADDRESS.log) and a DNS server on the resolvers divert.toml names, serving
    them but NEWLY (listed later); the subscriber resolves through it. Returns once the
    unlisted host's origin answers from here over both families."""
    v4 = [a for records in names.values() for a in records.get("a", [])]
    v6 = [a for records in names.values() for a in records.get("aaaa", [])]
    unlisted, unlisted6 = names[UNLISTED]["a"][0], names[UNLISTED]["aaaa"][0]
    return textwrap.dedent(f"""\
        for a in {" ".join(v4)}; do ip -n inet addr add $a/32 dev lo; done
        for a in {" ".join(v6)}; do ip -n inet addr add $a/128 dev lo; done
        ip -n inet addr add 192.0.2.53/32 dev lo; ip -n inet addr add 2001:db8::53/128 dev lo
        # the Internet answers "unreachable" for addresses no host has (the canary's, not diverted)
        ip netns exec inet sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
        # DNS: the resolvers divert.toml names, serving the listed and unlisted hosts
        cat > /srv/zone.json <<'EOF'
        {json.dumps({k: v for k, v in names.items() if k != NEWLY})}
        EOF
        for listen in 192.0.2.53:53 '[2001:db8::53]:53'; do
          ip netns exec inet /opt/blocklist-proxy/bin/python {SRC}/testlab/dnsserver.py --listen "$listen" --zone /srv/zone.json > /tmp/dns.log 2>&1 &
        done
        mkdir -p /etc/netns/sub && echo 'nameserver 192.0.2.53' > /etc/netns/sub/resolv.conf
        # the origins: every page exists; each request's peer is in /tmp/origin-ADDRESS.log
        mkdir -p /srv/www/gallery && for p in page.html other.html gallery/a.html index.html new.html; do echo "origin page $p" > /srv/www/$p; done
        for a in {" ".join(v4 + v6)}; do
          (cd /srv/www && exec ip netns exec inet python3 -m http.server 80 --bind $a > /tmp/origin-$a.log 2>&1) &
        done
        for n in $(seq 60); do curl -s -m 1 -o /dev/null http://{unlisted}/ && break; sleep 0.5; done
        for n in $(seq 60); do curl -s -m 1 -o /dev/null -g 'http://[{unlisted6}]/' && break; sleep 0.5; done   # DAD
        curl -sS -m 5 -g 'http://[{unlisted6}]/index.html' | grep -q 'origin page'
        """)


def list_newly(names: Zone, resolve: str) -> str:
    """(walk) The hotline lists NEWLY: the licensee's feed gains a line (and the DNS the
    name), then the sync by hand as the guide's step 2 (its ``resolve`` block) types it."""
    sync_line = re.search(r"^runuser .*\n.*blocklist-sync --config .*$", resolve, re.MULTILINE)
    assert sync_line, "step 2 should sync by hand"
    return (
        "# (walk) the hotline lists a new host: the licensee's feed gains a line\n"
        f'python3 -c \'import json; z = json.load(open("/srv/zone.json")); z["{NEWLY}"] = {json.dumps(names[NEWLY])}; json.dump(z, open("/srv/zone.json", "w"))\'\n'
        f"echo 'http://{NEWLY}/new.html' >> {SRC}/samples/sample-feed.txt\n"
        + sync_line.group(0)
        + "\n"
    )


def shell_quote(text: str) -> str:
    """``text`` as one shell word, in single quotes."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def expect(name: str, command: str, pattern: str, *, tries: int = 1) -> str:
    """Run ``command`` (up to ``tries`` times, a second apart) until its output (stdout and
    stderr) matches the extended regular expression ``pattern``; print what it said."""
    return textwrap.dedent(f"""\
        # {name}
        ok=; for n in $(seq {tries}); do
          out=$({command} 2>&1) || true
          if printf '%s\\n' "$out" | grep -Eq {shell_quote(pattern)}; then ok=1; break; fi
          sleep 1
        done
        printf '%s\\n' "$out" | head -20
        [ -n "$ok" ] || {{ echo "expected /{pattern}/ from: {command}"; exit 1; }}
        """)


def curl(url: str, *options: str) -> str:
    """The subscriber's curl of ``url``, errors shown, 10 s at most."""
    return f"{SUB} curl -sS -m 10 {' '.join((*options, url))}"


def blocked(name: str, url: str, *options: str, tries: int = 1) -> str:
    """Expect the splash page's 451 for ``url``, from the subscriber."""
    return expect(name, curl(url, "-i", *options), "^HTTP/1.1 451", tries=tries)


def reached(name: str, url: str, *options: str) -> str:
    """Expect the origin's own page for ``url`` (http://HOST/PATH), from the subscriber."""
    return expect(name, curl(url, *options), f"origin page {url.split('/', 3)[3]}")


def origin_saw(peer: str, path: str, origin: str, note: str = "") -> str:
    """The shell line that fails unless the origin on ``origin`` logged a GET of ``path``
    from ``peer``."""
    said = f"   # {note}" if note else ""
    return f"grep -q '^{peer} .*GET {path}' /tmp/origin-{origin}.log || {{ tail -n 5 /tmp/origin-*.log; exit 1; }}{said}\n"


def canary_lines(setup: str) -> list[str]:
    """Step 6's two curl lines, the canary over IPv4 and IPv6, as the subscriber types them."""
    found = [c for c in block(setup, "sh", "192.0.2.254").splitlines() if c.startswith("curl ")]
    assert len(found) == 2
    return found


def canary_table(setup: str) -> tuple[list[str], str, str]:
    """The guide's table of what the canary's answers mean: (the words of the first row,
    which all appear when the whole path works; an extended regular expression for the
    words of "no answer"; one for the proxy's port closed)."""
    rows = [r for r in setup.splitlines() if r.startswith("   | ") and "---" not in r]
    assert rows[0].startswith("   | what the subscriber gets |")
    cells = [r.strip().removeprefix("| ").split(" | ")[0] for r in rows[1:]]
    works = re.findall(r'`([^`]+)`|"([^"]+)"', cells[0])
    assert "no answer" in cells[1] and "refused" in cells[2]

    def words(cell: str) -> str:
        found = re.findall(r"`([^`]+)`", cell)
        assert found, cell
        return "|".join(re.sub(r"([.^$*+?()[\]{}|\\])", r"\\\1", w) for w in found)

    return [a or b for a, b in works], words(cells[1]), words(cells[2])


def canary_works(canary: list[str], works: list[str], *, tries: int, every_word: bool) -> str:
    """Each canary line, ``tries`` seconds at most, until it answers with the last words of
    the table's first row (``works``); with ``every_word``, all of them then."""
    return "".join(
        expect("the canary: the whole path works", f"{SUB} {c}", works[-1], tries=tries)
        + "".join(
            f"printf '%s\\n' \"$out\" | grep -qF {shell_quote(w)}\n" for w in works if every_word
        )
        for c in canary
    )


def metrics(instance: str = "8081") -> str:
    """The proxy instance's metrics (its status port: 1 before the proxy's)."""
    return f"curl -s http://127.0.0.1:1{instance}/metrics"


def connections(instance: str = "8081") -> str:
    """The shell command that says how many client connections the instance has had."""
    return f"{metrics(instance)} | awk '/^blocklist_client_connections_total/ {{print $2}}'"


def packets(table: str) -> str:
    """The shell command that says how many packets the prerouting chain of the nftables
    table ``inet TABLE`` has counted (diverted)."""
    return f"nft list chain inet {table} prerouting | grep -o 'packets [0-9]*' | awk '{{s+=$2}} END {{print s}}'"


def withdrawn_metric(flag: int) -> str:
    """The shell line that fails unless ``run``'s metrics say the set is withdrawn (1) or
    not (0)."""
    return f"grep -q '^blocklist_divert_withdrawn {flag}' /run/blocklist-divert/metrics.prom\n"


def fails_open(names: Zone) -> str:
    """(walk) The proxy gone and the set withdrawn: the listed page reached directly from the
    subscriber (its origin sees the subscriber)."""
    return reached(
        "the listed page, reached directly (fail-open)", f"http://{LISTED}/page.html", "-4"
    ) + origin_saw(SUBSCRIBER, "/page.html", names[LISTED]["a"][0])


def working_state(names: Zone, *, proxy: str, proxy_is: str, table: str) -> str:
    """(walk) The working state, from the subscriber, once ``run`` has put the set in place:
    a listed page 451 over IPv4 and IPv6; a host listed whole refused at the TLS handshake;
    an unlisted page on a diverted host fetched by the proxy (its origin sees ``proxy``, the
    address of ``proxy_is``); an undiverted host reached directly over both (its origin sees
    the subscriber; the proxy's connection count and the packets counted by the prerouting
    chain of ``inet TABLE``, the diversion, do not move)."""
    listed, unlisted = names[LISTED]["a"][0], names[UNLISTED]
    return (
        blocked(
            "a listed page: the splash page",
            f"http://{LISTED}/page.html",
            "-4",
            "-H 'Accept: text/html'",
        )
        + blocked("the same over IPv6", f"http://{LISTED}/gallery/a.html", "-6")
        + expect(
            "a host listed whole, over HTTPS: refused at the handshake, nothing decrypted",
            curl(f"https://{WHOLE}/", "-k"),
            HANDSHAKE_REFUSED,
        )
        + reached(
            "an unlisted page on a diverted host passes, fetched by the proxy",
            f"http://{LISTED}/other.html",
            "-4",
        )
        + origin_saw(proxy, "/other.html", listed, f"seen from {proxy_is}")
        + f'before=$({connections()}); counted=$({packets(table)}); test -n "$before"\n'
        + reached("an undiverted host: reached directly", f"http://{UNLISTED}/index.html", "-4")
        + reached("and over IPv6", f"http://{UNLISTED}/index.html", "-6")
        + origin_saw(SUBSCRIBER, "/index.html", unlisted["a"][0], "seen from the subscriber")
        + origin_saw(SUBSCRIBER6, "/index.html", unlisted["aaaa"][0])
        + f'test "$({connections()})" = "$before"   # never proxied\n'
        + f'test "$({packets(table)})" = "$counted"   # never diverted\n'
    )
