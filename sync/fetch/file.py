"""file:// feeds: the bundled sample, or one copied in by other means."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from blocklist_addon.ops.progress import Progress
from sync.fetch.checksum import MAX_CHECKSUM_BYTES, sidecar_digest, verify
from sync.fetch.errors import FetchError, reason, shown_url, too_big
from sync.fetch.types import FeedSource, FetchResult, FetchState

__all__ = ["fetch_file"]

log = logging.getLogger("blocklist.sync")


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"file URL {shown_url(url)} names a remote host; use file:///path")
    return Path(unquote(parts.path))


def fetch_file(source: FeedSource, state: FetchState, progress: Progress) -> FetchResult:
    """A local feed (the bundled sample, or one copied in by other means). Its (mtime,
    size) stands in for an ETag so that an unchanged file costs one stat."""
    path = _file_path(source.url)
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            etag = f"file:{st.st_mtime_ns}:{st.st_size}"
            if state.etag == etag:
                log.debug("feed %s: %s unchanged", source.name, path)
                return FetchResult(True, None, state, None)
            if st.st_size > source.max_bytes:
                raise FetchError(too_big(path, source.max_bytes))
            progress.phase("reading", total=st.st_size, unit="bytes")
            data = f.read(source.max_bytes + 1)
            progress.advance(len(data))
    except OSError as e:
        raise FetchError(f"cannot read feed file {path}: {reason(e)}") from None
    if len(data) > source.max_bytes:
        raise FetchError(too_big(path, source.max_bytes))
    if source.checksum_url:
        verify(
            data, _read_checksum_file(source.checksum_url), f"checksum file {source.checksum_url}"
        )
    log.info("feed %s: read %d bytes from %s", source.name, len(data), path)
    return FetchResult(False, data, FetchState(etag=etag), None)


def _read_checksum_file(url: str) -> bytes:
    path = _file_path(url) if url.startswith("file:") else Path(url)
    try:
        with path.open("rb") as f:
            body = f.read(MAX_CHECKSUM_BYTES + 1)
    except OSError as e:
        raise FetchError(f"cannot read checksum file {path}: {reason(e)}") from None
    return sidecar_digest(body, str(path))
