"""``blocklist-scan``: the real command over a directory tree the test draws, against a hash
list synced by the real ``blocklist-sync`` into a file store."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
from harness import VENV_BIN, sync
from images import bomb_png, draw, encode, md5, reference_pdq, variants, zip_file

LISTED = draw(11)
EXACT = zip_file()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("scan-store")
    feed = directory / "hashes.csv"
    feed.write_text(f"id,md5,pdq\nscan-1,,{reference_pdq(LISTED)}\nscan-2,{md5(EXACT)},\n")
    url = (directory / "store").as_uri()
    sync(url, feed, name="hotline", data_dir=directory / "data", fmt="hashes-csv")
    return url


def scan(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "blocklist-scan"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_matches_anywhere_in_the_tree_are_reported(store: str, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "uploads"
    (root / "2024" / "05").mkdir(parents=True)
    for i in range(12):
        (root / "2024" / f"clean-{i}.jpg").write_bytes(encode(draw(700 + i, (200, 150))))
    (root / "2024" / "05" / "copy.jpg").write_bytes(variants(LISTED)["half-size"])
    (root / "2024" / "05" / "rotated.png").write_bytes(variants(LISTED)["rotated-90"])
    (root / "archive.jpg").write_bytes(EXACT)  # a zip named .jpg: its exact hash is listed
    (root / "notes.txt").write_text("hello\n")
    (root / "bomb.png").write_bytes(bomb_png())
    locked = root / "locked.jpg"
    locked.write_bytes(b"x")
    locked.chmod(0)
    (root / "link.jpg").symlink_to(root / "archive.jpg")  # not followed: counted once

    done = scan("--store", store, "--jobs", "2", str(root))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    found = {pathlib.Path(m["path"]).name: m for m in report["matched"]}
    assert set(found) == {"copy.jpg", "rotated.png", "archive.jpg"}
    assert found["copy.jpg"]["entry"] == "scan-1" and found["copy.jpg"]["kind"] == "pdq"
    assert found["archive.jpg"] == {
        "path": str(root / "archive.jpg"),
        "list": "hotline",
        "entry": "scan-2",
        "kind": "md5",
        "distance": 0,
    }
    assert report["files"] == 18
    assert [pathlib.Path(u["path"]).name for u in report["unchecked"]] == ["bomb.png"]
    if os.geteuid() != 0:  # root reads a 0000 file anyway
        assert [pathlib.Path(u["path"]).name for u in report["unreadable"]] == ["locked.jpg"]
    assert reference_pdq(LISTED) not in done.stdout + done.stderr


def test_a_clean_tree_exits_0_and_the_report_can_go_to_a_private_file(
    store: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "a.png").write_bytes(encode(draw(900), "PNG"))
    report = tmp_path / "report.json"
    done = scan("--store", store, "--output", str(report), "--quiet", str(tmp_path / "a.png"))
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["matched"] == []
    assert report.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "argv",
    [[], ["/nonexistent/path"], ["--jobs", "0", "."], ["--threshold", "300", "."]],
)
def test_usage_errors_exit_2(store: str, argv: list[str]) -> None:
    assert scan("--store", store, *argv).returncode == 2


def test_no_hash_list_is_a_configuration_error(tmp_path: pathlib.Path) -> None:
    done = scan("--store", (tmp_path / "empty").as_uri(), str(tmp_path))
    assert done.returncode == 2 and "no image hash list is active" in done.stderr
