"""What one feed fetch is given and gives back: where the feed is and how to reach it, the
validators kept between runs, and the result."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FeedSource", "FetchResult", "FetchState"]

#: An ETag or Last-Modified fit to send back: printable ASCII, short.
_VALIDATOR = re.compile(r"[\x20-\x7e]{1,1024}")


@dataclass(frozen=True)
class FeedSource:
    """Where and how to download one feed. Credentials are named (files, environment
    variables), never held here, so a FeedSource can be logged or shown safely."""

    name: str
    url: str  # https://, http:// (loopback only when credentials are sent), or file:///path
    format: str
    token_file: Path | None = None  # bearer token read from this file (stripped)
    basic_auth_env: str | None = None  # prefix P: $P_USERNAME and $P_PASSWORD
    client_cert: Path | None = None  # PEM client certificate (with the key unless client_key)
    client_key: Path | None = None
    ca_file: Path | None = None  # extra CA bundle for the feed server
    checksum_url: str | None = None  # sidecar whose first token is the hex SHA-256 of the feed
    checksum_header: str | None = None  # e.g. "X-Checksum-SHA256": SHA-256 of the body
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # no byte for this long -> timeout
    #: The whole download (every attempt, the backoff between them and the checksum file)
    #: ends within this: a server that sends a byte now and then never ends it otherwise
    #: (the sync's lock is renewed while it runs, so it outlives any download).
    timeout: float = 600.0
    max_bytes: int = 256 * 1024 * 1024
    retries: int = 3  # extra attempts for connection errors, timeouts and 5xx; none for 4xx
    backoff: float = 1.0  # base seconds; exponential with full jitter, capped at MAX_BACKOFF


@dataclass(frozen=True)
class FetchState:
    """The validators of the last accepted download, persisted by the caller between runs.

    Persist a new state only once its data has been accepted: otherwise the next run is
    told "not modified" and never downloads the feed again.
    """

    etag: str | None = None
    last_modified: str | None = None

    def __post_init__(self) -> None:
        # A validator is sent back as a header: one a server garbled (a control byte, bytes
        # that are not ASCII, kilobytes) is dropped, not kept to fail every later request.
        for name in ("etag", "last_modified"):
            value = getattr(self, name)
            if value is not None and not _VALIDATOR.fullmatch(value):
                object.__setattr__(self, name, None)

    def to_dict(self) -> dict[str, str | None]:
        return {"etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> FetchState:
        """Tolerates a missing or hand-edited record: anything unusable counts as absent."""
        if not isinstance(d, Mapping):
            return cls()
        etag, last_modified = d.get("etag"), d.get("last_modified")
        return cls(
            etag if isinstance(etag, str) and etag else None,
            last_modified if isinstance(last_modified, str) and last_modified else None,
        )


@dataclass(frozen=True)
class FetchResult:
    not_modified: bool
    data: bytes | None  # None when not modified
    state: FetchState  # the validators to send next time
    status: int | None  # HTTP status (None for file://)
