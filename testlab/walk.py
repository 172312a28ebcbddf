"""Walking docs/operators-guide.md as written on a fresh Debian 13: the guide's own words
(its sections, fenced blocks and quoted commands), the system (mmdebstrap's trixie, unpacked
afresh, entered by chroot in namespaces of its own) and the guide's install done in it.

Used by the opt-in walks, ``tests/test_walk*.py`` (``make test-walk``); see tests/test_walk.py
for what is typed differently from the guide, and why.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import contextlib
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
