"""The files in deploy/ work as shipped.

The hardened Redis (``deploy/redis/redis.conf`` and ``users.acl``) is started for real, with
the hashes of test passwords put in place of the placeholders by the operator's guide's own
commands, and the test's own port and directories: the sync publishes as ``blocklist-sync``,
a proxy enforces and follows new versions as ``blocklist-proxy``, and neither user (nor an
anonymous client) can do more than its role. As shipped, the placeholders do not work: Redis
refuses to start, and the sync and the proxy refuse a CHANGE-ME password.

The systemd units pass ``systemd-analyze verify``, the cron line's command runs as written,
the transparent-mode nft table does its job in network namespaces, and of the compose kit
what runs without a container engine is run (``make test-container``, tests/test_container.py,
builds and runs the kit itself with podman).
"""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import redis
from conftest import find_redis_server
from ruamel.yaml import YAML

from blocklist_addon import Blocklist
from testlab.divert_lab import Site
from testlab.harness import (
    ROOT,
    SAMPLE_FEED,
    VENV_BIN,
    Proxy,
    assert_splash,
    feed_with,
    running,
    sync,
    synced_store,
    wait_for,
)
from testlab.netns import Lab, Topology, gateway_topology, unavailable
from testlab.origins import Origins, TestCA

DEPLOY = ROOT / "deploy"


def password_file(directory: pathlib.Path, user: str) -> tuple[str, pathlib.Path]:
    password = secrets.token_hex(16)
    path = directory / f"{user}.password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password, path


GUIDE = ROOT / "docs" / "operators-guide.md"


def write_acl(target: pathlib.Path, sync_file: pathlib.Path, proxy_file: pathlib.Path) -> None:
    """The operator's guide's commands that put the passwords' hashes into users.acl, run
    as written but for the paths."""
    text = GUIDE.read_text()
    start = text.index("   hash() {")
    end = text.index("> /etc/redis/blocklist-users.acl", start) + len(
        "> /etc/redis/blocklist-users.acl"
    )
    script = (
        textwrap.dedent(text[start:end])
        .replace("/etc/blocklist-proxy/redis-sync.password", str(sync_file))
        .replace("/etc/blocklist-proxy/redis-proxy.password", str(proxy_file))
        .replace("deploy/redis/users.acl", str(DEPLOY / "redis" / "users.acl"))
        .replace("/etc/redis/blocklist-users.acl", str(target))
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def hardened_conf(directory: pathlib.Path, acl: pathlib.Path) -> pathlib.Path:
    """deploy/redis/redis.conf as shipped, but for the paths of a real install (Redis chdirs
    to dir at once)."""
    conf = [
        f"dir {directory}" if line.startswith("dir ") else
        f"aclfile {acl}" if line.startswith("aclfile ") else line
        for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines()
    ]  # fmt: skip
    assert sum(line.startswith(("dir ", "aclfile ")) for line in conf) == 2
    (directory / "redis.conf").write_text("\n".join(conf) + "\n")
    return directory / "redis.conf"


def test_redis_refuses_to_start_with_the_placeholders_as_shipped(tmp_path: pathlib.Path) -> None:
    shipped = (DEPLOY / "redis" / "users.acl").read_text()
    assert shipped.count("#CHANGE-ME-") == 2 and ">" not in shipped  # no plaintext password
    conf = hardened_conf(tmp_path, DEPLOY / "redis" / "users.acl")
    done = subprocess.run(
        [str(find_redis_server()), str(conf), "--port", "0", "--unixsocket", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Aborting Redis startup because of ACL errors" in done.stdout
    assert "users.acl:2" in done.stdout


@pytest.mark.parametrize("where", ["url", "env", "file"])
def test_the_sync_and_the_proxy_refuse_a_placeholder_password(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path, where: str
) -> None:
    placeholder = "CHANGE-ME-sync"
    store, env = "redis://blocklist-sync@127.0.0.1:9/0", {}
    if where == "url":
        store = f"redis://blocklist-sync:{placeholder}@127.0.0.1:9/0"
    elif where == "env":
        env = {"BLOCKLIST_REDIS_PASSWORD": placeholder}
    else:
        (tmp_path / "pw").write_text(placeholder + "\n")
        env = {"BLOCKLIST_REDIS_PASSWORD_FILE": str(tmp_path / "pw")}
    done = subprocess.run(
        [str(VENV_BIN / "blocklist-sync"), "--store", store, "--feed-url",
         SAMPLE_FEED.as_uri(), "--format", "text"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "BLOCKLIST_DATA_DIR": str(tmp_path / "data"), **env},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "placeholder" in done.stderr and placeholder not in done.stderr
    proxy = make_proxy(store, env=env).start(wait=False)
    assert proxy.wait_exit() == 1
    assert "placeholder" in proxy.log() and placeholder not in proxy.log()


def test_hardened_redis_serves_each_role_and_nothing_more(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    sync_password, sync_file = password_file(tmp_path, "sync")
    proxy_password, proxy_file = password_file(tmp_path, "proxy")
    write_acl(tmp_path / "users.acl", sync_file, proxy_file)
    acl = (tmp_path / "users.acl").read_text()
    assert "CHANGE-ME" not in acl and sync_password not in acl  # hashes only
    hardened_conf(tmp_path, tmp_path / "users.acl")
    server = redis_factory(config=tmp_path / "redis.conf")
    where = f"127.0.0.1:{server.port}/0"

    data = tmp_path / "data"
    as_sync = {"BLOCKLIST_REDIS_PASSWORD_FILE": str(sync_file)}
    sync(f"redis://blocklist-sync@{where}", feed_with(tmp_path), data_dir=data, env=as_sync)

    proxy = make_proxy(
        f"redis://blocklist-proxy@{where}", env={"BLOCKLIST_REDIS_PASSWORD_FILE": str(proxy_file)}
    )
    with running(proxy):
        assert_splash(proxy.get("http://blocked.example.com/page.html"), page=False)
        fresh = "http://fresh.example.net/new.html"
        sync(
            f"redis://blocklist-sync@{where}",
            feed_with(tmp_path, fresh),
            data_dir=data,
            env=as_sync,
        )
        wait_for(lambda: proxy.get(fresh).status == 451, 5, "the new version via pub/sub")
        assert proxy.health()[1]["status"] == "ok"
        assert proxy.metric("blocklist_store_errors_total") == 0

    anonymous = redis.Redis(port=server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("blocklist:active")
    as_proxy = redis.Redis(port=server.port, username="blocklist-proxy", password=proxy_password)
    assert as_proxy.get("blocklist:active") is not None
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_proxy.set("blocklist:active", b"1")
    as_sync_user = redis.Redis(port=server.port, username="blocklist-sync", password=sync_password)
    for command in [("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_sync_user.execute_command(*command)
    # Refused either by the ACL or, on Debian's Redis 7 (enable-debug-command no), earlier.
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        as_sync_user.execute_command("DEBUG", "SLEEP", "0")
    assert isinstance(refused.value, redis.exceptions.NoPermissionError) or (
        "DEBUG command not allowed" in str(refused.value)
    ), refused.value
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_sync_user.set("other:key", b"x")  # only its own prefix
    for client in (anonymous, as_proxy, as_sync_user):
        client.close()


def test_the_self_test_entry_of_the_operators_guide(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """docs/operators-guide.md's check: the self-test feed blocks blocklist-check.invalid,
    over HTTP (the splash page) and at the CONNECT when nothing is decrypted."""
    store = (tmp_path / "store").as_uri()
    sync(store, ROOT / "samples" / "selftest-feed.txt", name="selftest", data_dir=tmp_path)
    with running(make_proxy(store, options={"blocklist_intercept": "never"})) as proxy:
        assert_splash(proxy.get("http://blocklist-check.invalid/"), page=False)
        assert_splash(proxy.get("http://blocklist-check.invalid/any/page.html"), page=False)
        assert proxy.connect("blocklist-check.invalid") == 451
        assert proxy.get("http://blocked.example.com/page.html").status == 200  # not listed here
        assert proxy.blocks()[0]["list"] == "selftest"


# -- systemd units and the cron line ----------------------------------------------------------


def _namespace_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace (CI runs the suite as root)"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def installed(
    tmp_path: pathlib.Path, layers: dict[str, dict[str, pathlib.Path | str]]
) -> list[str]:
    """The argv prefix of a command run in a private mount namespace where each directory of
    ``layers`` (``/usr/local/bin``, ``/etc``) also holds the given files, as the operator's
    guide installs them: the units and the cron line then run exactly as shipped. Each is an
    overlay inside that namespace only; nothing outside it changes."""
    mounts = []
    for i, (target, entries) in enumerate(layers.items()):
        upper, work = tmp_path / f"layer{i}", tmp_path / f"layer{i}-work"
        work.mkdir(parents=True)
        for name, source in entries.items():
            path = upper / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, pathlib.Path):
                path.symlink_to(source)
            else:
                path.write_text(source)
        options = f"lowerdir={target},upperdir={upper},workdir={work}"
        mounts.append(f"mount -t overlay overlay -o {options} {target}")
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def commands_in(text: str) -> set[str]:
    return set(re.findall(r"/usr/local/bin/([\w-]+)", text))


@pytest.mark.skipif(
    bool(_namespace_unavailable() or not shutil.which("systemd-analyze")),
    reason=str(_namespace_unavailable() or "systemd-analyze is not installed (package systemd)"),
)
def test_the_systemd_units_verify(tmp_path: pathlib.Path) -> None:
    """``systemd-analyze verify`` of every unit as shipped (a template as instance 8081), with
    the commands they run installed where the guide puts them: no error, no warning."""
    units = tmp_path / "units"
    units.mkdir()
    paths, commands = [], set()
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        name = unit.name.replace("@.", "@8081.")
        shutil.copy(unit, units / name)
        paths.append(str(units / name))
        commands |= commands_in(unit.read_text())
    assert {"blocklist-sync", "blocklist-proxy"} <= commands
    bin_layer = {name: VENV_BIN / name for name in commands}
    done = subprocess.run(
        [*installed(tmp_path, {"/usr/local/bin": bin_layer}), "systemd-analyze", "verify", *paths],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


CRON = DEPLOY / "cron" / "blocklist-sync"


def cron_job() -> tuple[dict[str, str], str, str, str]:
    """The cron file's environment, schedule, user and command."""
    env: dict[str, str] = {}
    jobs = []
    for line in CRON.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            key, _, value = line.partition("=")
            env[key] = value
        else:
            jobs.append(line.split(None, 6))
    (job,) = jobs
    return env, " ".join(job[:5]), job[5], job[6]


@pytest.mark.skipif(bool(_namespace_unavailable()), reason=str(_namespace_unavailable()))
def test_the_cron_line_runs_as_written(tmp_path: pathlib.Path) -> None:
    """The command of deploy/cron/blocklist-sync, with cron's environment, run by the shell
    the file names, against a config made from deploy/sync.toml.example: quiet when the
    list is current (no cron mail), one line and exit 1 when the feed fails."""
    env, schedule, user, command = cron_job()
    assert (schedule, user) == ("*/5 * * * *", "blocklist")
    assert set(env) == {"SHELL", "PATH", "MAILTO"}
    feed = tmp_path / "feed.txt"
    feed.write_text(SAMPLE_FEED.read_text())
    store = tmp_path / "store"
    config = (DEPLOY / "sync.toml.example").read_text()
    config = config.replace(
        '# store = "file:///var/lib/blocklist-proxy"', f'store = "{store.as_uri()}"'
    )
    config = re.sub(r'(?m)^url = "[^"]*"', f'url = "{feed.as_uri()}"', config)
    config = re.sub(r'(?m)^format = "csv"', 'format = "text"', config)
    config = re.sub(r"(?m)^token_file = .*$", "", config)  # a file:// feed takes no token
    assert config.count(feed.as_uri()) == 1 and store.as_uri() in config
    prefix = installed(
        tmp_path,
        {
            "/usr/local/bin": {"blocklist-sync": VENV_BIN / "blocklist-sync"},
            "/etc": {"blocklist-proxy/sync.toml": config},
        },
    )
    home = tmp_path / "home"
    home.mkdir()
    cron_env = [f"{k}={v}" for k, v in env.items()] + [f"HOME={home}", f"LOGNAME={user}"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, "env", "-i", *cron_env, env["SHELL"], "-c", command],
            capture_output=True, text=True, timeout=120, cwd=home,
        )  # fmt: skip

    first = run()
    assert (first.returncode, first.stdout + first.stderr) == (0, "")
    assert Blocklist.load(store.as_uri()).match("http://blocked.example.com/page.html")
    again = run()
    assert (again.returncode, again.stdout + again.stderr) == (0, "")
    feed.write_text("<html>Service unavailable</html>\n")
    failed = run()
    assert failed.returncode == 1
    assert len((failed.stdout + failed.stderr).strip().splitlines()) == 1


# -- the compose kit without a container engine (with one: tests/test_container.py) ---------

COMPOSE = DEPLOY / "compose"


def test_the_compose_kit_wires_redis_users_and_secrets(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    """What of deploy/compose runs without a container engine: its files exist where it
    says, the ACL writer's script (paths moved into the test's directory) turns the two
    secrets into a users.acl Redis accepts, Redis started with the kit's arguments serves
    the sync and the proxy as their users with those secrets, and the proxies' healthcheck
    command passes. The image and the kit running are tests/test_container.py's."""
    kit = YAML(typ="safe").load((COMPOSE / "compose.yaml").read_text())
    services = kit["services"]
    build = kit["x-image"]["build"]
    context = (COMPOSE / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).is_file()
    for line in (COMPOSE / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (context / source).exists(), line
    assert (COMPOSE / "../redis/users.acl").resolve().is_file()

    secrets_dir, acl_dir, conf = tmp_path / "secrets", tmp_path / "acl", tmp_path / "conf"
    for directory in (secrets_dir, acl_dir, conf):
        directory.mkdir()
    for name in ("redis-sync.password", "redis-proxy.password"):
        (secrets_dir / name).write_text(secrets.token_hex(32) + "\n")  # openssl rand -hex 32
    shutil.copy(DEPLOY / "redis" / "users.acl", acl_dir / "users.acl")
    script = services["redis-acl"]["command"][2].replace("$$", "$")
    script = (
        script.replace("/run/secrets/", f"{secrets_dir}/")
        .replace("/acl/", f"{acl_dir}/")
        .replace("/conf/", f"{conf}/")
        .replace("chown redis", "chown root")  # no redis user outside the container
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (conf / "users.acl").stat().st_mode & 0o777 == 0o600

    redis_args = services["redis"]["command"][1:]
    redis_args[redis_args.index("/conf/users.acl")] = str(conf / "users.acl")
    server = redis_factory(*redis_args)
    store_of = {
        "sync": re.search(r"--store (\S+)", " ".join(services["sync"]["entrypoint"])),
        "proxy": re.search(r"--store (\S+)", " ".join(services["proxy-1"]["command"])),
    }
    urls = {
        role: found.group(1).replace("@redis:6379/", f"@127.0.0.1:{server.port}/")
        for role, found in store_of.items()
        if found is not None
    }
    assert set(urls) == {"sync", "proxy"}
    password_env = "BLOCKLIST_REDIS_PASSWORD_FILE"
    as_sync = {password_env: str(secrets_dir / "redis-sync.password")}
    assert services["sync"]["environment"][password_env] == "/run/secrets/redis-sync.password"
    sync(urls["sync"], feed_with(tmp_path), data_dir=tmp_path / "data", env=as_sync)
    proxy_env = services["proxy-1"]["environment"]
    assert proxy_env[password_env] == "/run/secrets/redis-proxy.password"
    proxy = make_proxy(urls["proxy"], env={password_env: str(secrets_dir / "redis-proxy.password")})
    with running(proxy):
        assert_splash(proxy.get("http://blocked.example.com/page.html"), page=False)
        kind, command = services["proxy-1"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL" and command.startswith("python ")
        command = command.replace("python ", f"{sys.executable} ", 1)
        check = ["sh", "-c", command.replace(":9451/", f":{proxy.status_port}/")]
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    # The same check fails against a proxy that is gone.
    assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0


# -- the transparent-mode table, in network namespaces ----------------------------------------

TRANSPARENT_NFT = DEPLOY / "transparent" / "blocklist-transparent.nft"
SERVER = "203.0.113.10"


@pytest.mark.skipif(bool(unavailable("nft")), reason=str(unavailable("nft")))
def test_the_transparent_table_sends_the_subscribers_web_traffic_through_the_proxy(
    ca: TestCA, confdir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """deploy/transparent/blocklist-transparent.nft on a gateway namespace, its defines
    edited as its header says, and the transparent proxy it names behind it: a client's
    HTTP to a server is answered by the proxy (451 for a listed page, the origin's page
    otherwise), QUIC is rejected, and the proxy port is closed to the upstream side."""
    table = TRANSPARENT_NFT.read_text()
    edited = table.replace('define LAN_IF = "eth1"', f'define LAN_IF = "{Topology.SUBSCRIBERS}"')
    assert edited != table and "define PROXY_PORT = 8080" in table
    with Lab() as lab:
        site = Site(lab, gateway_topology(lab, [SERVER]), ca, Origins(ca))
        try:
            site.serve(SERVER)
            gateway = site.topo.gateway
            gateway.nft(edited)
            proxy = Proxy(
                tmp_path / "proxy",
                store=synced_store(tmp_path),
                routes=None,
                confdir=confdir,
                ca=ca,
                mode="transparent",
                netns=gateway,
                options={"listen_host": "", "blocklist_intercept": "never"},
            )
            proxy.port = 8080
            with running(proxy):
                origin = site.http[SERVER]
                before = origin.connections
                assert_splash(site.get(SERVER, "blocked.example.com", "/page.html"), page=False)
                assert origin.connections == before  # answered by the proxy
                served = site.get(SERVER, "unlisted.example.org", "/x")
                assert served.status == 200 and served.headers["X-Origin"] == origin.name
                assert proxy.metric("blocklist_lookups_total") == 2  # both went through it
                with pytest.raises(ConnectionRefusedError):
                    site.quic_probe(SERVER)
                site.client.connect(Topology.GATEWAY4, 8080).close()  # open to subscribers
                with pytest.raises(OSError):  # dropped from upstream: no answer at all
                    site.topo.server.connect(Topology.GATEWAY_UP4, 8080, timeout=2).close()
        finally:
            site.close()
