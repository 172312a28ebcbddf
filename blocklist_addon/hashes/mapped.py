"""The hash list as one file that every proxy process on a machine maps: one copy a machine.

A platform runs a proxy process per core; each building its own PDQ index of a
10,000,000-hash list would hold its own gigabyte. Instead the first process to load a
version writes the snapshot and its index to one file named by the snapshot's checksum
(built in a temporary file and renamed into place, under a lock per version: a second
process that arrives meanwhile waits, then maps what the first wrote); every process maps
that file read-only and shared, so the kernel holds one copy in its page cache for all of
them. A new version is a new file: a process swaps to it by mapping it, and one still
answering from the old file keeps its map until it lets go, even once the file is pruned.

Nothing in the file is trusted before it is checked: it must be a regular file of this
user's, readable by no one else (it holds the listed hashes, as the store's files and the
last-known-good copy do, 0600 in a 0700 directory); its header must name the expected
snapshot and a layout that fits the file; its SHA-256 must hold over everything before it;
and the snapshot and index are then read as from any other source (structure, ranges). A
file that fails is removed and built again from the snapshot in hand; when the directory
cannot be used at all (read-only, full), the caller builds the index in memory instead.

Layout (integers little-endian; every section starts on a 64-byte boundary but the
snapshot, which is placed so that its PDQ hashes do: the index reads them in pairs of 64
bytes)::

    header      MAGIC, format version u32, sections u32, the snapshot's SHA-256 (32 bytes),
                then each section's offset and length (u64, u64)
    snapshot    the hash snapshot, byte for byte as the store holds it
    pdq index   params, meta, blob, hot, hot hashes (``pdqindex``: the compact tables)
    videos      settings, hashes, owners, counts, entries, then their own PDQ index's five
                sections (``vpdq.VideoIndex``; all empty when the list has no video)
    checksum    SHA-256 of everything before it

Format 2 (the compact tables and the videos) replaced format 1 (12 tables of u32
positions, no videos): a format 1 file is refused by its version, removed and built again.

What stays in each process's memory is what a lookup reads: the hashes and the index
tables (at 10,000,000 PDQ hashes 63.9 bytes a hash). The rest of the snapshot (each hash's
entry number, the entries' ids and their offsets, list numbers, categories, the videos'
frames as listed: 16 bytes a hash with 8-digit ids) is needed only when a hash matches. The
checks read the whole file through the map (every byte is checksummed, every section's
structure checked, the cold ones included), and then those pages are let go from the map
(``madvise(MADV_DONTNEED)``: the map is file-backed and read-only, so nothing is lost; the
page cache keeps them while memory allows). A match reads its entry with ``pread`` from the
file the map was made from (the descriptor is kept open, so a pruned file still answers),
never through the map: a page touched there comes back with the pages around it (its
whole 2 MiB folio on ext4 under Linux 6.18: 10 reads a MiB apart mapped 10 MiB, measured;
the kernel's 64 KiB of fault-around elsewhere) and they stay, so every match would add to
every process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import pathlib
import re
import secrets
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from blocklist_addon.hashes.pdqindex import PdqIndex
from blocklist_addon.hashes.snapshot import HashSnapshot, SnapshotError
from blocklist_addon.hashes.vpdq import INDEX_ARRAYS, VideoIndex, snapshot_arrays

__all__ = ["MAGIC", "MappedError", "file_for", "load", "open_mapped", "write"]

MAGIC = b"\x89BLHIDX\n"
FORMAT_VERSION = 2
SUFFIX = ".pdqx"
_VIDEO = ("settings", "hashes", "owners", "counts", "entries")
_VIDEO += tuple(f"index_{n}" for n in INDEX_ARRAYS)
_SECTIONS = ("snapshot", *(f"pdq_{n}" for n in INDEX_ARRAYS), *(f"video_{n}" for n in _VIDEO))
#: Each array section's type (the snapshot's is bytes).
_TYPES = {"params": "<u4", "meta": "<u8", "blob": "u1", "hot": "<u4", "hot_hashes": "u1",
          "settings": "<u4", "hashes": "u1", "owners": "<u4", "counts": "<u4",
          "entries": "<u4"}  # fmt: skip
_HEADER = struct.Struct("<8sII32s" + "QQ" * len(_SECTIONS))
_ALIGN = 64
_CHECKSUM = 32
_NAME = re.compile(r"[0-9a-f]{64}" + re.escape(SUFFIX))
#: Files kept in the directory besides the one just mapped (the previous versions, which
#: other processes may still be loading).
KEEP = 2
#: The map does not keep a descriptor of its own (Python 3.13): the snapshot's is enough.
_UNTRACKED = {"trackfd": False} if sys.version_info >= (3, 13) else {}
#: A temporary file older than this is a killed builder's leftover.
STALE_TMP = 3600.0


class MappedError(Exception):
    """The file exists but must not be used; says why in one line."""


class _File:
    """The index file's descriptor, kept open for what is read only on a match (closed
    with the last reference: the snapshot that reads through it)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:  # the file was checked whole: it cannot shrink but by hand
            raise OSError(f"the index file is cut short at {offset + len(data)}")
        return data

    def __del__(self, close=os.close) -> None:  # os.close even at interpreter exit
        with contextlib.suppress(OSError):
            close(self.fd)


class _Column:
    """A section of u32s in the file (each hash's entry number), read with ``pread`` an
    item at a time; indexed, measured and iterated as the map's memoryview."""

    __slots__ = ("_count", "_read", "_start")
    _ITEM = np.dtype("<u4")

    def __init__(self, read: Callable[[int, int], bytes], start: int, end: int) -> None:
        self._read, self._start = read, start
        self._count = (end - start) // self._ITEM.itemsize

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> int:
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("index out of range")
        at = self._start + i * self._ITEM.itemsize
        return int.from_bytes(self._read(at, at + self._ITEM.itemsize), "little")

    def __iter__(self) -> Iterator[int]:
        step = 1 << 16
        size = self._ITEM.itemsize
        for first in range(0, self._count, step):
            last = min(first + step, self._count)
            block = self._read(self._start + first * size, self._start + last * size)
            yield from np.frombuffer(block, dtype=self._ITEM).tolist()


class _MappedSnapshot(HashSnapshot):
    """A snapshot in the shared file: its hashes are read in the map, what only a match
    needs (entry numbers, ids, list numbers, categories) with ``pread`` from the file, so
    that none of it is resident in a process once the load let its pages go. Where each
    lies is the snapshot's own business: this only says how its bytes are read."""

    __slots__ = ("_at", "_file")
    _at: int  # where the snapshot starts in the file
    _file: _File

    def _read(self, start: int, end: int) -> bytes:
        return self._file.read(self._at + start, end - start)

    def _column(self, section: str) -> _Column:  # type: ignore[override]
        return _Column(self._read, *self._span(section))

    def cold(self) -> list[tuple[int, int]]:
        """The (start, end) ranges of the file that only a match reads: the snapshot but
        its hashes (which every lookup reads)."""
        return [(self._at + start, self._at + end) for start, end in self.cold_ranges()]


def file_for(directory: os.PathLike[str] | str, checksum: str) -> pathlib.Path:
    """Where the index of the snapshot with ``checksum`` lives in ``directory``."""
    if not re.fullmatch(r"[0-9a-f]{64}", checksum):
        raise ValueError("a snapshot checksum is 64 hex digits")
    return pathlib.Path(directory) / f"{checksum}{SUFFIX}"


def write(
    path: os.PathLike[str] | str,
    snapshot: HashSnapshot,
    index: PdqIndex,
    videos: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``snapshot``, its PDQ ``index`` and its ``videos``' index arrays to ``path``
    atomically (a temporary file beside it, 0600, renamed). Not fsynced: a file a crash
    left incomplete fails its checksum when it is next opened and is built again, and a
    gigabyte's fsync costs seconds."""
    path = pathlib.Path(path)
    arrays = {f"pdq_{name}": array for name, array in index.arrays().items()}
    arrays |= {f"video_{name}": array for name, array in (videos or {}).items()}
    empty = np.zeros(0, dtype=np.uint8)
    parts = [
        memoryview(snapshot.to_bytes()).cast("B"),
        # As flat bytes: memoryview.cast refuses an empty 2-D array (a list without PDQ).
        *(
            memoryview(np.ascontiguousarray(arrays.get(name, empty)).reshape(-1).view(np.uint8))
            for name in _SECTIONS[1:]
        ),
    ]
    offsets, at = [], _HEADER.size
    for number, part in enumerate(parts):
        at = -(-at // _ALIGN) * _ALIGN
        if number == 0:  # the snapshot: its PDQ hashes on a 64-byte boundary
            at += -snapshot.pdq_offset % _ALIGN
        offsets.append(at)
        at += len(part)
    fields = [x for offset, part in zip(offsets, parts, strict=True) for x in (offset, len(part))]
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, len(_SECTIONS), bytes.fromhex(snapshot.checksum), *fields
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb", closefd=False) as out:
            written = 0
            for offset, part in zip([0, *offsets], [header, *parts], strict=True):
                pad = b"\0" * (offset - written)
                for piece in (pad, part):
                    out.write(piece)
                    digest.update(piece)
                written = offset + len(part)
            out.write(digest.digest())
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


Mapped = tuple[HashSnapshot, PdqIndex, dict[str, np.ndarray] | None]


def open_mapped(path: os.PathLike[str] | str, checksum: str) -> Mapped:
    """The snapshot, its PDQ index and its video index's arrays (None: no video) in
    ``path``, mapped read-only, once every check holds; FileNotFoundError when there is no
    file, MappedError when it must not be used."""
    path = pathlib.Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise MappedError(f"cannot open {path}: {exc.strerror or exc}") from None
    file = _File(fd)  # closed with the snapshot that reads through it, or on a failure
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise MappedError(f"{path} is not a regular file")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise MappedError(f"{path} is not this user's own private file (0600)")
    if info.st_size < _HEADER.size + _CHECKSUM:
        raise MappedError(f"{path} is truncated")
    mapped = mmap.mmap(fd, info.st_size, mmap.MAP_SHARED, mmap.PROT_READ, **_UNTRACKED)
    view = memoryview(mapped)
    try:
        found = _read(view, checksum, file)
    except (MappedError, SnapshotError, ValueError) as exc:
        with contextlib.suppress(BufferError):
            view.release()
            mapped.close()
        raise MappedError(f"unusable index file {path}: {exc}") from None
    release(mapped, found[0].cold())  # type: ignore[attr-defined]
    return found


def release(mapped: mmap.mmap, ranges: Iterable[tuple[int, int]]) -> None:
    """Let go of the whole pages of ``ranges`` from ``mapped`` (read again from the file,
    through the page cache, if anything reads them there), and keep every other page of
    it mapped.

    The kernel maps a file's large folios whole where it can (2 MiB at once on ext4), and
    a 2 MiB mapping that spans a range and its neighbour can only be dropped whole: so each
    range first becomes a mapping of its own that is never mapped by 2 MiB
    (``MADV_NOHUGEPAGE``, which splits the map there and drops a 2 MiB mapping across the
    cut), then its pages are let go, and the pages around it that the cut dropped are read
    again (a byte a page: they are already in memory)."""
    page = mmap.PAGESIZE
    kept, at = [], 0
    for start, end in ranges:
        first, last = -(-start // page) * page, end // page * page
        if last > first:
            mapped.madvise(mmap.MADV_NOHUGEPAGE, first, last - first)
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)
            kept.append((at, first))
            at = last
    kept.append((at, len(mapped)))
    view = np.frombuffer(mapped, dtype=np.uint8)
    for first, last in kept:
        int(view[first:last:page].sum())  # a read of each page: mapped again if dropped
    del view


def _read(view: memoryview, checksum: str, file: _File) -> Mapped:
    magic, version, count, named, *fields = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise MappedError("not an index file (bad magic)")
    if version != FORMAT_VERSION or count != len(_SECTIONS):
        raise MappedError(
            f"format version {version} with {count} sections "
            f"(this reads {FORMAT_VERSION}, {len(_SECTIONS)})"
        )
    if named.hex() != checksum:
        raise MappedError("it holds another version of the list")
    end = len(view) - _CHECKSUM
    bounds, at = {}, _HEADER.size
    for name, offset, length in zip(_SECTIONS, fields[0::2], fields[1::2], strict=True):
        if (offset % _ALIGN and name != "snapshot") or offset < at or offset + length > end:
            raise MappedError(f"section {name} out of place")
        bounds[name] = (offset, length)
        at = offset + length
    if hashlib.sha256(view[:end]).digest() != view[end:]:
        raise MappedError("checksum mismatch: the file is damaged")
    start, length = bounds["snapshot"]
    snapshot = _MappedSnapshot.from_bytes(view[start : start + length], verified=True)
    snapshot._file, snapshot._at = file, start
    if snapshot.checksum != checksum:
        raise MappedError("its snapshot is another version of the list")

    def arrays(prefix: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        found = {}
        for name in names:
            offset, size = bounds[prefix + name]
            dtype = np.dtype(_TYPES[name.removeprefix("index_")])
            if size % dtype.itemsize:
                raise MappedError(f"section {prefix + name} is not whole")
            found[name] = np.frombuffer(view, dtype=dtype, count=size // dtype.itemsize,
                                        offset=offset)  # fmt: skip
        return found

    pdq = arrays("pdq_", INDEX_ARRAYS)
    pdq["meta"] = pdq["meta"].reshape(-1, 6) if len(pdq["meta"]) % 6 == 0 else pdq["meta"]
    hashes, _ = snapshot.section("pdq")
    index = PdqIndex.from_arrays(hashes, pdq)
    videos = arrays("video_", _VIDEO)
    if not len(videos["settings"]):
        video = snapshot.video()
        if any(len(a) for a in videos.values()) or (video is not None and len(video[2])):
            raise MappedError("the snapshot's videos are not indexed")
        return snapshot, index, None
    videos["index_meta"] = videos["index_meta"].reshape(-1, 6)
    VideoIndex.from_arrays(videos)  # checked as any other source's
    if len(videos["entries"]) and int(videos["entries"].max()) >= len(snapshot):
        raise MappedError("a video's entry is out of range")
    return snapshot, index, videos


def load(snapshot: HashSnapshot, directory: os.PathLike[str] | str) -> tuple[*Mapped, str | None]:
    """``snapshot``, its PDQ index and its video index's arrays, mapped from ``directory``
    (written there first when no usable file is), and a note when a file had to be
    replaced (why). OSError when the directory cannot be used."""
    directory = pathlib.Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = file_for(directory, snapshot.checksum)
    note = None
    try:
        return (*open_mapped(path, snapshot.checksum), None)
    except FileNotFoundError:
        pass
    except MappedError as exc:
        note = str(exc)
    with _locked(directory / f".{snapshot.checksum}.lock"):
        try:
            # Another process may have written it while this one waited for the lock.
            return (*open_mapped(path, snapshot.checksum), note)
        except FileNotFoundError:
            pass
        except MappedError as exc:
            note = str(exc)
            path.unlink(missing_ok=True)
        index = PdqIndex(snapshot.section("pdq")[0])
        write(path, snapshot, index, snapshot_arrays(snapshot.video()))
        del index
    mapped = open_mapped(path, snapshot.checksum)
    prune(directory, keep=path)
    return (*mapped, note)


def prune(directory: pathlib.Path, *, keep: pathlib.Path) -> None:
    """Remove all but ``keep`` and the KEEP newest other index files (a process that maps
    a removed one keeps its map), their lock files, and stale temporary files."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    files = sorted(
        (e for e in entries if _NAME.fullmatch(e.name) and e.name != keep.name),
        key=lambda e: e.stat(follow_symlinks=False).st_mtime,
        reverse=True,
    )
    now = time.time()
    for entry in files[KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
        with contextlib.suppress(OSError):
            os.unlink(directory / f".{entry.name.removesuffix(SUFFIX)}.lock")
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP:
                    os.unlink(entry.path)


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
