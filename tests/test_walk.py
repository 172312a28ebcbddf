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
  own mount, PID and UTS namespaces: the install steps and the pupil's desktop's ``apt-get``
  with this machine's network (they need the mirror and PyPI), everything from the proxy's
  start on in a network namespace of its own, where the pupils' clients run too: curl for
  the guide's self-test lines, and Debian's Chromium, set up as the school chapter says for
  a Linux desktop (the managed policy deploy/chromium/school-proxy.json pointing at the
  shipped PAC file, the CA in the pupil's NSS database by certutil), run headless as the
  ordinary account ``pupil``, with its own profile and sandbox and no proxy flag.
- What is not typed as written, and why: ``git clone REPOSITORY-URL`` is the guide's own
  alternative, a copy of the checkout (``git archive HEAD``); ``apt-get install`` gets
  ``-y`` (the typist's yes); ``[feeds.iwf]`` points at samples/sample-feed.txt (the
  licensee's feed stands in: no token); systemd is not PID 1 in a chroot, so
  ``systemctl enable --now blocklist-proxy@PORT`` runs the unit's ExecStart as its User=
  with its Environment= after making its LogsDirectory= (all read from the shipped unit),
  and the sync timer is not started (the walk runs the sync by hand, which the guide does
  too); the units the guide copies are checked with ``systemd-analyze verify`` instead;
  ``proxy.example``, ``proxy.school.example`` (the PAC file's PROXIES, unedited) and the
  origins are names in the system's /etc/hosts, and ``www.school.example`` too, the school's
  web server the policy's ProxyPacUrl names: ``python3 -m http.server`` serving the shipped
  PAC file (it types ``.pac`` as the guide asks). The origins are one small server, HTTP
  and HTTPS, for ``unlisted.example.org`` and the listed hosts ``blocked.example.com`` and
  ``www.example.org``, with a certificate from a CA the walk makes, which stands in for the
  web's public CAs: the proxy gets it as ``ssl_verify_upstream_trusted_ca`` in proxy.yaml
  and the pupil's NSS database gets it too (the real web's are in Chromium's own root
  store). The walk makes the account ``pupil`` before the desktop's setup (an account that
  exists: the guide's certutil line for it) and ``pupil2`` after (the one /etc/skel serves).
  The chroot refuses Chromium the user namespace its sandbox needs (the kernel gives none to
  a chrooted process), so the walk installs ``chromium-sandbox`` as the guide says for such
  systems; no ``--no-sandbox``. In the hosting chapter
  the proxy starts the guide's way without systemd, the licensee's hash feed is left out
  (the self-test hash feed stays), the platform is a small aiohttp upload site on
  127.0.0.1:8000 whose moderation endpoint takes the webhook over loopback (the guide's
  ``https://platform.example.net`` has no server here), with a token written by the walk.
- The working state: the self-test entry answers 451 through the proxy over HTTP and HTTPS
  (with the school's CA trusted system-wide as the guide says for Linux desktops, the
  guide's three curl lines all answer 451), an unlisted page passes through each instance,
  the block log has the self-test's lines without the URL and follows logrotate's rename,
  and each instance's status page answers. In the pupil's Chromium (its DOM by
  ``--dump-dom``): a listed page asked for over ``http://`` (Chromium upgrades a name to
  ``https://``: the splash says which it asked for), one on an address (plain HTTP) and one
  over HTTPS show the splash page with the hotline's wording, which shows no certificate
  error (an account without the CA gets no page from the host at all); the self-test page
  says it is one, over HTTP and HTTPS; an unlisted page on an unlisted host (not decrypted)
  and one on a decrypted listed host come from the origin untouched; the listed pages never
  reached the origin; the block log
  holds them without their URLs; a screenshot of the listed HTTPS page, 900x900, is copied to
  ``var/walk/pupil-blocked.png`` (and ``$BLOCKLIST_SCREENSHOTS``; docs/pupil-blocked.png
  comes from there); and with the PAC file's server gone, Chromium does not go direct
  (ProxyPacMandatory). For the hosting platform, the self-test image and
  a smaller JPEG copy are refused (451, the JSON error naming the list), the block log has
  the line the guide quotes, the site received nothing, the moderation webhook got the
  events with the token, the log says what the guide says, and an ordinary picture is stored.

One setting is this machine's: its egress intercepts TLS, so pip gets the host's CA bundle
(``PIP_CERT``) when the host has one.
"""

# ruff: noqa: E501  (shell lines written as an operator types them)

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import textwrap
from collections.abc import Iterator

import pytest

from testlab.walk import (
    GUIDE,
    ROOT,
    SRC,
    WALK,
    Steps,
    block,
    installed_system,
    opt_in,
    quoted,
    report,
    run_steps,
    section,
    unit_start,
    wait_healthy,
)

pytestmark = opt_in("the install, school and hosting chapters")


#: (walk) the origins: an unlisted host, and two hosts with listed entries, which the
#: school's proxy decrypts; all on 127.0.0.1 in the walk's network.
ORIGINS = ["unlisted.example.org", "blocked.example.com", "www.example.org"]
#: (walk) the school's internal web server, which serves the PAC file.
SCHOOL_WEB = "www.school.example"
#: (walk) the CA of the origins' certificates, standing in for the web's public CAs.
WEB_CA = "/etc/walk-web-ca.pem"

#: (walk) the origins over HTTP (80) and HTTPS (443): every page says which host and path it
#: is, and every request is logged, so that a listed page reaching the origin shows.
ORIGIN = f"""\
import datetime, http.server, ssl, sys, threading
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
NAMES = {ORIGINS!r}
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def cert(subject, key, issuer, issuer_key, *extensions):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())
ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
             key_agreement=False, encipher_only=False, decipher_only=False)
ca = cert(name("Walk Web CA"), ca_key, name("Walk Web CA"), ca_key,
          (x509.BasicConstraints(ca=True, path_length=0), True),
          (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), True))
leaf = cert(name(NAMES[0]), key, ca.subject, ca_key,
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
open("{WEB_CA}", "wb").write(ca.public_bytes(serialization.Encoding.PEM))
with open("/srv/origin.pem", "wb") as out:
    out.write(leaf.public_bytes(serialization.Encoding.PEM))
    out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get("Host", "").split(":")[0]
        body = f"an ordinary page on {{host}}{{self.path}}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, format, *args):
        print(self.headers.get("Host"), format % args, file=sys.stderr, flush=True)
plain = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Page)
tls = http.server.ThreadingHTTPServer(("127.0.0.1", 443), Page)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain("/srv/origin.pem")
tls.socket = context.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
"""


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

    hosts = textwrap.dedent(f"""\
        # (walk) the names: the proxy box, the school's web server, the origins
        echo '127.0.0.1 proxy.example proxy.school.example {" ".join(ORIGINS)}' >> /etc/hosts
        echo '127.0.0.2 {SCHOOL_WEB}' >> /etc/hosts
        """)
    origin = (
        "# (walk) the origins, over HTTP and HTTPS, with certificates from the web's CA (a stand-in)\n"
        f"cat > /srv/origin.py <<'EOF'\n{ORIGIN}EOF\n"
        + textwrap.dedent(f"""\
            /opt/blocklist-proxy/bin/python /srv/origin.py > /tmp/origin.log 2>&1 &
            for n in $(seq 60); do curl -s http://unlisted.example.org/ > /dev/null && break; sleep 0.5; done
            curl -sf --cacert {WEB_CA} https://unlisted.example.org/
            # (walk) the proxy checks origins' certificates against that CA: the web's are public
            echo 'ssl_verify_upstream_trusted_ca: {WEB_CA}' >> /etc/blocklist-proxy/proxy.yaml
            """)
    )
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
        *desktop_steps()[1],
        ("block log", block_log),
        ("status page", status),
        ("log rotation", rotation),
    ]


#: (walk) how the walk opens a page in the pupil's Chromium: headless, as the pupil, with the
#: profile, policy and NSS database a pupil's Chromium has, and its sandbox. No proxy flag: the
#: proxy comes from the policy's PAC file.
BROWSE = textwrap.dedent("""\
    browse() {  # (walk) the pupil (or account $2) opens $1; the DOM as Chromium has it in /tmp/dom
      runuser -l "${2:-pupil}" -c "timeout 120 chromium --headless --dump-dom '$1'" > /tmp/dom 2> /tmp/chromium.err \\
        || { tail -20 /tmp/chromium.err; return 1; }
      cat /tmp/dom; echo
    }
    intercepted() {  # (walk) TLS connections the proxies decrypted, both instances together
      for i in 18081 18082; do curl -s http://127.0.0.1:$i/metrics; done \\
        | awk '/^blocklist_tls_total.*"intercept"/ {n += $2} END {print n + 0}'
    }
    """)

#: What the splash page says for a listed page (the default wording).
SPLASH = ["Access denied", "indecent images of children", "What was blocked"]


def desktop_steps() -> tuple[str, Steps]:
    """A pupil's Linux desktop as the school chapter sets it up, and what its Chromium
    shows: (the apt-get line, run with the network; the steps in the walk's network)."""
    guide = GUIDE.read_text()
    school = section(guide, "## 1. A school")
    desktop = block(school, "sh", "/etc/chromium/policies/managed")
    apt, rest = desktop.split("\n", 1)
    assert apt.startswith("apt-get install "), "the desktop's block should begin with apt-get"
    # The walk's system is entered by chroot, and the kernel refuses a chrooted process the
    # user namespace Chromium's own sandbox needs: the guide's case for Debian's setuid one.
    sandbox = quoted(school, "apt-get install chromium-sandbox")
    apt = f"{apt}\n{sandbox}".replace("apt-get install ", "apt-get install -y ")
    policy = json.loads((ROOT / "deploy" / "chromium" / "school-proxy.json").read_text())
    pac_url = policy["ProxySettings"]["ProxyPacUrl"]
    assert pac_url == f"http://{SCHOOL_WEB}/proxy.pac"
    served = textwrap.dedent(f"""\
        # (walk) the school's web server serves the shipped PAC file (python3 -m http.server
        # types .pac as application/x-ns-proxy-autoconfig)
        mkdir -p /srv/school && cp deploy/pac/proxy.pac /srv/school/
        cd /srv/school && python3 -m http.server 80 --bind 127.0.0.2 > /tmp/school-web.log 2>&1 &
        echo $! > /tmp/school-web.pid
        for n in $(seq 60); do curl -s {pac_url} > /dev/null && break; sleep 0.5; done
        curl -sfi {pac_url} | grep -i '^content-type: application/x-ns-proxy-autoconfig'
        """)
    account = "useradd -m pupil   # (walk) the pupil's account, made before the desktop's setup\n"
    web_ca = (
        "# (walk) the web's CAs are in Chromium's own root store; the walk's origins' CA is not\n"
        f"runuser -l pupil -c 'certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n \"Walk Web CA\" -i {WEB_CA}'\n"
        "# (walk) an account made after the setup has the CA from /etc/skel\n"
        "useradd -m pupil2\n"
        "runuser -l pupil2 -c 'certutil -d sql:$HOME/.pki/nssdb -L' | grep 'Example School IT web filter CA'\n"
    )
    splash = "".join(f"grep -q {shlex.quote(s)} /tmp/dom\n" for s in SPLASH)
    listed_http = "http://blocked.example.com/page.html"
    listed_https = "https://blocked.example.com/gallery/photo/1.html"
    listed_ip = "http://192.0.2.44/img/photo.jpg"
    shot = "/home/pupil/pupil-blocked.png"
    pupil = (
        BROWSE
        + "# a listed page over HTTP, and over HTTPS on a host the proxy decrypts: the splash page\n"
        + f"browse {listed_http}\n{splash}"
        + "# Chromium asked for https:// (HTTPS-Upgrades, where the host answers it), or http://\n"
        + "grep -o '<dd class=\"url\">[^<]*' /tmp/dom\n"
        + "# an address is not upgraded: a listed page over plain HTTP\n"
        + f"browse {listed_ip}\n{splash}"
        + f"grep -qF '<dd class=\"url\">{listed_ip}<' /tmp/dom\n"
        + f"browse {listed_https}\n{splash}"
        + textwrap.dedent(f"""\
            grep -qF {listed_https} /tmp/dom   # what was blocked: no certificate error, since
            # on one Chromium shows no page from the host at all (the guest below)
            # the self-test page, over HTTP and HTTPS (the proxy decrypts it too)
            browse http://blocklist-check.invalid/
            grep -q 'self-test' /tmp/dom
            browse https://blocklist-check.invalid/
            grep -q 'self-test' /tmp/dom
            # an unlisted page on an unlisted host, and one on a decrypted host, as the origin serves them
            before=$(intercepted)
            browse https://unlisted.example.org/hello.html
            grep -q 'an ordinary page on unlisted.example.org/hello.html' /tmp/dom
            test "$(intercepted)" = "$before"   # not decrypted: the origin's own certificate
            browse https://blocked.example.com/about.html
            grep -q 'an ordinary page on blocked.example.com/about.html' /tmp/dom
            browse http://unlisted.example.org/plain.html
            grep -q 'an ordinary page on unlisted.example.org/plain.html' /tmp/dom
            # the listed pages never reached the origin; the block log has them, without the URL
            cat /tmp/origin.log
            if grep -E '"GET /(page\\.html|gallery/)' /tmp/origin.log; then exit 1; fi
            grep -c '"list":"iwf"' /var/log/blocklist-proxy/blocks.jsonl
            if grep -E 'blocked\\.example|gallery' /var/log/blocklist-proxy/blocks.jsonl; then exit 1; fi
            # the decisions at the TLS handshake, both instances together
            for i in 18081 18082; do curl -s http://127.0.0.1:$i/metrics; done | grep '^blocklist_tls_total'
            test "$(intercepted)" -ge 3
            # what a pupil sees, for the guide
            runuser -l pupil -c 'timeout 120 chromium --headless --window-size=900,900 --screenshot={shot} {listed_https}'
            cp {shot} /root/walk/
            # (walk) an account without the CA in its NSS database (the guide: devices without
            # the CA): Chromium refuses the proxy's certificate and shows nothing of the host
            useradd -m guest && rm -rf /home/guest/.pki
            browse {listed_https} guest
            if grep -Eq 'Access denied|an ordinary page' /tmp/dom; then exit 1; fi
            # ProxyPacMandatory: without its PAC file Chromium does not go direct
            kill $(cat /tmp/school-web.pid)
            browse https://unlisted.example.org/no-pac.html || true
            if grep -q 'an ordinary page' /tmp/dom; then exit 1; fi
            """)
    )
    return apt, [
        ("the PAC file, served (walk)", f"cd {SRC}\n{served}"),
        ("a pupil's desktop", f"cd {SRC}\n{account}{rest}{web_ca}"),
        ("the pupil's Chromium", pupil),
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
    apt, _ = desktop_steps()
    figures = installed | run_steps(root, [("a pupil's desktop: apt-get", apt)], net=False)
    figures |= run_steps(root, school_steps(), net=True)
    shot = root / "root" / "walk" / "pupil-blocked.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    for directory in (WALK, os.environ.get("BLOCKLIST_SCREENSHOTS")):
        if directory:
            shutil.copy(shot, pathlib.Path(directory) / shot.name)
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
