"""One copy of the hash list's index a machine: a file every proxy process maps (issue 22,
item 2). It is written once per version, mapped by every process, never trusted before its
checks hold, replaced when they fail, and a swap to a new version loses no check."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import mmap
import multiprocessing
import os
import pathlib
import random
import re
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from blocklist_addon.hashes import HashList, HashMatch, HashSnapshot
from blocklist_addon.hashes import mapped as mapped_module
from blocklist_addon.hashes.kinds import KINDS
from blocklist_addon.hashes.mapped import file_for
from blocklist_addon.hashes.records import HashRecord
from testlab.harness import Proxy, running, sync, wait_for
from testlab.images import draw, encode, reference_pdq, variants
from testlab.origins import TestCA

SIZE = 32


def snapshot_of(count: int, seed: int, *extra: tuple[str, bytes]) -> HashSnapshot:
    """``count`` random PDQ entries (ids p0, p1, ...) plus ``extra`` (id, hash) ones."""
    rng = random.Random(seed)
    records = [("l", HashRecord((("pdq", rng.randbytes(SIZE)),), f"p{i}")) for i in range(count)]
    records += [("l", HashRecord((("pdq", value),), name, "A")) for name, value in extra]
    return HashSnapshot.build(records)


def near(value: bytes, bits: int, rng: random.Random) -> bytes:
    number = int.from_bytes(value)
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return number.to_bytes(SIZE)


def same_answers(a: HashList, b: HashList, snapshot: HashSnapshot, rng: random.Random) -> None:
    hashes = snapshot.section("pdq")[0]
    for _ in range(200):
        i = rng.randrange(len(hashes) // SIZE)
        query = near(bytes(hashes[i * SIZE : (i + 1) * SIZE]), rng.randrange(40), rng)
        assert a.match_pdq([query], 100) == b.match_pdq([query], 100)


def test_written_once_then_mapped_with_the_same_answers(tmp_path: pathlib.Path) -> None:
    """The first load writes the file (0600 in a 0700 directory: it holds the hashes); the
    next maps that same file, unchanged; both answer as an index built in memory."""
    snapshot = snapshot_of(5_000, 1)
    first, note = HashList.mapped(snapshot, tmp_path / "index")
    assert note is None
    path = file_for(tmp_path / "index", snapshot.checksum)
    written = path.stat()
    assert written.st_mode & 0o777 == 0o600 and (tmp_path / "index").stat().st_mode & 0o777 == 0o700
    second, note = HashList.mapped(HashSnapshot.from_bytes(snapshot.to_bytes()), tmp_path / "index")
    assert note is None
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    in_memory = HashList(snapshot)
    rng = random.Random(2)
    same_answers(first, in_memory, snapshot, rng)
    same_answers(second, in_memory, snapshot, rng)
    assert second._snapshot.to_bytes() == snapshot.to_bytes()
    assert str(path) in pathlib.Path("/proc/self/maps").read_text()


def damage(path: pathlib.Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped byte":
        data[len(data) // 2] ^= 0x10
        path.write_bytes(data)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "readable by others":
        path.chmod(0o644)
    elif how == "symbolic link":
        target = path.with_name("elsewhere")
        path.rename(target)
        path.symlink_to(target)
    elif how == "another version":
        other = snapshot_of(100, 9)
        HashList.mapped(other, path.parent)
        file_for(path.parent, other.checksum).replace(path)
    elif how == "not a file":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize(
    "how",
    [
        "flipped byte",
        "truncated",
        "readable by others",
        "symbolic link",
        "another version",
        "not a file",
    ],
)
def test_a_file_that_fails_its_checks_is_never_used(tmp_path: pathlib.Path, how: str) -> None:
    """Damaged, cut short, open to others, a link, another version's: the load says why,
    builds a good file from the snapshot in hand, and answers right."""
    snapshot = snapshot_of(3_000, 3)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    damage(path, how)
    if how == "not a file":
        # A directory in its place cannot be removed like a file: built in memory instead.
        hashes, note = HashList.mapped(snapshot, tmp_path)
        assert note == f"cannot share the index in {tmp_path} (Is a directory); built in memory"
    else:
        hashes, note = HashList.mapped(snapshot, tmp_path)
        unusable = f"unusable index file {path}: "
        assert (
            note
            == {
                "flipped byte": unusable + "checksum mismatch: the file is damaged",
                "truncated": unusable + "section snapshot out of place",
                "readable by others": f"{path} is not this user's own private file (0600)",
                "symbolic link": f"cannot open {path}: Too many levels of symbolic links",
                "another version": unusable + "it holds another version of the list",
            }[how]
        )
        assert path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077 == 0
        _, note = HashList.mapped(snapshot, tmp_path)
        assert note is None
    same_answers(hashes, HashList(snapshot), snapshot, random.Random(4))


def test_an_unusable_directory_builds_in_memory(tmp_path: pathlib.Path) -> None:
    """Where no directory can be made (its parent is a file; read-only or full disks fail
    the same way) the index is built in the process, and the note says so."""
    (tmp_path / "file").write_text("")
    snapshot = snapshot_of(1_000, 5)
    hashes, note = HashList.mapped(snapshot, tmp_path / "file" / "index")
    directory = tmp_path / "file" / "index"
    assert note == f"cannot share the index in {directory} (Not a directory); built in memory"
    same_answers(hashes, HashList(snapshot), snapshot, random.Random(6))


def test_a_file_of_the_old_format_is_rebuilt_never_misread(tmp_path: pathlib.Path) -> None:
    """A file written by the previous layout (format 1: u32 tables, no videos) under the
    same name, intact and checksummed: refused by its version, removed and written again
    in this format, and the list answers as one built in memory."""
    snapshot = snapshot_of(3_000, 13)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    data = bytearray(path.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")
    data[-32:] = hashlib.sha256(data[:-32]).digest()
    path.write_bytes(data)
    hashes, note = HashList.mapped(snapshot, tmp_path)
    assert note == (
        f"unusable index file {path}: format version 1 with {len(mapped_module._SECTIONS)} "
        f"sections (this reads 2, {len(mapped_module._SECTIONS)})"
    )
    assert int.from_bytes(path.read_bytes()[8:12], "little") == mapped_module.FORMAT_VERSION == 2
    same_answers(hashes, HashList(snapshot), snapshot, random.Random(14))


def video_snapshot(videos: int, frames: int, seed: int) -> HashSnapshot:
    """``videos`` entries with a video of ``frames`` random frames each (ids v0, v1, ...)
    and an image entry."""
    rng = random.Random(seed)
    records = [("l", HashRecord((("pdq", rng.randbytes(SIZE)),), "image"))]
    for i in range(videos):
        video = tuple((rng.randbytes(SIZE), 100) for _ in range(frames))
        records.append(("l", HashRecord((("md5", rng.randbytes(16)),), f"v{i}", None, video)))
    return HashSnapshot.build(records)


def test_the_videos_index_is_in_the_shared_file(tmp_path: pathlib.Path) -> None:
    """The listed videos' index (their prepared frames, owners, counts and PDQ tables) is
    written into the file with the images' and mapped from it, not built in each process:
    every array the matcher reads lies in the file's map, and a listed video's frames,
    near copies of them, match its entry as an index built in memory does."""
    snapshot = video_snapshot(50, 20, 15)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    hashes, note = HashList.mapped(HashSnapshot.from_bytes(snapshot.to_bytes()), tmp_path)
    assert note is None
    videos = hashes._videos
    assert videos is not None
    arrays = videos.arrays()
    assert set(arrays) == set(mapped_module._VIDEO)
    for name, array in arrays.items():
        base = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert isinstance(base, mmap.mmap | memoryview), name
    assert len(videos) == 50 and int(videos.counts.sum()) == 1_000
    rng = random.Random(16)
    in_memory = HashList(snapshot)
    for number, frames in list(snapshot.videos())[::7]:
        query = [(near(value, rng.randrange(20), rng), quality) for value, quality in frames]
        found = hashes.match_video(query)
        nearest = min(
            (int.from_bytes(a) ^ int.from_bytes(b)).bit_count() for a, _ in query for b, _ in frames
        )
        assert found == in_memory.match_video(query)
        assert found == HashMatch("l", snapshot.entry(number)[1], "vpdq", nearest)
    assert path.stat().st_size > 50 * 20 * SIZE


def test_a_video_section_out_of_range_is_refused_though_checksummed(
    tmp_path: pathlib.Path,
) -> None:
    """The checksum is not the only check: a file whose video entries name an entry the
    snapshot lacks (checksummed again after the change) is refused, rebuilt, and the
    list answers as one built in memory."""
    snapshot = video_snapshot(5, 10, 17)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    data = bytearray(path.read_bytes())
    _, _, _, _, *fields = mapped_module._HEADER.unpack_from(data)
    offset, length = fields[2 * mapped_module._SECTIONS.index("video_entries") :][:2]
    assert length == 5 * 4
    data[offset : offset + 4] = (2**32 - 1).to_bytes(4, "little")
    data[-32:] = hashlib.sha256(data[:-32]).digest()
    path.write_bytes(data)
    hashes, note = HashList.mapped(snapshot, tmp_path)
    assert note == f"unusable index file {path}: a video's entry is out of range"
    frames = next(iter(snapshot.videos()))[1]
    assert hashes.match_video(frames) == HashList(snapshot).match_video(frames)
    assert hashes.match_video(frames) == HashMatch("l", "v0", "vpdq", 0)


def _load_in_child(directory: str, data: bytes, start: multiprocessing.synchronize.Event) -> tuple:
    start.wait(30)
    hashes, note = HashList.mapped(HashSnapshot.from_bytes(data), directory)
    path = file_for(directory, hashes.checksum)
    info = path.stat()
    probe = hashes.match_pdq([bytes(HashSnapshot.from_bytes(data).section("pdq")[0][:SIZE])], 31)
    return note, info.st_ino, info.st_mtime_ns, probe


def test_processes_loading_at_once_write_one_file(tmp_path: pathlib.Path) -> None:
    """Four processes start on the same version together: one writes the file, the others
    wait for it and map it (the same inode, written once), and all of them find a listed
    hash."""
    snapshot = snapshot_of(20_000, 7)
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(4) as pool:
        pending = [
            pool.apply_async(_load_in_child, (str(tmp_path), snapshot.to_bytes(), start))
            for _ in range(4)
        ]
        start.set()
        results = [p.get(120) for p in pending]
    first = snapshot.entry(snapshot.section("pdq")[1][0])[1]  # the lowest hash's entry
    expected = HashMatch("l", first, "pdq", 0)
    assert [(note, found) for note, _, _, found in results] == [(None, expected)] * 4
    assert len({(ino, mtime) for _, ino, mtime, _ in results}) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _pss_of(pid: int, path: pathlib.Path) -> tuple[int, int]:
    """(Rss, Pss) in kB of ``pid``'s mappings of ``path``."""
    rss = pss = 0
    current = False
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = line.endswith(str(path))
        elif current and line.startswith("Rss:"):
            rss += int(line.split()[1])
        elif current and line.startswith("Pss:"):
            pss += int(line.split()[1])
    return rss, pss


def _hold(directory: str, data: bytes, ready, done) -> None:
    snapshot = HashSnapshot.from_bytes(data)
    hashes, _ = HashList.mapped(snapshot, directory)
    hashes.match_pdq([bytes(SIZE)], 31)
    listed = bytes(snapshot.section("pdq")[0][:SIZE])
    assert (
        hashes.match_pdq([listed], 31).entry_id == snapshot.entry(snapshot.section("pdq")[1][0])[1]
    )
    ready.set()
    done.wait(60)


def test_the_index_is_one_copy_shared_by_processes(tmp_path: pathlib.Path) -> None:
    """Two processes holding the list (each has looked up a hash and matched one): each
    holds what a lookup reads of the file (the hashes and their index), not what only a
    match reads, and the kernel counts each for half of it (PSS): one copy, not two."""
    snapshot = snapshot_of(40_000, 8)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    hot_kb = (path.stat().st_size - cold_bytes(snapshot)) / 1024
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    done = manager.Event()
    children = []
    try:
        for _ in range(2):
            ready = manager.Event()
            child = context.Process(
                target=_hold, args=(str(tmp_path), snapshot.to_bytes(), ready, done)
            )
            child.start()
            assert ready.wait(60)
            children.append(child)
        figures = [_pss_of(child.pid, path) for child in children]  # type: ignore[arg-type]
    finally:
        done.set()
        for child in children:
            child.join(30)
    for rss, pss in figures:
        assert hot_kb * 0.9 <= rss <= hot_kb + SLACK_KB  # what a lookup reads, no more
        assert pss <= rss * 0.6  # ... and counted about half to each


#: Pages at the edges of what is let go (a page shared by a hash section and an entry
#: section stays), and the headers: what the map may hold beyond the hot sections.
SLACK_KB = 64


def cold_bytes(snapshot: HashSnapshot) -> int:
    """Bytes of the snapshot that only a match reads: all of it but the hashes."""
    return len(snapshot.to_bytes()) - sum(len(snapshot.section(k)[0]) for k in KINDS)


def mapping_of(array: np.ndarray) -> tuple[int, int]:
    """(Rss, Pss) in kB of this process's maps of the file that holds ``array`` (its
    mappings: the map is cut where pages are let go)."""
    address = array.ctypes.data
    vmas: list[tuple[int, int, str, dict[str, int]]] = []
    for line in pathlib.Path("/proc/self/smaps").read_text().splitlines():
        if found := re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+ *(.*)$", line):
            vmas.append((int(found[1], 16), int(found[2], 16), found[3], {}))
        elif line.split(":")[0] in ("Rss", "Pss"):
            vmas[-1][3][line.split(":")[0]] = int(line.split()[1])
    (path,) = {name for low, high, name, _ in vmas if low <= address < high}
    assert path.endswith(mapped_module.SUFFIX)
    mine = [figures for _, _, name, figures in vmas if name == path]
    return sum(f["Rss"] for f in mine), sum(f["Pss"] for f in mine)


def listed_with_entries(count: int, seed: int) -> HashSnapshot:
    """``count`` entries in two lists, each with a PDQ hash and every third with an MD5
    too, ids of varied lengths, categories on some: every section a match reads."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        hashes: tuple[tuple[str, bytes], ...] = (("pdq", rng.randbytes(SIZE)),)
        if i % 3 == 0:
            hashes = (("md5", rng.randbytes(16)), *hashes)
        category = None if i % 5 else f"c{i % 3}"
        records.append((f"list{i % 2}", HashRecord(hashes, f"id-{i}-{'x' * (i % 7)}", category)))
    return HashSnapshot.build(records)


def test_what_only_a_match_reads_stays_out_of_memory_and_a_match_finds_it(
    tmp_path: pathlib.Path,
) -> None:
    """Once loaded, this process's map of the file holds the hashes and their index and not
    the entries (numbers, ids, lists, categories: checked at load, then let go); thousands
    of lookups, a thousand of them matches, find the right list, id and category (read
    from the file, as an index built in memory finds them) without bringing them back;
    and a file pruned meanwhile still answers."""
    snapshot = listed_with_entries(60_000, 30)
    hashes, note = HashList.mapped(snapshot, tmp_path)
    assert note is None
    path = file_for(tmp_path, snapshot.checksum)
    cold = cold_bytes(snapshot)
    hot_kb = (path.stat().st_size - cold) / 1024
    assert cold > 1_000_000  # the entries are a large share of this file
    rss, _ = mapping_of(hashes._pdq._hashes)
    assert hot_kb * 0.9 <= rss <= hot_kb + SLACK_KB

    in_memory = HashList(snapshot)
    rng = random.Random(31)
    pdq, pdq_owners = snapshot.section("pdq")
    md5, md5_owners = snapshot.section("md5")
    seen = set()
    for _ in range(1_000):
        i = rng.randrange(len(pdq_owners))
        query = near(bytes(pdq[i * SIZE : (i + 1) * SIZE]), rng.randrange(12), rng)
        number = pdq_owners[i]
        queries = [query, rng.randbytes(SIZE)]
        found = hashes.match_pdq(queries, 100)
        assert found == in_memory.match_pdq(queries, 100)
        assert found is not None
        assert (found.list_name, found.entry_id) == snapshot.entry(number)
        assert found.category == snapshot.category(number)
        j = rng.randrange(len(md5_owners))
        exact = hashes.match_exact({"md5": bytes(md5[j * 16 : (j + 1) * 16])})
        assert exact is not None
        assert (exact.list_name, exact.entry_id) == snapshot.entry(md5_owners[j])
        seen |= {(found.list_name, found.category), (exact.list_name, exact.category)}
        assert hashes.match_pdq([rng.randbytes(SIZE)], 100) is None
    assert seen == {(f"list{i}", c) for i in (0, 1) for c in (None, "c0", "c1", "c2")}
    rss, _ = mapping_of(hashes._pdq._hashes)
    assert hot_kb * 0.9 <= rss <= hot_kb + SLACK_KB

    path.unlink()  # pruned: the map and the descriptor keep the file
    last = len(pdq_owners) - 1
    found = hashes.match_pdq([bytes(pdq[last * SIZE :])], 100)
    assert found is not None and found.entry_id == snapshot.entry(pdq_owners[last])[1]


def every_section_used(count: int, seed: int) -> HashSnapshot:
    """``count`` entries in three lists, with hashes of every kind, ids of varied lengths
    (some not ASCII: their offsets are bytes, not characters), four categories and none,
    and a video on every ninth: every cold section a match reads, each nonempty."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        hashes: tuple[tuple[str, bytes], ...] = (("pdq", rng.randbytes(SIZE)),)
        if i % 4 == 1:
            kind = ("md5", "sha1", "sha256")[i % 3]
            hashes = ((kind, rng.randbytes({"md5": 16, "sha1": 20, "sha256": 32}[kind])),)
        video = tuple((rng.randbytes(SIZE), 100) for _ in range(3)) if i % 9 == 4 else ()
        category = None if i % 6 == 0 else f"c{i % 4}"
        entry_id = f"id-{i}-{'é' * (i % 5)}{'x' * (i % 11)}"
        records.append((f"list{i % 3}", HashRecord(hashes, entry_id, category, video)))
    return HashSnapshot.build(records)


def test_the_mapped_file_reads_every_entry_as_the_snapshot_in_memory(
    tmp_path: pathlib.Path,
) -> None:
    """The mapped snapshot reads an entry's list, id, category and each hash's entry number
    from the file (with ``pread``, its pages let go after the load) and must read exactly
    what the same snapshot in memory reads, for every entry and every kind; matches of
    every kind (images, exact hashes, videos) through it are the in-memory list's; out of
    range is refused; and none of the reads brings the entries back into the map."""
    snapshot = every_section_used(20_000, 34)
    hashes, note = HashList.mapped(snapshot, tmp_path)
    assert note is None
    mapped = hashes._snapshot
    assert type(mapped) is not HashSnapshot  # reads through the file, not the map
    path = file_for(tmp_path, snapshot.checksum)
    hot_kb = (path.stat().st_size - cold_bytes(snapshot)) / 1024
    assert cold_bytes(snapshot) > 400_000

    assert [mapped.entry(n) for n in range(len(snapshot))] == [
        snapshot.entry(n) for n in range(len(snapshot))
    ]
    assert [mapped.category(n) for n in range(len(snapshot))] == [
        snapshot.category(n) for n in range(len(snapshot))
    ]
    assert {snapshot.category(n) for n in range(len(snapshot))} == {None, "c0", "c1", "c2", "c3"}
    assert {snapshot.entry(n)[0] for n in range(len(snapshot))} == {"list0", "list1", "list2"}
    for kind in KINDS:
        listed, owners = snapshot.section(kind)
        their_hashes, their_owners = mapped.section(kind)
        assert len(owners) > 1_000 and len(their_owners) == len(owners)
        assert bytes(their_hashes) == bytes(listed)
        assert list(their_owners) == list(owners), kind
        assert [their_owners[i] for i in (0, len(owners) // 2, -1)] == [
            owners[i] for i in (0, len(owners) // 2, len(owners) - 1)
        ]
    for number in (len(snapshot), -1, -len(snapshot) - 1):
        with pytest.raises(IndexError):
            mapped.entry(number)
        with pytest.raises(IndexError):
            mapped.category(number)
    with pytest.raises(IndexError):
        snapshot.entry(len(snapshot))

    in_memory = HashList(snapshot)
    rng = random.Random(35)
    for kind in KINDS:
        listed, owners = snapshot.section(kind)
        size = len(listed) // len(owners)
        for i in rng.sample(range(len(owners)), 200):
            value = bytes(listed[i * size : (i + 1) * size])
            if kind == "pdq":
                query = [near(value, rng.randrange(12), rng)]
                found = hashes.match_pdq(query, 100)
                assert found == in_memory.match_pdq(query, 100)
            else:
                found = hashes.match_exact({kind: value})
                assert found == in_memory.match_exact({kind: value})
                assert found is not None and found.entry_id == snapshot.entry(owners[i])[1]
            assert found is not None and found.category == snapshot.category(owners[i])
    videos = list(snapshot.videos())
    assert len(videos) > 2_000
    for number, frames in rng.sample(videos, 100):
        found = hashes.match_video(frames)
        assert found == in_memory.match_video(frames)
        assert found is not None and (found.list_name, found.entry_id) == snapshot.entry(number)
        assert found.category == snapshot.category(number)
    rss, _ = mapping_of(hashes._pdq._hashes)
    assert hot_kb * 0.9 <= rss <= hot_kb + SLACK_KB


def open_files(directory: pathlib.Path) -> list[str]:
    """What this process holds open in ``directory`` (its descriptors' targets)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [t for t in targets if t.startswith(str(directory))]


def test_a_list_let_go_closes_its_file(tmp_path: pathlib.Path) -> None:
    """A mapped list keeps its file open for what its matches read; once no list holds it,
    the file is closed (a proxy that swaps versions for weeks leaks no descriptor)."""
    for version in range(4):
        snapshot = snapshot_of(500, 40 + version)
        hashes, _ = HashList.mapped(snapshot, tmp_path)
        path = str(file_for(tmp_path, snapshot.checksum))
        assert set(open_files(tmp_path)) == {path}  # one, or two where mmap dups it (3.12)
        assert hashes.match_pdq([bytes(snapshot.section("pdq")[0][:SIZE])], 100) is not None
        del hashes
        gc.collect()
        assert open_files(tmp_path) == []


def _section_in_file(path: pathlib.Path, snapshot: HashSnapshot, section: str) -> tuple[int, int]:
    """Where the snapshot's ``section`` lies in the index file (start, end)."""
    _, _, _, _, *fields = mapped_module._HEADER.unpack_from(path.read_bytes())
    at = fields[0]  # the snapshot's offset
    start, end = snapshot._span(section)  # its bounds in the snapshot's bytes
    return at + start, at + end


@pytest.mark.parametrize(
    ("section", "how"),
    [
        ("pdq entries", "flipped"),
        ("id offsets", "flipped"),
        ("id blob", "flipped"),
        ("categories", "flipped"),
        ("pdq entries", "out of range, checksummed again"),
    ],
)
def test_a_damaged_entry_section_is_still_refused_at_load(
    tmp_path: pathlib.Path, section: str, how: str
) -> None:
    """The sections let go after the load are checked at the load all the same: a byte
    changed in one fails the file's checksum, and an entry number out of range fails the
    snapshot's checks though the file is checksummed again; the file is rebuilt and the
    list answers right."""
    snapshot = listed_with_entries(3_000, 32)
    HashList.mapped(snapshot, tmp_path)
    path = file_for(tmp_path, snapshot.checksum)
    start, end = _section_in_file(path, snapshot, section)
    data = bytearray(path.read_bytes())
    if how == "flipped":
        data[(start + end) // 2] ^= 0x01
        reason = "checksum mismatch: the file is damaged"
    else:
        data[end - 4 : end] = (2**32 - 1).to_bytes(4, "little")
        data[-32:] = hashlib.sha256(data[:-32]).digest()
        reason = "malformed hash snapshot: pdq entry out of range"
    path.write_bytes(data)
    hashes, note = HashList.mapped(snapshot, tmp_path)
    assert note == f"unusable index file {path}: {reason}"
    pdq, owners = snapshot.section("pdq")
    found = hashes.match_pdq([bytes(pdq[-SIZE:])], 100)
    assert found is not None and found.entry_id == snapshot.entry(owners[len(owners) - 1])[1]
    same_answers(hashes, HashList(snapshot), snapshot, random.Random(33))


def test_a_swap_under_lookups_loses_no_check(tmp_path: pathlib.Path) -> None:
    """Threads look up a listed hash (and a near copy of it) without pause while versions
    are swapped in and their old files pruned from under them: every lookup finds it, none
    raises."""
    rng = random.Random(10)
    listed = rng.randbytes(SIZE)
    query = near(listed, 12, rng)
    versions = [snapshot_of(4_000, 20 + v, ("kept", listed)) for v in range(8)]
    current = [HashList.mapped(versions[0], tmp_path)[0]]
    stop = threading.Event()
    outcomes: list[object] = []

    def look() -> None:
        while not stop.is_set():
            try:
                match = current[0].match_pdq([query], 100)  # one read of the list in force
                outcomes.append(None if match is None else (match.entry_id, match.category))
            except Exception as exc:  # a failure must show, not kill the thread silently
                outcomes.append(exc)

    threads = [threading.Thread(target=look) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for snapshot in versions[1:] * 3:
            current[0] = HashList.mapped(snapshot, tmp_path)[0]
            before = len(outcomes)
            wait_for(lambda before=before: len(outcomes) > before + 20, 30, "lookups")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert len(outcomes) > 400
    assert set(outcomes) == {("kept", "A")}
    # Old versions were pruned while mapped: the directory keeps the newest few.
    assert len(list(tmp_path.glob("*.pdqx"))) <= 1 + mapped_module.KEEP


# -- through the proxy -------------------------------------------------------------------------

LISTED = draw(71)
OTHER = draw(72)


@pytest.fixture
def two_proxies(
    tmp_path: pathlib.Path, confdir: pathlib.Path, ca: TestCA
) -> Iterator[tuple[list[Proxy], str, pathlib.Path, int]]:
    """Two proxy processes of one machine (one data directory) in reverse mode in front of
    one upload site, on the store's hash list."""
    from aiohttp import web

    from testlab.origins import Origins

    async def upload(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"stored": True})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", upload)
    feed = tmp_path / "hashes.jsonl"
    feed.write_text(f'{{"id": "v1", "pdq": "{reference_pdq(LISTED)}"}}\n')
    store = (tmp_path / "store").as_uri()
    sync(store, feed, name="hotline", data_dir=tmp_path / "sync", fmt="hashes-jsonl")
    origins = Origins(ca)
    try:
        origin = origins.start("uploads", app=app)
        target = f"127.0.0.1:{origin.port}"
        proxies = [
            Proxy(
                tmp_path / f"proxy{i}",
                store=store,
                routes={target: origin.port},
                confdir=confdir,
                ca=ca,
                mode=f"reverse:http://{target}",
                options={"blocklist_lastgood": str(tmp_path / "machine" / "lastgood.bin")},
            )
            for i in range(2)
        ]
        with running(proxies[0]), running(proxies[1]):
            yield proxies, store, tmp_path, origin.port
    finally:
        origins.close()


def upload(proxy: Proxy, body: bytes) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.request(
            "POST", "/media", body=body, headers={"Host": "uploads.example.net",
                                                  "Content-Type": "image/jpeg"}
        )  # fmt: skip
        return conn.getresponse().status
    finally:
        conn.close()


def test_proxies_share_one_index_file_and_swap_versions_without_a_miss(two_proxies) -> None:
    """Two proxies of one machine map the same index file; uploads of a listed picture go
    on through both while a new version (which also lists another picture) is synced and
    swapped in: every one is refused, and afterwards both map the new file."""
    proxies, store, directory, _ = two_proxies
    index_dir = directory / "machine" / "hashindex"
    first = list(index_dir.glob("*.pdqx"))
    assert len(first) == 1
    for proxy in proxies:
        assert str(first[0]) in pathlib.Path(f"/proc/{proxy.process.pid}/maps").read_text()

    listed = variants(LISTED)["jpeg-q40"]
    statuses: list[int] = []
    stop = threading.Event()

    def keep_uploading() -> None:
        while not stop.is_set():
            for proxy in proxies:
                statuses.append(upload(proxy, listed))

    thread = threading.Thread(target=keep_uploading)
    thread.start()
    try:
        wait_for(lambda: len(statuses) >= 4, 60, "uploads before the swap")
        feed = directory / "hashes.jsonl"
        feed.write_text(
            f'{{"id": "v1", "pdq": "{reference_pdq(LISTED)}"}}\n'
            f'{{"id": "v2", "pdq": "{reference_pdq(OTHER)}"}}\n'
        )
        sync(store, feed, name="hotline", data_dir=directory / "sync", fmt="hashes-jsonl")
        for proxy in proxies:
            wait_for(
                lambda proxy=proxy: proxy.health()[1]["hashes"]["entries"] == 2,  # type: ignore[index]
                60,
                "the new version",
            )
        count = len(statuses)
        wait_for(lambda: len(statuses) >= count + 4, 60, "uploads after the swap")
    finally:
        stop.set()
        thread.join(60)
    assert statuses and set(statuses) == {451}
    assert {upload(proxy, encode(OTHER, quality=70)) for proxy in proxies} == {451}
    (second,) = set(index_dir.glob("*.pdqx")) - set(first)
    for proxy in proxies:
        assert str(second) in pathlib.Path(f"/proc/{proxy.process.pid}/maps").read_text()
    assert all(p.stat().st_mode & 0o077 == 0 for p in index_dir.iterdir() if p.is_file())
    assert os.stat(index_dir).st_mode & 0o077 == 0
