"""The install, school and hosting chapters of docs/operators-guide.md, walked on Debian 13.

Opt-in (it installs Debian packages and the project from PyPI into a fresh system: minutes):
``BLOCKLIST_WALK_TESTS=1 .venv/bin/python -m pytest -s tests/test_walk.py``, as root, with
mmdebstrap, unshare and chroot (``apt-get install mmdebstrap``).

- The system is Debian trixie as ``mmdebstrap`` makes it by default from deb.debian.org
  (required and important packages: what a fresh install has, logrotate and cron included,
  no curl, no sudo), kept as ``var/walk/base-trixie.tar`` between runs, unpacked afresh
  under ``var/walk/`` for each run and removed after it (``BLOCKLIST_WALK_KEEP=1`` keeps it).
- The guide's commands are taken from the guide itself (its ``sh`` and ``yaml`` blocks and
  the commands quoted in its text), not copied here, and run in the system by chroot in its
  own mount, PID and UTS namespaces: the install steps with this machine's network (they
  need the mirror and PyPI), everything from the proxy's start on in a network namespace of
  its own, where the pupil's client (curl) runs too.
- What is not typed as written, and why: ``git clone REPOSITORY-URL`` is the guide's own
  alternative, a copy of the checkout (``git archive HEAD``); ``apt-get install`` gets
  ``-y`` (the typist's yes); ``[feeds.iwf]`` points at samples/sample-feed.txt (the
  licensee's feed stands in: no token); systemd is not PID 1 in a chroot, so
  ``systemctl enable --now blocklist-proxy@PORT`` runs the unit's ExecStart as its User=
  with its Environment= after making its LogsDirectory= (all read from the shipped unit),
  and the sync timer is not started (the walk runs the sync by hand, which the guide does
  too); the units the guide copies are checked with ``systemd-analyze verify`` instead;
  ``proxy.example`` and the unlisted origin ``unlisted.example.org`` (a
  ``python3 -m http.server``) are names in the system's /etc/hosts. In the hosting chapter
  the proxy starts the guide's way without systemd, the licensee's hash feed is left out
  (the self-test hash feed stays), the platform is a small aiohttp upload site on
  127.0.0.1:8000 whose moderation endpoint takes the webhook over loopback (the guide's
  ``https://platform.example.net`` has no server here), with a token written by the walk.
- The working state: the self-test entry answers 451 through the proxy over HTTP and HTTPS
  (with the school's CA trusted system-wide as the guide says for Linux desktops, the
  guide's three curl lines all answer 451), an unlisted page passes through each instance,
  the block log has the self-test's lines without the URL and follows logrotate's rename,
  and each instance's status page answers; for the hosting platform, the self-test image and
  a smaller JPEG copy are refused (451, the JSON error naming the list), the block log has
  the line the guide quotes, the site received nothing, the moderation webhook got the
  events with the token, the log says what the guide says, and an ordinary picture is stored.

One setting is this machine's: its egress intercepts TLS, so pip gets the host's CA bundle
(``PIP_CERT``) when the host has one.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import os
import pathlib
import re
import shlex
import textwrap
from collections.abc import Iterator

import pytest

from testlab.walk import (
    GUIDE,
    SRC,
    Steps,
    block,
    installed_system,
    quoted,
    report,
    run_steps,
    section,
    unit_start,
    wait_healthy,
)

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.skipif(
        os.environ.get("BLOCKLIST_WALK_TESTS") != "1",
        reason="walks the install, school and hosting chapters on a fresh Debian 13: BLOCKLIST_WALK_TESTS=1",
    ),
]


def school_steps() -> Steps:
    """The school chapter from its proxy.yaml on, and its check: in the walk's network."""
    guide = GUIDE.read_text()
    school = section(guide, "## 1. A school")
    check = section(guide, "## Check that blocking works")
    proxy_yaml = block(school, "yaml", "blocklist_intercept: listed")
    confdir = re.search(r"^confdir: (\S+)", proxy_yaml, re.MULTILINE).group(1)  # type: ignore[union-attr]
    log_file = re.search(r"^blocklist_log_file: (\S+)", proxy_yaml, re.MULTILINE).group(1)  # type: ignore[union-attr]
    logrotate = quoted(school, "cp deploy/logrotate/")
    units = block(school, "sh", "blocklist-proxy@.service")
    enable = re.search(
        r"^systemctl daemon-reload && systemctl enable --now (.*)$", units, re.MULTILINE
    )
    assert enable, "the school's unit block should enable the instances"
    instances = re.findall(r"blocklist-proxy@(\d+)", enable.group(1))
    assert len(instances) >= 2
    verify = "systemd-analyze verify " + " ".join(
        f"/etc/systemd/system/blocklist-proxy@{i}.service" for i in instances
    )
    units = units.replace(
        enable.group(0), f"{verify}\n{unit_start(instances)}{wait_healthy(instances)}"
    )
    ca_linux = quoted(school, "cp mitmproxy-ca-cert.pem /usr/local/share/ca-certificates/")
    checks = [
        line.split("#", 1)[0].strip()
        for line in block(check, "sh", "curl -i -x").splitlines()
        if line.startswith("curl ")
    ]
    assert len(checks) == 3

    hosts = "echo '127.0.0.1 proxy.example unlisted.example.org' >> /etc/hosts  # (walk)\n"
    origin = textwrap.dedent("""\
        # (walk) an ordinary site, unlisted
        mkdir -p /srv/www && echo 'an ordinary page' > /srv/www/index.html
        cd /srv/www && python3 -m http.server 80 --bind 127.0.0.1 > /tmp/origin.log 2>&1 &
        for n in $(seq 60); do curl -s http://unlisted.example.org/ > /dev/null && break; sleep 0.5; done
        """)
    expect_451 = "".join(
        f'out=$({c} 2>&1); echo "$out"; echo "$out" | grep -Eq \'^HTTP/[0-9.]+ 451\'\n'
        for c in checks
    )
    unlisted = "".join(
        f"curl -si -x http://proxy.example:{i} http://unlisted.example.org/ | tee /tmp/u\n"
        "grep -q '^an ordinary page' /tmp/u\n"
        for i in instances
    )
    block_log = textwrap.dedent(f"""\
        cat {log_file}
        grep -q '"list":"selftest"' {log_file}
        if grep -q 'blocklist-check' {log_file}; then exit 1; fi    # no URL, no host
        """)
    status = "".join(
        f"curl -sf http://127.0.0.1:1{i}/ | grep -q '<title>blocklist-proxy status</title>'\n"
        for i in instances
    )
    rotation = textwrap.dedent(f"""\
        logrotate --force /etc/logrotate.d/blocklist-proxy
        {checks[0]} > /dev/null 2>&1
        ls -l {log_file}*
        test -s {log_file}.1
        grep -q '"list":"selftest"' {log_file}
        """)
    return [
        ("proxy.yaml", f"cat > /etc/blocklist-proxy/proxy.yaml <<'EOF'\n{proxy_yaml}EOF\n"),
        ("logrotate", f"cd {SRC}\n{logrotate}\n"),
        ("names (walk)", hosts + origin),
        ("the instances", f"cd {SRC}\n{units}"),
        ("the CA, Linux desktop", f"cd {confdir}\n{ca_linux}\n"),
        ("self-test check", expect_451),
        ("unlisted page", unlisted),
        ("block log", block_log),
        ("status page", status),
        ("log rotation", rotation),
    ]


#: (walk) the platform's upload site on 127.0.0.1:8000, standing in for the operator's:
#: stores what it is sent under /srv/uploads and says so.
UPLOAD_SITE = """\
from aiohttp import web
import pathlib, secrets
store = pathlib.Path("/srv/uploads"); store.mkdir(parents=True, exist_ok=True)
async def upload(request):
    form = await request.post()
    (store / secrets.token_hex(8)).write_bytes(form["file"].file.read())
    return web.Response(text="stored\\n")
async def moderation(request):
    events = pathlib.Path("/srv/events"); events.mkdir(exist_ok=True)
    body = await request.read()
    (events / secrets.token_hex(8)).write_text(request.headers.get("Authorization", "") + "\\n" + body.decode())
    return web.Response(status=204)
async def home(request):
    return web.Response(text="<p>Example Photos</p>", content_type="text/html")
app = web.Application(client_max_size=64 << 20)
app.add_routes([web.post("/upload", upload), web.post("/internal/moderation", moderation), web.get("/", home)])
web.run_app(app, host="127.0.0.1", port=8000, print=None)
"""


def hosting_steps() -> tuple[Steps, list[str]]:
    """The hosting chapter in front of a small upload site, and its image check: (steps in
    the walk's network, not run)."""
    guide = GUIDE.read_text()
    hosting = section(guide, "## 3. A hosting platform")
    not_run = []
    proxy_yaml = block(hosting, "yaml", 'mode: ["reverse:')
    log_file = re.search(r"^blocklist_log_file: (\S+)", proxy_yaml, re.MULTILINE).group(1)  # type: ignore[union-attr]
    feeds = block(hosting, "toml", "[feeds.selftest-hashes]")
    licensed, selftest = feeds.split("[feeds.selftest-hashes]")
    assert "[feeds.iwf-hashes]" in licensed
    not_run.append("[feeds.iwf-hashes]  # the licensee's hash feed: no such feed here")
    sync = quoted(hosting, "runuser -u blocklist -- blocklist-sync --config")
    webhook = block(hosting, "yaml", "blocklist_image_webhook:")
    platform = "https://platform.example.net/internal/moderation"
    assert platform in webhook
    # (walk) the platform's moderation endpoint is the upload site's, over loopback
    webhook = webhook.replace(platform, "http://127.0.0.1:8000/internal/moderation")
    token_file = quoted(hosting, "install -m 600 -o blocklist -g blocklist /dev/null ")
    enforcing = quoted(hosting, "enforcing hash list version")
    units = block(hosting, "sh", "blocklist-proxy@8080")
    not_run.append(f"{units.strip()}  # no systemd: the guide's own way without it instead")
    by_hand = block(hosting, "sh", "install -d -o blocklist")
    assert "To try it without systemd" in hosting
    start = re.search(r"^runuser -u blocklist -- blocklist-proxy .*$", by_hand, re.MULTILINE)
    assert start, "the hosting chapter's start without systemd"
    status_port = re.search(r"status page is then on `127\.0\.0\.1:(\d+)`", hosting)
    assert status_port, "the hosting chapter should say where the status page is without systemd"
    status_url = f"http://127.0.0.1:{status_port.group(1)}"
    units = by_hand.replace(  # the typist's second terminal
        start.group(0), f"{start.group(0)} > /tmp/proxy-8080.log 2>&1 &"
    ) + (
        f"for n in $(seq 120); do curl -sf {status_url}/healthz > /dev/null && break; sleep 0.5; done\n"
        f"curl -s {status_url}/healthz\n"
    )
    check = block(hosting, "sh", "docs/splash.png")
    lines = check.splitlines()
    assert lines[1].startswith("curl -s -o /dev/null -w '%{http_code}\\n' -F file=@docs/splash.png")
    assert lines[3].startswith("curl -s -H 'Accept: application/json' -F file=@/tmp/copy.jpg")
    check = (
        "\n".join(
            [
                lines[0],
                f'code=$({lines[1]}); echo "$code"; test "$code" = 451   # the guide: prints 451',
                lines[2],
                f'out=$({lines[3]}); echo "$out"',
                'echo "$out" | grep -q \'"list": *"selftest"\'   # the guide: a JSON error naming list selftest',
            ]
        )
        + "\n"
    )
    site = (
        "# (walk) the platform's upload site\n"
        f"cat > /srv/site.py <<'EOF'\n{UPLOAD_SITE}EOF\n"
        "/opt/blocklist-proxy/bin/python /srv/site.py > /tmp/site.log 2>&1 &\n"
        "for n in $(seq 60); do curl -s http://127.0.0.1:8000/ > /dev/null && break; sleep 0.5; done\n"
    )
    logged = quoted(hosting, '"where":"image",').removesuffix("...")
    afterwards = textwrap.dedent(f"""\
        cat {log_file}
        grep -qF {shlex.quote(logged)} {log_file}    # the guide's words for the line
        test -z "$(ls /srv/uploads)"    # the platform received nothing
        grep -q {shlex.quote(enforcing)} /tmp/proxy-8080.log    # what the guide says the log says
        for n in $(seq 20); do [ -n "$(ls /srv/events 2>/dev/null)" ] && break; sleep 0.5; done
        cat /srv/events/*    # the moderation webhook's events
        grep -q '^Bearer walk-token$' /srv/events/*
        grep -q '"selftest"' /srv/events/*
        # (walk) an ordinary picture passes and is stored
        /opt/blocklist-proxy/bin/python -c "from PIL import Image; Image.new('RGB', (200, 120), (40, 120, 200)).save('/tmp/ordinary.png')"
        curl -s -F file=@/tmp/ordinary.png http://127.0.0.1:8080/upload | grep -q stored
        test "$(ls /srv/uploads | wc -l)" = 1
        curl -sf {status_url}/ | grep -q '<title>blocklist-proxy status</title>'
        """)
    return (
        [
            ("proxy.yaml", f"cat > /etc/blocklist-proxy/proxy.yaml <<'EOF'\n{proxy_yaml}EOF\n"),
            (
                "moderation webhook",
                f"{token_file}\nprintf walk-token > /etc/blocklist-proxy/webhook.token  # (walk) the token\n"
                f"cat >> /etc/blocklist-proxy/proxy.yaml <<'EOF'\n{webhook}EOF\n",
            ),
            (
                "hash feeds",
                f"cat >> /etc/blocklist-proxy/sync.toml <<'EOF'\n\n[feeds.selftest-hashes]{selftest}EOF\n",
            ),
            ("sync", f"{sync}\nrunuser -u blocklist -- blocklist-sync status\n"),
            ("upload site (walk)", site),
            ("the instance, without systemd", f"cd {SRC}\n{units}"),
            ("self-test uploads", check),
            ("block log, site, status", afterwards),
        ],
        not_run,
    )


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[pathlib.Path, dict[str, float]]]:
    with installed_system() as installed:
        yield installed


def test_the_school_chapter_walked_on_debian_13(
    system: tuple[pathlib.Path, dict[str, float]],
) -> None:
    root, installed = system
    figures = installed | run_steps(root, school_steps(), net=True)
    report("the install and the school chapter", figures, [])


def test_the_hosting_chapter_walked_on_debian_13(
    system: tuple[pathlib.Path, dict[str, float]],
) -> None:
    """After the school's walk on the same system (the install is common to both): the
    school's proxies went with their namespace."""
    root, _ = system
    steps, not_run = hosting_steps()
    figures = run_steps(root, steps, net=True)
    report("the hosting chapter (after the install)", figures, not_run)
