"""The compose kit (deploy/compose) built and run for real with podman, with no registry.

Opt-in (building takes minutes): ``make test-container`` sets BLOCKLIST_CONTAINER_TESTS=1
and installs what it needs (podman, podman-compose, mmdebstrap, runc from Debian); as root.

- The base is a minimal Debian trixie made by mmdebstrap from deb.debian.org and imported
  with ``podman import`` (``localhost/blocklist-base:trixie``, kept between runs as the
  cache); the kit's Dockerfile is built on it (``--build-arg BASE=``) with ``podman build``,
  and a Redis image is made on the same base from Debian's redis-server.
- The kit runs with ``podman-compose up`` on compose.yaml as shipped, inside a network
  namespace the test makes (``testlab/netns.py``'s ``Lab``; podman, netavark, conmon and
  aardvark-dns started by ``nsenter --net``), so the kit's bridge, netavark's nftables rules
  and the published ports (the shipped ones: nothing else listens there) all live in it and
  go with it; the kit's network takes a documentation range (198.51.100.0/24, from the
  containers.conf subnet pool). An override file adds what stands in for the registry and
  the licensee's feed: the Redis image, and a feed server (``feed.test``, the sample list
  over HTTP on the kit's network) that is also the origin an unlisted request reaches.
- The images are built in the root namespace (they need the Debian mirror and PyPI) with
  ``--network=host``: a build's RUN steps get no netavark network, so no rules either.
- Through each containerised proxy (the client's sockets made inside the namespace,
  ``Namespace.entered``): a listed sample URL answers 451, an unlisted one passes,
  /healthz is ok, and podman runs the kit's healthcheck command.
- Everything the run created is removed (containers, network, volumes, the images built
  and their cached layers, so each run builds from scratch), also when it fails, and the
  test fails if anything is left; the base image stays (BLOCKLIST_CONTAINER_KEEP=1 keeps
  all for a look, the namespace too). The root namespace's nftables ruleset, links and
  routes are the same after the run as before, or the test fails.

Two settings are this machine's, not the kit's: runc with explicit ulimits (Debian 12's crun
refuses a hybrid cgroup hierarchy, and the VM lacks CAP_SYS_RESOURCE to raise rlimits), and
the host's CA bundle mounted into the build for pip (the egress here intercepts TLS).
"""

from __future__ import annotations

import http.client
import os
import pathlib
import resource
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testlab.harness import Response, assert_splash, wait_for
from testlab.netns import Lab, Namespace, unavailable

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SAMPLES = ROOT / "samples"

BASE_IMAGE = "localhost/blocklist-base:trixie"
IMAGE = "localhost/blocklist-proxy:local"  # the name compose.yaml gives the kit's image
REDIS_IMAGE = "localhost/blocklist-redis:trixie"
MIRROR = "http://deb.debian.org/debian"
HOST_CA = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("podman", "podman-compose", "mmdebstrap", "runc", "nsenter", "nft")
#: The host ports compose.yaml publishes (on 127.0.0.1 of the test's namespace, where they
#: are free): service -> (proxy port, status port).
PUBLISHED = {"proxy-1": (8081, 19451), "proxy-2": (8082, 29451)}
#: The kit's network takes its subnet from here (documentation addresses; four /26 so that
#: two runs at once each get one).
SUBNET_POOL = "198.51.100.0/24"

REDIS_CONTAINERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
"""

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.skipif(
        os.environ.get("BLOCKLIST_CONTAINER_TESTS") != "1",
        reason="builds and runs the container kit (minutes): make test-container",
    ),
]


@dataclass
class Kit:
    """The running kit as its namespace sees it: the proxies' published ports."""

    project: str
    proxies: dict[str, tuple[int, int]]  # service -> (proxy port, status port)
    netns: Namespace  # where podman runs the kit and publishes its ports
    env: dict[str, str]  # podman's environment (engine_conf)

    @property
    def podman(self) -> list[str]:
        """podman in the kit's namespace (its containers' network is set up and torn down
        in the namespace podman runs in)."""
        return [*self.netns.nsenter_prefix(), "podman"]

    @property
    def compose(self) -> list[str]:
        """The podman-compose command line in the kit's namespace, up to the subcommand."""
        return [
            *self.netns.nsenter_prefix(),
            *("podman-compose", "-p", self.project, "-f", "compose.yaml", "-f", "test.yaml"),
        ]


def run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    """A command whose failure fails the test, with its output in the message."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return done


def timed(what: str, figures: dict[str, float], started: float) -> None:
    figures[what] = time.monotonic() - started
    print(f"\n[container] {what}: {figures[what]:.1f} s", flush=True)


def engine_conf(directory: pathlib.Path) -> dict[str, str]:
    """The environment every podman call gets: this machine's runtime settings."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf = directory / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]\n'
        '[engine]\nruntime = "runc"\n'
        f'[network]\ndefault_subnet_pools = [{{"base" = "{SUBNET_POOL}", "size" = 26}}]\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def image_exists(name: str, env: dict[str, str]) -> bool:
    return subprocess.run(["podman", "image", "exists", name], env=env).returncode == 0


def images(env: dict[str, str]) -> set[str]:
    """Every image id, build stages and cached layers included."""
    listed = run(["podman", "images", "-aq", "--no-trunc"], 60, env=env)
    return {found.removeprefix("sha256:") for found in listed.stdout.split()}


def build_base(env: dict[str, str], figures: dict[str, float]) -> None:
    """Debian trixie (Python 3.13) from the mirror, imported as a local image; kept."""
    if image_exists(BASE_IMAGE, env):
        print(f"\n[container] base: {BASE_IMAGE} cached", flush=True)
        return
    started = time.monotonic()
    strap = subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=minbase", "trixie", "-", MIRROR],
        stdout=subprocess.PIPE,
    )
    try:
        run(["podman", "import", "-", BASE_IMAGE], 900, stdin=strap.stdout, env=env)
    finally:
        assert strap.stdout is not None
        strap.stdout.close()
        assert strap.wait(timeout=900) == 0, "mmdebstrap failed"
    timed("base (mmdebstrap + podman import)", figures, started)


def build_images(work: pathlib.Path, env: dict[str, str], figures: dict[str, float]) -> None:
    """The kit's Dockerfile on the Debian base, and Redis from Debian on the same base."""
    build = ["podman", "build", "--quiet", "--network=host"]
    if HOST_CA.is_file():  # pip behind this machine's TLS-intercepting egress
        pip_conf = work / "pip.conf"
        pip_conf.write_text("[global]\ncert = /etc/blocklist-build-ca.crt\n")
        build += ["-v", f"{HOST_CA}:/etc/blocklist-build-ca.crt:ro"]
        build += ["-v", f"{pip_conf}:/etc/pip.conf:ro"]
    started = time.monotonic()
    dockerfile = str(DEPLOY / "compose" / "Dockerfile")
    run(
        [*build, "--build-arg", f"BASE={BASE_IMAGE}", "-t", IMAGE, "-f", dockerfile, str(ROOT)],
        1800,
        env=env,
    )
    timed("image (podman build of deploy/compose/Dockerfile)", figures, started)
    size = run(["podman", "image", "inspect", IMAGE, "--format", "{{.Size}}"], 60, env=env)
    print(f"[container] image size: {int(size.stdout) / 1e6:.0f} MB", flush=True)
    started = time.monotonic()
    (work / "Containerfile.redis").write_text(REDIS_CONTAINERFILE)
    run(
        [*build, "-t", REDIS_IMAGE, "-f", str(work / "Containerfile.redis"), str(work)],
        900,
        env=env,
    )
    timed("redis image (Debian's redis-server)", figures, started)


def kit_copy(work: pathlib.Path) -> pathlib.Path:
    """deploy/compose and deploy/redis copied as they are, the secrets and sync.toml
    written as the kit's header says, and the override file."""
    compose_dir = work / "deploy" / "compose"
    compose_dir.mkdir(parents=True)
    shutil.copytree(DEPLOY / "redis", work / "deploy" / "redis")
    text = (DEPLOY / "compose" / "compose.yaml").read_text()
    for service, ports in PUBLISHED.items():
        for port in ports:
            assert text.count(f"127.0.0.1:{port}:") == 1, f"{service} no longer publishes {port}"
    (compose_dir / "compose.yaml").write_text(text)

    secrets_dir = compose_dir / "secrets"
    secrets_dir.mkdir()
    for name in ("redis-sync.password", "redis-proxy.password", "feed.token"):
        (secrets_dir / name).write_text(secrets.token_hex(32) + "\n")  # openssl rand -hex 32
        (secrets_dir / name).chmod(0o644)  # as the header says: the containers' users read them
    secrets_dir.chmod(0o700)
    (compose_dir / "sync.toml").write_text(
        '[feeds.sample]\nurl = "http://feed.test:8000/sample-feed.txt"\n'
        'format = "text"\nlist = "sample"\n'
    )
    (compose_dir / "test.yaml").write_text(
        "services:\n"
        f"  redis-acl:\n    image: {REDIS_IMAGE}\n"
        f"  redis:\n    image: {REDIS_IMAGE}\n"
        "  feed.test:\n"
        f"    image: {IMAGE}\n"
        "    command: [python, -m, http.server, '8000', --directory, /feed]\n"
        f"    volumes: ['{SAMPLES}:/feed:ro']\n"
        "    stop_signal: SIGINT\n"  # Python as PID 1 ignores SIGTERM
    )
    return compose_dir


def teardown(kit: Kit, compose_dir: pathlib.Path, before: set[str]) -> list[str]:
    """Remove everything the run made, whatever happened, except the base image; return
    what is still there (nothing, or the test fails)."""
    env, label = kit.env, f"label=io.podman.compose.project={kit.project}"
    quietly = {"env": env, "capture_output": True, "text": True, "timeout": 300}
    subprocess.run([*kit.compose, "down", "-v"], cwd=compose_dir, **quietly)
    listing = {
        "container": [*kit.podman, "ps", "-aq", "-f", label],
        "pod": [*kit.podman, "pod", "ls", "-q", "-f", label],
        "network": [*kit.podman, "network", "ls", "-q", "-f", label],
        "volume": [*kit.podman, "volume", "ls", "-q", "-f", label],
    }
    for kind, command in listing.items():
        if found := subprocess.run(command, **quietly).stdout.split():
            subprocess.run([*kit.podman, kind, "rm", "-f", *found], **quietly)
    made = images(env) - before - {image_id(BASE_IMAGE, env)}
    if made:
        subprocess.run(["podman", "rmi", "-f", *made], **quietly)
    left = [
        f"{kind} {found}"
        for kind, command in listing.items()
        for found in subprocess.run(command, **quietly).stdout.split()
    ]
    return left + [f"image {found}" for found in images(env) - before - {image_id(BASE_IMAGE, env)}]


def image_id(name: str, env: dict[str, str]) -> str:
    found = subprocess.run(
        ["podman", "image", "inspect", name, "--format", "{{.Id}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return found.stdout.strip()


def root_network() -> dict[str, str]:
    """What the kit must not change in the root namespace: its nftables ruleset (without
    counters), links and routes."""
    commands = {
        "nft ruleset": ["nft", "--stateless", "list", "ruleset"],
        "links": ["ip", "-j", "link"],
        "routes": ["ip", "-j", "route"],
        "IPv6 routes": ["ip", "-j", "-6", "route"],
    }
    return {what: run(command, 60).stdout for what, command in commands.items()}


@pytest.fixture(scope="module")
def kit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    if os.geteuid() != 0:
        pytest.fail("the container kit test runs as root (rootful podman)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"not installed: {missing} (make test-container installs them)"
    assert (why := unavailable()) is None, why
    root_before = root_network()
    work = tmp_path_factory.mktemp("container")
    env = engine_conf(work)
    figures: dict[str, float] = {}
    before = images(env)
    build_base(env, figures)
    compose_dir = kit_copy(work)
    lab = Lab()
    keep = os.environ.get("BLOCKLIST_CONTAINER_KEEP") == "1"
    try:
        running = Kit(
            f"blocklist-ct-{os.getpid()}-{secrets.token_hex(3)}",
            PUBLISHED,
            lab.namespace("podman"),
            env,
        )
        try:
            build_images(work, env, figures)
            started = time.monotonic()
            run([*running.compose, "up", "-d", "--no-build"], 600, cwd=compose_dir, env=env)
            for service, (_, status_port) in running.proxies.items():
                wait_for(
                    lambda status_port=status_port: healthz(running, status_port) == 200,
                    180,
                    f"{service}'s /healthz to answer 200 (the sync published, the proxy loaded it)",
                )
            timed("kit up until both proxies enforce the synced list", figures, started)
            yield running
        finally:
            started = time.monotonic()
            if request.session.testsfailed:
                print("\n".join(logs(running)), flush=True)
            if keep:
                print(f"\n[container] kept; its namespace: {running.netns.name}", flush=True)
            else:
                left = teardown(running, compose_dir, before)
                timed("teardown", figures, started)
                assert not left, f"left behind: {left}"
    finally:
        if not keep:
            lab.close()  # kills by PID whatever still runs in the namespace, deletes it
            root_after = root_network()
            changed = [what for what in root_before if root_after[what] != root_before[what]]
            assert not changed, f"the root namespace changed: {changed}\n{root_after}"


def logs(kit: Kit) -> list[str]:
    """The last lines of every container's log, for a failure's report."""
    quietly = {"env": kit.env, "capture_output": True, "text": True, "timeout": 60}
    label = f"label=io.podman.compose.project={kit.project}"
    names = subprocess.run(
        [*kit.podman, "ps", "-a", "--format", "{{.Names}}", "-f", label], **quietly
    ).stdout.split()
    lines = []
    for name in names:
        out = subprocess.run([*kit.podman, "logs", "--tail", "20", name], **quietly)
        lines += [f"[container] {name}: {line}" for line in (out.stdout + out.stderr).splitlines()]
    return lines


def healthz(kit: Kit, status_port: int) -> int | None:
    try:
        return via_proxy(kit, status_port, "/healthz", direct=True).status
    except OSError:
        return None


def via_proxy(kit: Kit, port: int, url: str, *, direct: bool = False) -> Response:
    """A plain-HTTP request to 127.0.0.1:``port`` in the kit's namespace: through the proxy
    (absolute URL) or to its status listener."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        with kit.netns.entered():  # the socket is made here, and stays in the namespace
            conn.connect()
        conn.request("GET", url, headers={} if direct else {"Accept": "text/html"})
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("service", ["proxy-1", "proxy-2"])
def test_a_listed_sample_url_answers_451_through_the_containerised_proxy(
    kit: Kit, service: str
) -> None:
    proxy_port, _ = kit.proxies[service]
    assert_splash(via_proxy(kit, proxy_port, "http://blocked.example.com/page.html"), page=True)
    assert_splash(via_proxy(kit, proxy_port, "http://www.example.org/listed/page?id=42"), page=True)


@pytest.mark.parametrize("service", ["proxy-1", "proxy-2"])
def test_an_unlisted_url_passes_to_its_origin(kit: Kit, service: str) -> None:
    proxy_port, _ = kit.proxies[service]
    passed = via_proxy(kit, proxy_port, "http://feed.test:8000/sample-feed.txt")
    assert passed.status == 200, passed.text
    assert passed.body == (SAMPLES / "sample-feed.txt").read_bytes()


def test_healthz_is_ok_and_the_kits_healthcheck_passes(kit: Kit) -> None:
    for _, status_port in kit.proxies.values():
        answer = via_proxy(kit, status_port, "/healthz", direct=True)
        assert answer.status == 200, answer.text
    name = f"{kit.project}_proxy-1_1"
    checked = subprocess.run(
        [*kit.podman, "healthcheck", "run", name],
        env=kit.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_service_stops_on_sigterm(kit: Kit) -> None:
    """`compose stop`/`down` sends SIGTERM: each of the kit's processes exits on it (exit
    status 0) instead of being killed after the grace period (137). Runs last."""
    names = {
        service: f"{kit.project}_{service}_1" for service in ("sync", "proxy-1", "proxy-2", "redis")
    }
    for name in names.values():
        run([*kit.podman, "stop", "-t", "60", name], 120, env=kit.env)
    codes = {
        service: run(
            [*kit.podman, "inspect", name, "--format", "{{.State.ExitCode}}"], 60, env=kit.env
        ).stdout.strip()
        for service, name in names.items()
    }
    assert codes == dict.fromkeys(names, "0")
