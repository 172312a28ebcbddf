"""``blocklist-scan PATH...``: check files already stored (a platform's upload directory)
against the active image hash list.

Every regular file under each PATH (recursively; symbolic links are not followed) is
checked in a pool of one process per core: exact hashes of its bytes and, for an image, PDQ
of its first frames, exactly as the proxy checks an upload. A progress bar goes to stderr
when it is a terminal; the JSON report (matching paths with entry id, hash kind and
distance; unreadable files; images that could not be checked) goes to stdout or --output.
The report never holds a hash.

Exit status: 0 nothing matched; 1 something matched; 2 usage or configuration error (a
PATH that does not exist, no active hash list). An unreadable file is reported, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from blocklist_addon.store import StoreError, open_store

__all__ = ["main", "scan_file"]

EXIT_CLEAN, EXIT_MATCHED, EXIT_USAGE = 0, 1, 2
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
"list", "entry", "kind", "distance"}], "unreadable": [{"path", "error"}], "unchecked":
[{"path", "reason"}]}. What to do on a match (preserve, report to the hotline or the
police as the law requires) is the platform's duty; this tool never copies the file.
"""

_hashlist: Any = None  # the worker process's HashList


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
        help="redis://, rediss://, unix:// or file:// URL (default: the embedded store in "
        "$BLOCKLIST_DATA_DIR)",
    )
    parser.add_argument(
        "--threshold", type=int, default=31, help="PDQ distance that matches (default 31)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one a core)"
    )
    parser.add_argument("--output", metavar="FILE", help="write the JSON report here (0600)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _init(data: bytes, threshold: int) -> None:
    global _hashlist
    from blocklist_addon.hashes import HashList

    _hashlist = HashList.from_bytes(data, threshold=threshold)


def scan_file(path: str) -> dict[str, object]:
    """One file's result (in a worker process): a match, an error, or neither."""
    hashlist = _hashlist
    try:
        size = os.stat(path).st_size
        if size <= READ_WHOLE:
            with open(path, "rb") as file:
                check = hashlist.check(file.read())
            match, unchecked = check.match, check.unchecked
        else:
            match, unchecked = hashlist.match_exact(_exact_by_chunks(path, hashlist.kinds)), None
    except OSError as exc:
        return {"path": path, "error": exc.strerror or type(exc).__name__}
    if match is not None:
        return {
            "path": path,
            "list": match.list_name,
            "entry": match.entry_id,
            "kind": match.kind,
            "distance": match.distance,
        }
    return {"path": path, "unchecked": unchecked} if unchecked else {"path": path}


def _exact_by_chunks(path: str, kinds: frozenset[str]) -> dict[str, bytes]:
    hashers = {kind: hashlib.new(kind) for kind in kinds if kind != "pdq"}
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {kind: hasher.digest() for kind, hasher in hashers.items()}


def walk(paths: Sequence[str], errors: list[dict[str, object]]) -> Iterator[str]:
    """Regular files under ``paths``; directories that cannot be listed go to ``errors``."""
    for top in paths:
        if not os.path.isdir(top) or os.path.islink(top):
            yield top
            continue

        def failed(exc: OSError) -> None:
            errors.append({"path": exc.filename, "error": exc.strerror or type(exc).__name__})

        for directory, _, names in os.walk(top, onerror=failed):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path


async def _load(store_url: str | None) -> tuple[Any, bytes] | None:
    from blocklist_addon.hashes import NAMESPACE

    store = open_store(store_url, namespace=NAMESPACE)
    try:
        return await store.load_active()
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        print(f"blocklist-scan: no such file or directory: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    if args.jobs < 1 or not 0 <= args.threshold <= 128:
        print("blocklist-scan: --jobs must be 1 or more, --threshold 0-128", file=sys.stderr)
        return EXIT_USAGE
    try:
        pair = asyncio.run(_load(args.store))
    except StoreError as exc:
        print(f"blocklist-scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if pair is None:
        print(
            "blocklist-scan: no image hash list is active in the store: run blocklist-sync "
            "with a hashes-jsonl or hashes-csv feed first",
            file=sys.stderr,
        )
        return EXIT_USAGE
    info, data = pair
    unreadable: list[dict[str, object]] = []
    files = list(walk(args.paths, unreadable))
    started = time.monotonic()
    matched, unchecked, count = [], [], 0
    with _results(files, data, args) as results, _progress(len(files), quiet=args.quiet) as bar:
        for result in results:
            count += 1
            bar.update(1)
            if "entry" in result:
                matched.append(result)
                bar.write(
                    f"MATCH {result['path']}: list {result['list']}, entry {result['entry']}, "
                    f"{result['kind']} distance {result['distance']}",
                    file=sys.stderr,
                )
            elif "error" in result:
                unreadable.append(result)
            elif "unchecked" in result:
                unchecked.append(result)
    report = {
        "hash_list": {"version": info.version, "entries": info.entries},
        "files": count,
        "seconds": round(time.monotonic() - started, 3),
        "matched": sorted(matched, key=lambda r: str(r["path"])),
        "unreadable": sorted(unreadable, key=lambda r: str(r["path"])),
        "unchecked": sorted(unchecked, key=lambda r: str(r["path"])),
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    if not args.quiet:
        print(
            f"blocklist-scan: {count:,} files, {len(matched):,} matched, "
            f"{len(unreadable):,} unreadable, {len(unchecked):,} images not checkable",
            file=sys.stderr,
        )
    return EXIT_MATCHED if matched else EXIT_CLEAN


@contextlib.contextmanager
def _results(
    files: list[str], data: bytes, args: argparse.Namespace
) -> Iterator[Iterator[dict[str, object]]]:
    """Each file's result, from a pool of processes (a process starts in about a second, so
    a few files are checked in this one)."""
    if args.jobs == 1 or len(files) <= IN_PROCESS:
        _init(data, args.threshold)
        yield map(scan_file, files)
        return
    context = multiprocessing.get_context("spawn")  # no threads of ours cross a fork
    with context.Pool(args.jobs, _init, (data, args.threshold)) as pool:
        yield pool.imap_unordered(scan_file, files, chunksize=4)


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
