"""The operator's guide's two-stage chapter is complete as written (issue 25, item 2): each
first run of the sync, ``resolve``, ``apply``, ``run`` and the proxy failed on Redis
authentication because no line gave the password of the Redis user ``divert.toml`` (or the
proxy's config) names. Every command of the chapter that reads the store carries
``BLOCKLIST_REDIS_PASSWORD_FILE``, and every unit the chapter installs gets its password
line uncommented by a command, which is checked here against the shipped units."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "operators-guide.md"
UNITS = ROOT / "deploy" / "systemd"
PASSWORD = "BLOCKLIST_REDIS_PASSWORD_FILE="


#: The two ISP chapters (a small ISP through Redis; two-stage diversion) and the units each
#: installs, with the password file its commented line must name.
CHAPTERS = {
    "## 2. A small ISP": {
        "blocklist-sync.service": "redis-sync.password",
        "blocklist-proxy@.service": "redis-proxy.password",
    },
    "## 4. An ISP at scale: two-stage diversion": {
        "blocklist-proxy@.service": "redis-proxy.password",
        "blocklist-divert.service": "redis-sync.password",
    },
}


def chapter(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(title)
    return text[start : text.index("\n## ", start + 1)]


def commands(text: str) -> list[str]:
    """The lines of the chapter's ``sh`` code blocks, continuation lines joined."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            inside = not inside and fence == "```sh"
            continue
        if inside:
            lines.append(line.strip())
    joined = "\n".join(lines).replace("\\\n", " ")
    return [line for line in joined.splitlines() if line]


@pytest.mark.parametrize("title", CHAPTERS)
def test_every_store_command_of_the_chapter_carries_the_redis_password(title: str) -> None:
    store_commands = [
        line
        for line in commands(chapter(title))
        if {"blocklist-sync", "blocklist-divert"} & set(line.split())
        and not line.startswith(("#", "systemctl"))
        and "keygen" not in line
    ]
    assert store_commands, title  # the sync at least
    missing = [line for line in store_commands if PASSWORD not in line]
    assert not missing, missing


@pytest.mark.parametrize("title", CHAPTERS)
def test_the_units_the_chapter_installs_get_their_password_line(
    title: str, tmp_path: pathlib.Path
) -> None:
    lines = commands(chapter(title))
    for unit, password in CHAPTERS[title].items():
        (edit,) = [line for line in lines if line.startswith("sed -i") and unit in line]
        copy = tmp_path / unit
        copy.write_text((UNITS / unit).read_text())
        script = edit.replace(f"/etc/systemd/system/{unit}", str(copy))
        subprocess.run(["sh", "-c", script], check=True, timeout=30)
        active = [
            line
            for line in copy.read_text().splitlines()
            if line.startswith(f"Environment={PASSWORD}")
        ]
        assert active == [f"Environment={PASSWORD}/etc/blocklist-proxy/{password}"], unit
