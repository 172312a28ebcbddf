"""``blocklist-divert apply`` by hand, as the operator's guide runs it (issue 25, item 3): the
real command in a network namespace this test creates, the shipped table loaded there, and
the store it must find. It once read the embedded file store when given no ``--store`` and
said "no diversion set yet" while Redis held one; now it reads the configured store (the
config at its default location, /etc/blocklist-proxy/divert.toml, put there by an overlay
in a private mount namespace, never on this machine's /etc) and every line names the store
it read, without its password."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shlex
import subprocess
from collections.abc import Callable, Iterator

import pytest

from blocklist_addon.lists.store import open_store
from divert.dataset import DiversionSet
from testlab.divert_lab import load_table, set_contents
from testlab.harness import VENV_BIN
from testlab.netns import Lab, Namespace, unavailable

pytestmark = pytest.mark.skipif(
    bool(unavailable("nft", "unshare")), reason=unavailable("nft", "unshare") or ""
)

PASSWORD = "apply-test-s3cret-0f9e"
DSET = DiversionSet.build({"h1": ["203.0.113.20", "2001:db8:2::20"]})


@pytest.fixture
def gateway() -> Iterator[Namespace]:
    with Lab() as lab:
        ns = lab.namespace("apply")
        load_table(ns, "lo")
        yield ns


def apply_command(
    ns: Namespace,
    tmp_path: pathlib.Path,
    *args: str,
    etc_config: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``blocklist-divert [args] apply`` in ``ns``; ``etc_config``: the text of
    /etc/blocklist-proxy/divert.toml as this one command sees it (an overlay over /etc in
    a private mount namespace, gone when the command ends)."""
    command = shlex.join([str(VENV_BIN / "blocklist-divert"), *args, "apply"])
    if etc_config is not None:
        upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
        (upper / "blocklist-proxy").mkdir(parents=True)
        work.mkdir()
        (upper / "blocklist-proxy" / "divert.toml").write_text(etc_config)
        overlay = f"lowerdir=/etc,upperdir={upper},workdir={work}"
        command = f"mount -t overlay overlay -o {shlex.quote(overlay)} /etc && exec {command}"
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLOCKLIST_", "XDG_"))  # only what the test gives
    }
    environment.update(
        BLOCKLIST_DATA_DIR=str(tmp_path / "data"),  # the embedded store: empty
        RUNTIME_DIRECTORY=str(tmp_path / "run"),  # apply's lock, not the machine's /run
        **(env or {}),
    )
    return subprocess.run(
        [*ns.exec_prefix(), "unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


async def publish(store: str, dset: DiversionSet) -> None:
    async with open_store(store, namespace="divert") as divert:
        await divert.publish(
            dset.to_bytes(), checksum=dset.checksum, entries=len(dset), source="test"
        )


@pytest.fixture
def redis_with_password(redis_factory: Callable[..., object]) -> str:
    """A Redis that wants a password (as the guide's ACL does), holding a diversion set."""
    server = redis_factory("--requirepass", PASSWORD)
    # Its unix socket: the command runs in a namespace of its own, whose 127.0.0.1 is not
    # the Redis server's.
    url = f"unix://{server.unix_socket}"  # type: ignore[attr-defined]
    asyncio.run(publish(f"{url}?password={PASSWORD}", DSET))
    return url


def test_apply_reads_the_config_at_its_default_location_and_names_the_store(
    gateway: Namespace, tmp_path: pathlib.Path, redis_with_password: str
) -> None:
    """The guide's setup: divert.toml in /etc/blocklist-proxy names Redis, the password in
    the file $BLOCKLIST_REDIS_PASSWORD_FILE names; ``apply`` with no option at all."""
    password_file = tmp_path / "redis.password"
    password_file.write_text(PASSWORD + "\n")
    done = apply_command(
        gateway,
        tmp_path,
        etc_config=f'store = "{redis_with_password}"\n',
        env={"BLOCKLIST_REDIS_PASSWORD_FILE": str(password_file)},
    )
    assert done.returncode == 0, done.stderr
    assert set_contents(gateway, "divert4") == ["203.0.113.20"]
    assert set_contents(gateway, "divert6") == ["2001:db8:2::20"]
    assert redis_with_password in done.stdout
    assert "/etc/blocklist-proxy/divert.toml" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr


def test_apply_with_no_set_says_which_store_it_read(
    gateway: Namespace, tmp_path: pathlib.Path
) -> None:
    """No config anywhere: the embedded store, and the line says so and how to name
    another (the operator who meant Redis sees at once that Redis was not read)."""
    done = apply_command(gateway, tmp_path)
    assert done.returncode == 1
    embedded = (tmp_path / "data" / "divert").as_uri()
    assert f"no diversion set yet in {embedded}" in done.stderr, done.stderr
    assert "embedded" in done.stderr and "--config" in done.stderr
    assert set_contents(gateway, "divert4") == []


def test_errors_name_the_store_without_its_password(
    gateway: Namespace, tmp_path: pathlib.Path, redis_with_password: str
) -> None:
    """A password in the store URL is never shown: not when the set is applied, not when
    the password is wrong."""
    right = f"{redis_with_password}?password={PASSWORD}"
    done = apply_command(gateway, tmp_path, "--store", right)
    assert done.returncode == 0, done.stderr
    assert redis_with_password in done.stdout and "--store" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    wrong = f"{redis_with_password}?password={PASSWORD}-wrong"
    failed = apply_command(gateway, tmp_path / "wrong", "--store", wrong)
    assert failed.returncode == 1
    assert redis_with_password in failed.stderr, failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr
