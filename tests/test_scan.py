"""``blocklist-scan``: the real command over a directory tree the test draws, against a hash
list synced by the real ``blocklist-sync`` into a file store."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import pathlib
import random
import subprocess
import warnings
from typing import Any

import pytest

from testlab.harness import VENV_BIN, sync
from testlab.images import bomb_png, draw, encode, md5, reference_pdq, variants, zip_file

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


@pytest.fixture(autouse=True)
def data_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The scan's data directory (where it maps the list's index from, as the proxies of
    the machine do): the test's own, never the user's."""
    directory = tmp_path / "data"
    monkeypatch.setenv("BLOCKLIST_DATA_DIR", str(directory))
    return directory


def scan(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "blocklist-scan"), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_matches_anywhere_in_the_tree_are_reported(
    store: str, tmp_path: pathlib.Path, data_dir: pathlib.Path
) -> None:
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
    assert "hash list index" not in done.stderr  # mapped from the machine's file
    assert len(list((data_dir / "proxy" / "hashindex").glob("*.pdqx"))) == 1
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


def _probe(barrier: Any) -> tuple[int, str, object]:
    """In a worker: its pid, the file its list's PDQ hashes are mapped from, and its
    match of the listed picture. Waits for the other worker (so two processes answer)."""
    from blocklist_addon.hashes import scan as scan_module

    barrier.wait(60)
    hashlist = scan_module._hashlist
    address = hashlist._pdq._hashes.ctypes.data
    (source,) = {
        line.split(maxsplit=5)[5] if len(line.split()) > 5 else ""
        for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
        if int(line.split("-")[0], 16) <= address < int(line.split()[0].split("-")[1], 16)
    }
    return os.getpid(), source, hashlist.match_pdq([bytes.fromhex(reference_pdq(LISTED))], 31)


def test_workers_map_the_one_index_file_the_scan_wrote(store: str, tmp_path: pathlib.Path) -> None:
    """The scan writes the list's index file once, before its workers start; each worker
    maps that file (its PDQ hashes lie in the file's map, as a proxy's do) instead of
    building an index of its own, and none writes it again: one copy for the pool."""
    from blocklist_addon.hashes import HashMatch
    from blocklist_addon.hashes import scan as scan_module

    _, (_, data) = asyncio.run(scan_module._load(store))
    directory = tmp_path / "index"
    scan_module._open_list(data, directory, 31, None)
    (path,) = directory.glob("*.pdqx")
    written = path.stat()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with scan_module.worker_pool(2, str(directory), data, 31, None) as workers:
            answers = workers.map(_probe, [barrier, barrier], chunksize=1)
    assert len({pid for pid, _, _ in answers}) == 2
    assert [source for _, source, _ in answers] == [str(path)] * 2
    assert [found for _, _, found in answers] == [HashMatch("hotline", "scan-1", "pdq", 0)] * 2
    assert list(directory.glob("*.pdqx")) == [path]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert not list(directory.glob(".*.tmp"))


def test_the_index_file_is_where_the_proxies_keep_it_by_default(
    store: str, data_dir: pathlib.Path
) -> None:
    """The scan finds the machine's index file where a proxy without ``blocklist_lastgood``
    keeps it (``hashindex`` beside its last-known-good copy): one rule, said twice."""
    from blocklist_addon.hashes import scan as scan_module
    from blocklist_addon.lists import lastgood

    expected = lastgood.default_path(store).parent / "hashindex"
    assert scan_module.index_directory() == expected
    assert expected.is_relative_to(data_dir)


# -- hostile trees (issue 20) -------------------------------------------------------------


def raising_tiffs(count: int) -> list[bytes]:
    """Multi-page TIFFs with a few bytes flipped (seeded, so the same every run) that make
    the checker itself raise: what crashed the whole scan (29 of 1,500 did)."""
    from blocklist_addon.hashes import HashList

    hashlist = HashList.from_entries([{"id": "x", "pdq": reference_pdq(LISTED)}])
    pages = [draw(seed, (64, 48)) for seed in (1, 2, 3)]
    tiff = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    found = []
    for seed in range(1500):
        rng = random.Random(seed)
        data = bytearray(tiff)
        for _ in range(8):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hashlist.check(bytes(data))
        except Exception:
            found.append(bytes(data))
            if len(found) == count:
                return found
    raise AssertionError(
        f"only {len(found)} of 1,500 mutated TIFFs make HashList.check raise: the decoder "
        "got sturdier, find another input that makes the checker raise"
    )


@pytest.mark.parametrize("jobs", ["1", "2"])  # in this process, and in a pool of workers
def test_a_file_that_makes_the_checker_raise_is_unreadable_and_the_scan_goes_on(
    store: str, tmp_path: pathlib.Path, jobs: str
) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    for i in range(10):
        (root / f"clean-{i}.jpg").write_bytes(encode(draw(700 + i, (120, 90))))
    broken = raising_tiffs(3)
    for i, data in enumerate(broken):
        (root / f"broken-{i}.tif").write_bytes(data)

    done = scan("--store", store, "--jobs", jobs, str(root))
    assert done.returncode == 3, done.stderr  # nothing matched, but not all was read
    report = json.loads(done.stdout)
    assert report["files"] == 13 and report["matched"] == []
    assert [(pathlib.Path(u["path"]).name, u["reason"]) for u in report["unreadable"]] == [
        (f"broken-{i}.tif", "check-error") for i in range(3)
    ]
    assert "3 unreadable (3 check-error)" in done.stderr

    (root / "copy.jpg").write_bytes(variants(LISTED)["half-size"])
    done = scan("--store", store, "--jobs", jobs, str(root))
    assert done.returncode == 1, done.stderr  # a match says 1 whatever else happened
    report = json.loads(done.stdout)
    assert [pathlib.Path(m["path"]).name for m in report["matched"]] == ["copy.jpg"]
    assert len(report["unreadable"]) == 3


def test_symlinks_fifos_and_devices_are_skipped_and_reported_never_followed_or_opened(
    store: str, tmp_path: pathlib.Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "archive.jpg").write_bytes(EXACT)  # listed, but not in the tree
    root = tmp_path / "uploads"
    root.mkdir()
    (root / "clean.png").write_bytes(encode(draw(901, (120, 90)), "PNG"))
    (root / "link.jpg").symlink_to(outside / "archive.jpg")
    (root / "linked-dir").symlink_to(outside)
    os.mkfifo(root / "pipe.jpg")  # opening it for reading would wait for a writer forever
    os.mkfifo(tmp_path / "named.jpg")

    # A hang fails the test at the timeout rather than waiting forever.
    done = scan("--store", store, str(root), str(tmp_path / "named.jpg"), "/dev/null", timeout=60)
    assert done.returncode == 0, done.stderr  # the tree's one file is clean
    report = json.loads(done.stdout)
    assert report["files"] == 1 and report["matched"] == []
    assert sorted((pathlib.Path(s["path"]).name, s["reason"]) for s in report["skipped"]) == [
        ("link.jpg", "symlink"),
        ("linked-dir", "symlink"),
        ("named.jpg", "fifo"),
        ("null", "device"),
        ("pipe.jpg", "fifo"),
    ]
    assert "5 skipped" in done.stderr


def test_a_symlink_swapped_in_after_the_walk_is_not_followed(
    store: str, tmp_path: pathlib.Path
) -> None:
    """The walk saw a directory and a file; by the time a worker opens them an uploader has
    made both symbolic links to a listed file outside the tree."""
    from blocklist_addon.hashes import scan as scan_module

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "archive.jpg").write_bytes(EXACT)
    root = tmp_path / "uploads"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "archive.jpg").write_bytes(b"clean")
    (root / "top.jpg").write_bytes(b"clean")
    targets = list(scan_module.walk([str(root)], [], []))
    assert sorted(t.path for t in targets) == [str(root / "sub/archive.jpg"), str(root / "top.jpg")]

    (root / "sub" / "archive.jpg").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)
    (root / "top.jpg").unlink()
    (root / "top.jpg").symlink_to(outside / "archive.jpg")
    _, (_, data) = asyncio.run(scan_module._load(store))
    scan_module._init(str(tmp_path / "index"), [data], 31)
    results = sorted((scan_module.scan_file(t) for t in targets), key=lambda r: str(r["path"]))
    assert results == [
        {"path": str(root / "sub/archive.jpg"), "skipped": "symlink"},
        {"path": str(root / "top.jpg"), "skipped": "symlink"},
    ]


def test_file_names_cannot_forge_lines_or_drive_the_terminal(
    store: str, tmp_path: pathlib.Path
) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    forged = "copy.jpg\nMATCH innocent.jpg: list hotline, entry scan-1, pdq distance 0"
    (root / forged).write_bytes(variants(LISTED)["half-size"])
    (root / "\x1b[2J\x1b]0;owned\x07clean.jpg").write_bytes(encode(draw(902, (120, 90))))
    (root / "broken\r\nSKIPPED x.tif").write_bytes(raising_tiffs(1)[0])
    (root / "link\nUNREADABLE y.jpg").symlink_to(root / "nowhere")

    done = scan("--store", store, str(root))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert not any(c in done.stderr for c in "\x1b\x07\r")
    assert [line.split(" ", 1)[0] for line in lines if not line.startswith("blocklist-scan:")] == [
        "MATCH",
        "UNREADABLE",
        "SKIPPED",
    ], done.stderr
    assert ascii(str(root / forged)) in done.stderr
    report = json.loads(done.stdout)
    assert [m["path"] for m in report["matched"]] == [str(root / forged)]


def test_the_report_file_is_replaced_atomically_private_and_never_written_through_a_link(
    store: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "a.png").write_bytes(encode(draw(903, (120, 90)), "PNG"))
    out = tmp_path / "reports"
    out.mkdir()
    report = out / "report.json"
    report.write_text("old report\n")
    report.chmod(0o644)
    with report.open() as reader:  # a reader of the old report keeps reading all of it
        done = scan("--store", store, "--output", str(report), "--quiet", str(tmp_path / "a.png"))
        assert done.returncode == 0, done.stderr
        assert reader.read() == "old report\n"
    assert json.loads(report.read_text())["files"] == 1
    assert report.stat().st_mode & 0o777 == 0o600

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    report.unlink()
    report.symlink_to(victim)  # planted by someone who can write the reports directory
    done = scan("--store", store, "--output", str(report), "--quiet", str(tmp_path / "a.png"))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    assert not report.is_symlink() and json.loads(report.read_text())["files"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no temporary left


# -- videos (issue 22, item 3) -------------------------------------------------------------


@pytest.fixture(scope="module")
def video_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A store whose list has one video (its vPDQ as HMA's compact features) and an MD5,
    synced by the real sync; and the listed frames' hex, which no output may show."""
    from blocklist_addon.hashes.video import hash_video
    from testlab import videos

    directory = tmp_path_factory.mktemp("scan-video-store")
    frames = hash_video(videos.encode(videos.draw(1))).frames
    compact = [f"{value.hex()},{quality},{n}" for n, (value, quality) in enumerate(frames)]
    feed = directory / "hashes.jsonl"
    feed.write_text(
        json.dumps({"id": "clip-1", "category": "A", "vpdq": compact})
        + "\n"
        + json.dumps({"id": "scan-2", "md5": md5(EXACT)})
        + "\n"
    )
    url = (directory / "store").as_uri()
    sync(url, feed, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    return url, [value.hex() for value, _ in frames]


def test_a_listed_clip_reencoded_and_renamed_is_found_in_a_tree(
    video_store: tuple[str, list[str]], tmp_path: pathlib.Path
) -> None:
    """The listed clip re-encoded at CRF 40, resized and named .bin is matched by vPDQ in a
    pool of workers; other clips pass; a cut file is unchecked (truncated); and the
    --video-* limits are applied (a byte limit under the clip makes it unchecked, too-large,
    exit 3)."""
    from testlab import videos

    store, secrets = video_store
    listed = videos.draw(1)
    root = tmp_path / "uploads"
    (root / "2024").mkdir(parents=True)
    copy = videos.encode(listed, size=(240, 180), options={"crf": "40"})
    (root / "2024" / "holiday.bin").write_bytes(copy)
    for seed in range(300, 306):
        clip = videos.encode(videos.draw(seed, seconds=3, fps=5, size=(128, 96)), fps=5)
        (root / f"clip-{seed}.mp4").write_bytes(clip)
    other = videos.draw(310, seconds=3, fps=5, size=(128, 96))
    (root / "cut.webm").write_bytes(videos.encode(other, "webm", fps=5)[:-2000])
    (root / "archive.mp4").write_bytes(EXACT)  # a zip named .mp4: not a video, its MD5 listed
    (root / "notes.txt").write_text("hello\n")

    done = scan("--store", store, "--jobs", "2", str(root))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["files"] == 10
    assert report["matched"] == [
        {
            "path": str(root / "2024" / "holiday.bin"),
            "list": "hotline",
            "entry": "clip-1",
            "kind": "vpdq",
            "distance": report["matched"][0]["distance"],
        },
        {
            "path": str(root / "archive.mp4"),
            "list": "hotline",
            "entry": "scan-2",
            "kind": "md5",
            "distance": 0,
        },
    ]
    assert 0 <= report["matched"][0]["distance"] <= 31
    assert report["unchecked"] == [{"path": str(root / "cut.webm"), "unchecked": "truncated"}]
    assert "MATCH " + ascii(str(root / "2024" / "holiday.bin")) in done.stderr
    assert "1 images or videos not checkable (1 truncated)" in done.stderr
    assert not any(secret in (done.stdout + done.stderr).lower() for secret in secrets)

    limited = scan("--store", store, "--video-max-bytes", "1000", str(root / "2024"))
    assert limited.returncode == 3, limited.stderr
    unchecked = json.loads(limited.stdout)["unchecked"]
    assert unchecked == [{"path": str(root / "2024" / "holiday.bin"), "unchecked": "too-large"}]
    assert scan("--store", store, "--video-max-ms", "0", str(root)).returncode == 2
