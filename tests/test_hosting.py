"""The hosting platform's chapter of the operator's guide, as a platform runs it (issue 25,
items 7-12): a real ``blocklist-proxy --mode reverse`` in front of a real aiohttp upload
site, enforcing an image hash list (and a URL list) synced by the real ``blocklist-sync``.

- suppression reaches the running proxy at once in every form of the command, and an id
  the list does not hold is an error that changes nothing;
- the upload refusal speaks for the site (not an "access provider") and names its contact;
- a listed picture followed by padding past ``blocklist_image_max_bytes`` is refused;
- the platform's own header naming the uploader reaches the block log and the webhook when
  the operator asks for it, and never otherwise;
- the sync, the proxy and ``blocklist-scan`` find one store without being told where.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from ruamel.yaml import YAML
from test_grafana import GRAFANA, PROMETHEUS_OWN, metric_names
from test_imageproxy import LISTED, Site, feed, make, multipart, post, upload_site

from testlab.harness import ROOT, VENV_BIN, Proxy, running, sync, wait_for
from testlab.images import encode, variants
from testlab.origins import TestCA

LISTED_JPEG = variants(LISTED)["jpeg-q40"]
CLEAN_JPEG = encode(LISTED.rotate(45), quality=85)  # not within the threshold of the listed one


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[Site]:
    with upload_site(ca) as started:
        yield started


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pathlib.Path]:
    """A store with a hash list (3 entries) and a URL list (2 entries, ids url-1, url-2)."""
    directory = tmp_path_factory.mktemp("hosting-store")
    url = (directory / "store").as_uri()
    sync(url, feed(directory), name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    urls = directory / "urls.csv"
    urls.write_text(
        "url,id\nhttp://listed.example.com/page.html,url-1\nhttp://other.example.org/x,url-2\n"
    )
    sync(url, urls, name="iwf", data_dir=directory / "data", fmt="csv")
    return url, directory


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    store: tuple[str, pathlib.Path],
    site: Site,
    confdir: pathlib.Path,
    ca: TestCA,
) -> Iterator[Proxy]:
    options = {
        "blocklist_contact": "abuse@platform.example.net",
        "blocklist_uploader_header": "X-Platform-User",
    }
    workdir = tmp_path_factory.mktemp("hosting-proxy")
    with running(make(workdir, store[0], site, confdir, ca, **options)) as p:
        yield p


def blocklist_sync(directory: pathlib.Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator types it: no --config, and none in /etc either."""
    env = {"BLOCKLIST_DATA_DIR": str(directory / "data"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(VENV_BIN / "blocklist-sync"), *argv],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def upload(proxy: Proxy, data: bytes, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return post(proxy, "/api/v1/media", data, "image/jpeg", Accept="application/json", **headers)


def hash_entries(proxy: Proxy) -> int:
    return int(proxy.health()[1]["hashes"]["entries"])  # type: ignore[index]


# -- item 9: suppression, at once, in every form ---------------------------------------------


def test_suppress_without_config_reaches_the_running_proxy_at_once(
    proxy: Proxy, store: tuple[str, pathlib.Path], site: Site
) -> None:
    """The guide's own command (no --config): the entry stops being enforced now, not at the
    next sync, and `unsuppress` brings it back as promptly."""
    url, directory = store
    assert upload(proxy, LISTED_JPEG)[0] == 451
    done = blocklist_sync(directory, "--store", url, "suppress", "--kind", "hashes", "iwf-1001")
    assert done.returncode == 0, done.stderr
    assert "activated hash list version" in done.stdout
    wait_for(lambda: hash_entries(proxy) == 2, 30, "the proxy to drop the suppressed entry")
    before = len(site.uploads)
    assert upload(proxy, LISTED_JPEG)[0] == 200 and len(site.uploads) == before + 1

    done = blocklist_sync(directory, "--store", url, "unsuppress", "--kind", "hashes", "iwf-1001")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: hash_entries(proxy) == 3, 30, "the proxy to enforce it again")
    assert upload(proxy, LISTED_JPEG)[0] == 451


def test_suppress_with_a_config_naming_other_feeds_still_rebuilds_from_the_store(
    proxy: Proxy, store: tuple[str, pathlib.Path]
) -> None:
    """A config with only a URL feed, used for a hash entry: the hash list is rebuilt from
    what the store recorded, at once."""
    url, directory = store
    config = directory / "urls-only.toml"
    config.write_text(
        f'store = "{url}"\n[feeds.iwf]\nurl = "{(directory / "urls.csv").as_uri()}"\n'
        'format = "csv"\n'
    )
    argv = ("--config", str(config), "suppress", "--kind", "hashes", "iwf-1001")
    assert blocklist_sync(directory, *argv).returncode == 0
    wait_for(lambda: hash_entries(proxy) == 2, 30, "the proxy to drop the suppressed entry")
    argv = ("--config", str(config), "unsuppress", "--kind", "hashes", "iwf-1001")
    assert blocklist_sync(directory, *argv).returncode == 0
    wait_for(lambda: hash_entries(proxy) == 3, 30, "the proxy to enforce it again")


def test_suppress_a_url_entry_without_config(proxy: Proxy, store: tuple[str, pathlib.Path]) -> None:
    """The URL list too: a suppressed page passes at once, and is blocked again after."""
    url, directory = store

    def status() -> int:
        conn_status, _, _ = post(proxy, "/comments", b"see http://listed.example.com/page.html",
                                 "text/plain")  # fmt: skip
        return conn_status

    assert status() == 451
    assert blocklist_sync(directory, "--store", url, "suppress", "url-1").returncode == 0
    wait_for(lambda: status() == 200, 30, "the proxy to stop enforcing url-1")
    assert blocklist_sync(directory, "--store", url, "unsuppress", "url-1").returncode == 0
    wait_for(lambda: status() == 451, 30, "the proxy to enforce url-1 again")


@pytest.mark.parametrize(
    "argv",
    [
        ("suppress", "--kind", "hashes", "no-such-entry"),
        ("suppress", "--kind", "hashes", "iwf-100"),  # a prefix of a real id
        ("suppress", "no-such-entry"),
        ("unsuppress", "--kind", "hashes", "iwf-1002"),  # in force, not suppressed
    ],
)
def test_an_id_not_in_the_list_is_an_error_and_changes_nothing(
    proxy: Proxy, store: tuple[str, pathlib.Path], argv: tuple[str, ...]
) -> None:
    url, directory = store

    def versions() -> tuple[object, object]:
        doc = json.loads(blocklist_sync(directory, "--store", url, "status", "--json").stdout)
        return doc["active"]["version"], doc["hashes"]["active"]["version"]

    before = versions()
    done = blocklist_sync(directory, "--store", url, *argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and argv[-1] in done.stderr
    assert "nothing changed" in done.stderr
    assert versions() == before
    assert hash_entries(proxy) == 3


# -- item 8: the refusal speaks for the site, with its contact -------------------------------


def test_the_upload_refusal_speaks_for_the_site_and_names_its_contact(proxy: Proxy) -> None:
    """In front of a platform the site refuses the upload, not "your access provider", and
    blocklist_contact is on the refusal as it is on the splash page."""
    body, kind = multipart([("a.jpg", LISTED_JPEG)])
    status, _, page = post(proxy, "/forum/upload", body, kind, Accept="text/html")
    assert status == 451
    text = page.decode()
    assert "access provider" not in text and "not accepted by this site" in text
    assert 'href="mailto:abuse@platform.example.net"' in text
    status, _, answer = upload(proxy, LISTED_JPEG)
    doc = json.loads(answer)
    assert status == 451 and "access provider" not in doc["message"]
    assert doc["contact"] == "mailto:abuse@platform.example.net"


# -- item 11: size alone never lets a listed picture through --------------------------------

PADDING = 33 * 1024 * 1024  # past the default blocklist_image_max_bytes (32 MiB)


@pytest.mark.parametrize("wrapped", ["raw", "multipart"])
def test_a_listed_picture_padded_past_max_bytes_is_refused(
    proxy: Proxy, site: Site, wrapped: str
) -> None:
    """The picture is in the body's head: checked there (decoded, and carved out of a
    multipart body cut short), so the padding buys nothing."""
    before = len(site.uploads)
    data = LISTED_JPEG + b"\0" * PADDING
    if wrapped == "raw":
        status, _, _ = upload(proxy, data)
    else:
        body, kind = multipart([("big.jpg", data)])
        status = post(proxy, "/forum/upload", body, kind)[0]
    assert status == 451
    assert len(site.uploads) == before
    assert proxy.blocks()[-1]["entry"] == "iwf-1001"


def test_a_clean_picture_padded_past_max_bytes_passes_whole_and_is_counted(
    proxy: Proxy, site: Site
) -> None:
    before = proxy.metric_series("blocklist_images_unchecked_total", reason="too-large")
    data = CLEAN_JPEG + b"\0" * PADDING
    assert upload(proxy, data)[0] == 200
    assert site.uploads[-1] == ("/api/v1/media", data)
    after = proxy.metric_series("blocklist_images_unchecked_total", reason="too-large")
    assert after == before + 1


# -- item 12: which account uploaded, when the operator asks ---------------------------------


def test_the_uploader_header_reaches_the_block_log_and_the_webhook(
    proxy: Proxy, site: Site
) -> None:
    """blocklist_uploader_header=X-Platform-User: its value (printable ASCII only, so it
    cannot forge a line) is in the block line and the webhook event."""
    status, _, _ = upload(proxy, LISTED_JPEG, **{"X-Platform-User": "user-4711\x1b[2J"})
    assert status == 451
    block = proxy.blocks()[-1]
    assert block["uploader"] == "user-4711[2J"
    event = wait_for(
        lambda: [e for e in site.events if e["reference"] == block["reference"]], 30, "the webhook"
    )[0]  # type: ignore[index]
    assert event["uploader"] == "user-4711[2J"
    # Without the header, no field at all.
    assert upload(proxy, LISTED_JPEG)[0] == 451
    assert "uploader" not in proxy.blocks()[-1]


def test_a_hash_list_without_pdq_hashes_maps(tmp_path: pathlib.Path) -> None:
    """An exact-only list (or one whose only PDQ entry was suppressed) gets its shared index
    file like any other: the empty PDQ tables made writing it raise, and the proxy never
    followed the new version."""
    from blocklist_addon.hashes import HashList
    from blocklist_addon.hashes.records import record_of
    from blocklist_addon.hashes.snapshot import HashSnapshot

    record = record_of({"id": "only-md5", "md5": "ab" * 16})
    assert record is not None
    hashlist, note = HashList.mapped(HashSnapshot.build([("l", record)]), tmp_path)
    assert note is None and len(hashlist) == 1
    assert hashlist.match_exact_bytes(b"unlisted") is None


# -- item 7: one default store for every command ---------------------------------------------


class SystemInstall:
    """A mount namespace whose /var/lib is a fresh tmpfs holding an empty
    /var/lib/blocklist-proxy (as the guide's useradd makes it): commands run in it see a
    system install, and the host's /var/lib is untouched."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o mode=0755 tmpfs /var/lib && mkdir /var/lib/blocklist-proxy "
             "&& echo ready && exec sleep 300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.wait(10)
            pytest.skip(f"no mount namespace here: {self.holder.stderr.read()[:200]}")  # type: ignore[union-attr]

    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--"]

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


class DefaultStoreProxy(Proxy):
    """``blocklist-proxy`` with no --store and no $BLOCKLIST_DATA_DIR, in the namespace."""

    def __init__(self, install: SystemInstall, env: dict[str, str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.install, self.bare_env = install, env

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--store")
        del command[at : at + 2]
        return self.install.prefix() + command

    def start(self, *, wait: bool = True) -> Proxy:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.bare_env
            )
        wait_for(self._ready, 60, f"the proxy to start (log: {self.log_path})")
        return self


def test_sync_proxy_and_scan_find_one_store_without_being_told(
    tmp_path: pathlib.Path, site: Site, confdir: pathlib.Path, ca: TestCA
) -> None:
    """The guide's hosting chapter as written: the sync run with
    BLOCKLIST_DATA_DIR=/var/lib/blocklist-proxy (and a config without a store), then the
    proxy and blocklist-scan started by hand with neither --store nor the variable: both
    find the list (they looked in ~/.local/share and exited with "no list to enforce")."""
    install = SystemInstall()
    try:
        home = tmp_path / "home"
        home.mkdir()
        bare = {"PATH": "/usr/bin:/bin", "HOME": str(home)}  # no BLOCKLIST_DATA_DIR
        config = tmp_path / "sync.toml"
        config.write_text(f'[feeds.hotline]\nurl = "{feed(tmp_path).as_uri()}"\n'
                          'format = "hashes-jsonl"\n')  # fmt: skip
        done = subprocess.run(
            [*install.prefix(), str(VENV_BIN / "blocklist-sync"), "--config", str(config)],
            capture_output=True, text=True, timeout=120,
            env={**bare, "BLOCKLIST_DATA_DIR": "/var/lib/blocklist-proxy"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not (home / ".local").exists()

        stored = tmp_path / "stored"
        stored.mkdir()
        (stored / "upload.jpg").write_bytes(LISTED_JPEG)
        scan = subprocess.run(
            [*install.prefix(), str(VENV_BIN / "blocklist-scan"), "--quiet", str(stored)],
            capture_output=True, text=True, timeout=120, env=bare,
        )  # fmt: skip
        assert scan.returncode == 1, scan.stderr  # found the list, and the listed file
        assert json.loads(scan.stdout)["matched"][0]["entry"] == "iwf-1001"

        assert site.moderation is not None
        target = f"127.0.0.1:{site.origin.port}"
        proxy = DefaultStoreProxy(
            install, bare, workdir=tmp_path / "proxy", store="", routes={target: site.origin.port},
            confdir=confdir, ca=ca, mode=f"reverse:http://{target}",
        )  # fmt: skip
        with running(proxy):
            assert hash_entries(proxy) == 3
            assert upload(proxy, LISTED_JPEG, **{"X-Platform-User": "u1"})[0] == 451
            assert "uploader" not in proxy.blocks()[-1]  # off unless the operator names one
    finally:
        install.close()


# -- item 10: the alerts fit a hash-only proxy -------------------------------------------------

_SIMPLE = re.compile(r"\s*([a-z_]+)\s*(==|!=|>|<)\s*([0-9.*\s]+?)\s*$")


def fires(expr: str, values: dict[str, float]) -> bool | None:
    """Evaluate an alert of plain comparisons joined by `and` / `or` on one proxy's
    metrics; None for anything else (rates, aggregations), which is not judged here."""
    expr = " ".join(expr.split())
    if any(c in expr for c in "([{"):
        return None
    result: bool | None = None
    for alternative in expr.split(" or "):
        terms = []
        for term in alternative.split(" and "):
            if not (m := _SIMPLE.fullmatch(term)):
                return None
            name, op, number = m.groups()
            value, limit = values[name], math.prod(float(x) for x in number.split("*"))
            terms.append({"==": value == limit, "!=": value != limit,
                          ">": value > limit, "<": value < limit}[op])  # fmt: skip
        result = bool(result) or all(terms)
    return result


def proxy_alerts() -> list[str]:
    """The shipped rules of the proxy's group. The other group is blocklist-divert's, whose
    names are in the gateway's metrics file, not on a proxy (tests/test_grafana.py checks
    them there)."""
    rules = YAML(typ="safe").load((GRAFANA / "prometheus-alerts.yml").read_text())
    groups = {group["name"]: group["rules"] for group in rules["groups"]}
    assert set(groups) == {"blocklist-proxy", "blocklist-divert"}
    return [rule["expr"] for rule in groups["blocklist-proxy"]]


def guide_alerts() -> list[str]:
    """The expressions of the guide's example alerts (docs/operators-guide.md)."""
    text = (ROOT / "docs" / "operators-guide.md").read_text()
    block = text.split("Example Prometheus alerts", 1)[1].split("```yaml", 1)[1].split("```")[0]
    return [rule["expr"] for rule in YAML(typ="safe").load(block)]


def test_the_alerts_name_live_metrics_and_stay_quiet_on_a_healthy_hash_only_proxy(
    tmp_path: pathlib.Path, site: Site, confdir: pathlib.Path, ca: TestCA
) -> None:
    """Every metric the shipped rules and the guide's examples name is on a hash-only
    proxy's /metrics, and none of their plain rules fires on it while it is healthy
    (`blocklist_list_loaded == 0` alone did, forever)."""
    store = (tmp_path / "store").as_uri()
    sync(store, feed(tmp_path), name="hotline", data_dir=tmp_path / "data", fmt="hashes-jsonl")
    with running(make(tmp_path / "proxy", store, site, confdir, ca)) as proxy:
        assert proxy.health()[1]["status"] == "ok"
        values: dict[str, float] = {}
        for line in proxy.metrics().splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                values[name] = values.get(name, 0) + float(line.rsplit(" ", 1)[1])
    exprs = proxy_alerts() + guide_alerts()
    named = {name for expr in exprs for name in metric_names(expr)}
    assert {"blocklist_hashes_stale", "blocklist_image_webhook_total"} <= named
    assert named - set(values) - PROMETHEUS_OWN == set()
    judged = {expr: fires(expr, values) for expr in exprs}
    assert sum(v is not None for v in judged.values()) >= 6, judged
    assert [expr for expr, firing in judged.items() if firing] == []


# -- item 14: the install says which Python it needs -----------------------------------------


def test_an_install_with_python_3_11_says_that_3_12_is_needed() -> None:
    """pip reads a local directory's build script before it resolves dependencies, so on
    Debian 12 the sentence comes first, instead of "No matching distribution found for
    mitmproxy<13,>=12" (pip does not check requires-python for a local directory)."""
    old = shutil.which("python3.11")
    if old is None:
        pytest.skip("no python3.11 here")
    done = subprocess.run(
        [old, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "blocklist-proxy needs Python 3.12 or newer (this is 3.11)" in done.stderr


def guide_install() -> str:
    """The install block of docs/operators-guide.md, as an operator copies it."""
    text = (ROOT / "docs" / "operators-guide.md").read_text()
    section = text.split("## Common to all: install", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def test_the_guides_install_block_works_as_written() -> None:
    """Item 13 and 14: the version check in the guide's install step stops Python 3.11 with
    the sentence and lets this Python through; the source directory is made before it is
    used; every command is linked; /etc/blocklist-proxy is the service user's; no sudo."""
    block = guide_install()
    check = next(line for line in block.splitlines() if line.startswith("python3 -c"))
    code = shlex.split(check)[2]
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    if old := shutil.which("python3.11"):
        done = subprocess.run([old, "-c", code], capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert "blocklist-proxy needs Python 3.12 or newer" in done.stderr
    made = block.index(" /opt/blocklist-proxy-src")
    assert made < block.index("pip install /opt/blocklist-proxy-src")
    linked = block[block.index("ln -s") :].split("/usr/local/bin/", 1)[0]
    for command in ("blocklist-sync", "blocklist-proxy", "blocklist-divert", "blocklist-scan"):
        assert f"/opt/blocklist-proxy/bin/{command} " in linked.replace("\\\n", " ")
    assert "install -d -o blocklist -g blocklist -m 0750 /etc/blocklist-proxy" in block
    assert "mkdir -p /etc/blocklist-proxy" not in block and "sudo" not in block


def test_the_refusal_wording_follows_the_deployment() -> None:
    """A school's or an ISP's proxy (not reverse mode) still speaks as the access provider;
    an operator's own name wins everywhere; no contact set, no contact shown."""
    from blocklist_addon.ops.splash import SplashConfig, refused_upload

    def message(config: SplashConfig, *, site: bool) -> str:
        answer = refused_upload(config, list_name="l", reference="r", as_json=True, site=site)
        return str(json.loads(answer.body)["message"])

    assert "not accepted by your access provider" in message(SplashConfig(), site=False)
    assert "not accepted by this site" in message(SplashConfig(), site=True)
    named = SplashConfig(operator="Example Photos")
    assert "not accepted by Example Photos" in message(named, site=True)
    plain = refused_upload(SplashConfig(), list_name="l", reference="r", as_json=False, site=True)
    assert b"Contact" not in plain.body and b"mailto:" not in plain.body
