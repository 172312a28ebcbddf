"""``blocklist-scan PATH...``: check files already stored (a platform's upload directory)
against the active image hash list.

Every regular file under each PATH (recursively) is checked in a pool of one process per
core: exact hashes of its bytes and, for an image, PDQ of its first frames, exactly as the
proxy checks an upload; a file whose bytes name a video (MP4/MOV, Matroska/WebM, AVI,
whatever its name), when the list has videos, is decoded within the --video-* limits and
matched by vPDQ (``HashList.check_video``), or reported unchecked with its reason
(too-large, truncated, undecodable, frames-skipped). The workers map the list's index from
the file the proxy processes of the machine share (``hashes.mapped``, in the data
directory; the scan writes it first when there is none), so the pool holds one copy of the
index and no worker builds one. The tree is an uploader's (``tree``): symbolic
links, FIFOs, sockets and devices under a PATH are skipped and reported, never followed or
opened (a file is opened beneath its tree with O_NOFOLLOW at every step and fstat'ed, so a
link swapped in after the walk is refused too; a FIFO cannot hang the scan). A file the
checker fails on (a hostile multi-page TIFF made Pillow raise) is reported unreadable and
the scan goes on. Paths are printed with ``ascii()``: a name holding a newline or a
terminal escape cannot forge a line.
A progress bar goes to stderr when it is a terminal; the JSON report goes to stdout or to
--output (replaced atomically, mode 0600). The report never holds a hash.

Exit status: 1 something matched (whatever else happened); 0 nothing matched and every
file was read and checked; 3 nothing matched but some file was unreadable or an image or
a video could not be checked (the scan is incomplete: see the report); 2 usage or
configuration error (a PATH that does not exist, no active hash list). Skipped files do
not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import json
import multiprocessing
import multiprocessing.pool
import os
import pathlib
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from blocklist_addon.hashes.tree import (
    OS_REASONS,
    Skipped,
    Target,
    kind_of,
    open_target,
    walk,
)
from blocklist_addon.lists.store import (
    URL_FORMS,
    StoreError,
    default_data_dir,
    open_store,
    write_atomic,
)

__all__ = ["main", "scan_file"]

EXIT_CLEAN, EXIT_MATCHED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
#: Files up to this size are read whole (and decoded when images); larger ones are only
#: hashed exactly, in chunks (a hash list's MD5 may name a video).
READ_WHOLE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
#: Up to this many files are checked without starting worker processes.
IN_PROCESS = 8

EPILOG = """\
examples:
  blocklist-scan /srv/uploads
  blocklist-scan --store redis://127.0.0.1:6379/0 --output report.json /srv/a /srv/b

The report (JSON): {"hash_list": {"version", "entries"}, "files": N, "matched": [{"path",
"list", "entry", "kind", "distance"}], "unreadable": [{"path", "reason", "error"}],
"unchecked": [{"path", "unchecked"}], "skipped": [{"path", "reason"}]}.
Unreadable reasons: denied, gone, io-error, check-error (the checker, usually an image
decoder, failed on the file). A match's kind is md5, sha1, sha256, pdq or vpdq (a video:
distance is its closest frames'). Unchecked (an image or a video whose frames could not
all be checked): too-large, truncated, undecodable, frames-skipped, and the image reasons.
Skipped (never followed or opened): symlink, fifo, device, socket, not-a-file. A PATH
named here is followed if it is a symbolic link.
--output is replaced atomically (a temporary file beside it, then a rename), mode 0600.
The list's index is mapped from the data directory's proxy/hashindex, the file the proxies
of this machine share (written there first when none is, as a proxy would, 0600).
On stderr: a MATCH line per match as found, then UNREADABLE and SKIPPED lines, then a
summary; paths in them are printed with Python's ascii() (escapes, never control bytes).

exit status: 0 clean (every file read and checked), 1 something matched, 2 usage or
configuration error, 3 nothing matched but the scan is incomplete (unreadable files, or
images or videos that could not be checked).

What to do on a match (preserve, report to the hotline or the police as the law requires)
is the platform's duty; this tool never copies the file.
"""

_hashlist: Any = None  # the worker process's HashList


class _VideoDefaults:
    """``video.VideoLimits``' defaults, without importing it (and numpy) for --help."""

    max_bytes = 256 * 1024 * 1024
    max_frames = 100_000
    max_seconds = 3600.0
    max_ms = 60_000


_VIDEO = _VideoDefaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocklist-scan",
        description="Check stored files against the active image hash list.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"{URL_FORMS} URL (default: the embedded store in the "
        "data directory: $BLOCKLIST_DATA_DIR, else /var/lib/blocklist-proxy when it exists, "
        "else ~/.local/share/blocklist-proxy)",
    )
    parser.add_argument(
        "--threshold", type=int, default=31, help="PDQ distance that matches (default 31)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one a core)"
    )
    parser.add_argument(
        "--output", metavar="FILE", help="write the JSON report here (atomically, mode 0600)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    video = parser.add_argument_group("videos (when the hash list has vpdq entries)")
    video.add_argument(
        "--video-max-bytes",
        type=int,
        default=_VIDEO.max_bytes,
        metavar="N",
        help=f"larger videos are only hashed exactly (default {_VIDEO.max_bytes:,})",
    )
    video.add_argument(
        "--video-max-frames",
        type=int,
        default=_VIDEO.max_frames,
        metavar="N",
        help=f"frames decoded a video (default {_VIDEO.max_frames:,})",
    )
    video.add_argument(
        "--video-max-seconds",
        type=float,
        default=_VIDEO.max_seconds,
        metavar="S",
        help=f"seconds of video checked (default {_VIDEO.max_seconds:g})",
    )
    video.add_argument(
        "--video-max-ms",
        type=int,
        default=_VIDEO.max_ms,
        metavar="MS",
        help=f"wall time to decode and hash a video (default {_VIDEO.max_ms:,})",
    )
    return parser


def video_limits(args: argparse.Namespace) -> Any:
    """The decode limits the --video-* flags give (``video.VideoLimits``)."""
    from blocklist_addon.hashes.video import VideoLimits

    return VideoLimits(
        max_bytes=args.video_max_bytes,
        max_frames=args.video_max_frames,
        max_seconds=args.video_max_seconds,
        max_ms=args.video_max_ms,
    )


def index_directory() -> pathlib.Path:
    """Where the list's index file is mapped from: the directory the proxy processes of this
    machine use by default (``hashindex`` beside their last-known-good copy, which
    ``lists.lastgood.default_path`` puts in the data directory's ``proxy``: a layer above
    this one), so a scan maps the file they already share, or writes the one they will map."""
    return default_data_dir() / "proxy" / "hashindex"


def _open_list(data: bytes, directory: pathlib.Path, threshold: int, limits: Any) -> Any:
    """The active list with its index mapped from the shared file in ``directory`` (written
    first when there is none: once, here, before any worker starts), or built in memory
    when the directory cannot be used (said on stderr). SnapshotError: the list is corrupt."""
    from blocklist_addon.hashes import HashList, HashSnapshot

    snapshot = HashSnapshot.from_bytes(data)
    hashlist, note = HashList.mapped(snapshot, directory, threshold=threshold, video_limits=limits)
    if note:
        print(f"blocklist-scan: hash list index: {note}", file=sys.stderr)
    return hashlist


def _init(directory: str, box: list[bytes], threshold: int, limits: Any = None) -> None:
    """A worker's list: the index file the scan wrote or found, mapped as every proxy
    process maps it, so the workers of a machine hold one copy and none builds its own.
    ``box`` holds the snapshot's bytes (checked by the scan), taken out so that the worker
    keeps no copy (a pool keeps its initializer's arguments for the worker's life); they
    serve only should the file be gone meanwhile (pruned) or unusable: it is written
    again, or the index built in memory, as a proxy would."""
    global _hashlist
    from blocklist_addon.hashes import HashList, HashSnapshot

    snapshot = HashSnapshot.from_bytes(box.pop(), verified=True)  # checked by the scan
    _hashlist, _ = HashList.mapped(snapshot, directory, threshold=threshold, video_limits=limits)


def scan_file(target: Target) -> dict[str, object]:
    """One file's result (in a worker process): a match, an error, a skip, or nothing.

    Never raises: whatever one hostile file does to the decoders (a mutated multi-page TIFF
    made Pillow raise TypeError, KeyError, SyntaxError) is that file's result, not the end
    of the scan."""
    path = target.path
    try:
        fd = open_target(target)
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno())
            if not stat.S_ISREG(mode.st_mode):
                raise Skipped(kind_of(mode.st_mode))
            whole = mode.st_size <= READ_WHOLE
            video = None
            if not whole and "vpdq" in _hashlist.kinds:
                video = _sniff_video(file.read(16))
                file.seek(0)
                whole = video is not None and mode.st_size <= _hashlist.video_limits.max_bytes
            if whole:
                check = _hashlist.check(file.read(max(READ_WHOLE, mode.st_size) + 1))
                match, unchecked = check.match, check.unchecked
            else:
                digests = _exact_by_chunks(file, _hashlist.kinds)
                match = _hashlist.match_exact(digests)
                unchecked = "too-large" if video is not None and match is None else None
    except Skipped as skip:
        return {"path": path, "skipped": skip.reason}
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link swapped in
            return {"path": path, "skipped": "symlink"}
        reason = OS_REASONS.get(exc.errno or 0, "io-error")
        return {"path": path, "reason": reason, "error": exc.strerror or type(exc).__name__}
    except Exception as exc:  # the checker failed on this file: say so, go on
        return {"path": path, "reason": "check-error", "error": type(exc).__name__}
    if match is not None:
        return {
            "path": path,
            "list": match.list_name,
            "entry": match.entry_id,
            "kind": match.kind,
            "distance": match.distance,
        }
    return {"path": path, "unchecked": unchecked} if unchecked else {"path": path}


def _sniff_video(head: bytes) -> str | None:
    from blocklist_addon.hashes.video import sniff_video

    return sniff_video(head)


def _exact_by_chunks(file: BinaryIO, kinds: frozenset[str]) -> dict[str, bytes]:
    hashers = {kind: hashlib.new(kind) for kind in kinds if kind not in ("pdq", "vpdq")}
    while chunk := file.read(_CHUNK):
        for hasher in hashers.values():
            hasher.update(chunk)
    return {kind: hasher.digest() for kind, hasher in hashers.items()}


async def _load(store_url: str | None) -> tuple[str, tuple[Any, bytes] | None]:
    """The store's name (as messages show it) and its active hash list, if any."""
    from blocklist_addon.hashes import NAMESPACE

    store = open_store(store_url, namespace=NAMESPACE)
    try:
        return store.url, await store.load_active()
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        print(f"blocklist-scan: no such file or directory: {missing[0]!a}", file=sys.stderr)
        return EXIT_USAGE
    if args.jobs < 1 or not 0 <= args.threshold <= 128:
        print("blocklist-scan: --jobs must be 1 or more, --threshold 0-128", file=sys.stderr)
        return EXIT_USAGE
    if min(args.video_max_bytes, args.video_max_frames, args.video_max_ms) < 1 or not (
        args.video_max_seconds > 0
    ):
        print("blocklist-scan: the --video-* limits must be above 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        url, pair = asyncio.run(_load(args.store))
    except StoreError as exc:
        print(f"blocklist-scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if pair is None:
        print(
            f"blocklist-scan: no image hash list is active in the store {url}: run "
            "blocklist-sync with a hashes-jsonl or hashes-csv feed first (or give --store)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    info, data = pair
    from blocklist_addon.hashes.snapshot import SnapshotError

    directory, limits = index_directory(), video_limits(args)
    try:
        hashlist = _open_list(data, directory, args.threshold, limits)
    except SnapshotError as exc:
        print(f"blocklist-scan: the active hash list in {url} is unusable: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unreadable: list[dict[str, object]] = []
    skipped: list[dict[str, object]] = []
    files = list(walk(args.paths, unreadable, skipped))
    started = time.monotonic()
    matched, unchecked, count = [], [], 0
    source = (hashlist, str(directory), data)
    with (
        _results(files, source, args) as results,
        _progress(len(files), quiet=args.quiet) as bar,
    ):
        for result in results:
            bar.update(1)
            if "skipped" in result:
                skipped.append({"path": result["path"], "reason": result["skipped"]})
                continue
            count += 1
            if "entry" in result:
                matched.append(result)
                bar.write(
                    f"MATCH {result['path']!a}: list {result['list']!a}, entry "
                    f"{result['entry']!a}, {result['kind']} distance {result['distance']}",
                    file=sys.stderr,
                )
            elif "error" in result:
                unreadable.append(result)
            elif "unchecked" in result:
                unchecked.append(result)
    by_path = {"key": lambda r: str(r["path"])}
    report = {
        "hash_list": {"version": info.version, "entries": info.entries},
        "files": count,
        "seconds": round(time.monotonic() - started, 3),
        "matched": sorted(matched, **by_path),
        "unreadable": sorted(unreadable, **by_path),
        "unchecked": sorted(unchecked, **by_path),
        "skipped": sorted(skipped, **by_path),
    }
    for entry in report["unreadable"]:
        print(f"UNREADABLE {entry['path']!a}: {entry['reason']}", file=sys.stderr)
    for entry in report["skipped"]:
        print(f"SKIPPED {entry['path']!a}: {entry['reason']}", file=sys.stderr)
    text = json.dumps(report, indent=2) + "\n"  # ASCII: names' control bytes escaped
    if args.output:
        try:
            write_atomic(pathlib.Path(args.output), text.encode())
        except OSError as exc:
            print(
                f"blocklist-scan: cannot write {args.output!a} "
                f"({exc.strerror or exc}): the report follows on stdout",
                file=sys.stderr,
            )
            sys.stdout.write(text)
    else:
        sys.stdout.write(text)
    if not args.quiet:
        print(
            f"blocklist-scan: {count:,} files, {len(matched):,} matched, "
            f"{len(unreadable):,} unreadable{_reasons(unreadable)}, "
            f"{len(unchecked):,} images or videos not checkable"
            f"{_reasons(unchecked, 'unchecked')}, "
            f"{len(skipped):,} skipped{_reasons(skipped)}",
            file=sys.stderr,
        )
    if matched:
        return EXIT_MATCHED
    return EXIT_INCOMPLETE if unreadable or unchecked else EXIT_CLEAN


def _reasons(results: list[dict[str, object]], field: str = "reason") -> str:
    """' (2 denied, 1 check-error)': how many of each reason, for the summary line."""
    counts = Counter(str(result[field]) for result in results)
    return f" ({', '.join(f'{n:,} {reason}' for reason, n in counts.most_common())})" * bool(counts)


@contextlib.contextmanager
def _results(
    files: list[Target], source: tuple[Any, str, bytes], args: argparse.Namespace
) -> Iterator[Iterator[dict[str, object]]]:
    """Each file's result, from a pool of processes (a process starts in about a second, so
    a few files are checked in this one). ``source``: the list opened here, the directory
    of its index file and the snapshot's bytes (``_init``)."""
    global _hashlist
    hashlist, directory, data = source
    if args.jobs == 1 or len(files) <= IN_PROCESS:
        _hashlist = hashlist
        yield map(scan_file, files)
        return
    with worker_pool(args.jobs, directory, data, args.threshold, video_limits(args)) as workers:
        yield workers.imap_unordered(scan_file, files, chunksize=4)


def worker_pool(
    jobs: int, directory: str, data: bytes, threshold: int, limits: Any
) -> multiprocessing.pool.Pool:
    """``jobs`` worker processes, each with the list whose index file is in ``directory``
    mapped (``_init``)."""
    context = multiprocessing.get_context("spawn")  # no threads of ours cross a fork
    return context.Pool(jobs, _init, (directory, [data], threshold, limits))


def _progress(total: int, *, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="file",
        disable=quiet or not sys.stderr.isatty(),
        file=sys.stderr,
        dynamic_ncols=True,
    )


if __name__ == "__main__":
    sys.exit(main())
