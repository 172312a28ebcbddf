"""Downloading one feed: conditional, authenticated, bounded, retried, verified.

The sync worker runs from cron every few minutes, so the common case is "nothing changed"
and costs one conditional request. Everything that can go wrong (the feed down, slow,
unauthenticated, truncated, too big, corrupted) ends in one FetchError whose text is fit
for cron mail: what failed and where, never a credential, the URL without its userinfo
and query string (where signed URLs keep their secrets).

Parsing and validating the bytes is ``sync.feeds``' job, not this module's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import random
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import yarl

from sync.progress import NO_PROGRESS, Progress

__all__ = ["FeedSource", "FetchError", "FetchResult", "FetchState", "fetch_feed"]

log = logging.getLogger("blocklist.sync")

USER_AGENT = "blocklist-sync"
#: Longest wait between two attempts, however many retries are configured.
MAX_BACKOFF = 30.0
#: A checksum file holds one line; anything bigger is not one.
MAX_CHECKSUM_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_HEX_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
# A bearer token goes into a header: visible ASCII only (no CR/LF to smuggle headers).
_TOKEN = re.compile(r"[\x21-\x7e]+")


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


class FetchError(Exception):
    """One line: what failed, e.g. 'HTTP 401 from https://feed.example.net/list (check
    the token file)'. Never a credential; the URL without userinfo or query string."""


class _Transient(FetchError):
    """A failure worth another attempt: connection errors, timeouts, 5xx."""


async def fetch_feed(
    source: FeedSource,
    state: FetchState,
    *,
    session: aiohttp.ClientSession | None = None,
    progress: Progress = NO_PROGRESS,
) -> FetchResult:
    """Download ``source`` unless it is unchanged since ``state``.

    Raises FetchError for every failure, after the configured retries for transient ones.
    ``progress`` gets a "downloading" (file://: "reading") phase counting bytes.
    """
    scheme = urlsplit(source.url).scheme.lower()
    if scheme == "file":
        if source.checksum_header:
            raise FetchError(f"feed {source.name}: checksum_header needs an http(s) feed URL")
        return await asyncio.to_thread(_fetch_file, source, state, progress)
    if scheme not in ("http", "https"):
        raise FetchError(
            f"feed {source.name}: unsupported URL scheme {scheme or '(none)'!r} "
            "(https://, http:// or file:///)"
        )
    if session is not None:
        return await _fetch_http(source, state, session, progress)
    async with aiohttp.ClientSession() as own:
        return await _fetch_http(source, state, own, progress)


# -- file:// -----------------------------------------------------------------------------


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"file URL {shown_url(url)} names a remote host; use file:///path")
    return Path(unquote(parts.path))


def _fetch_file(source: FeedSource, state: FetchState, progress: Progress) -> FetchResult:
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
                raise FetchError(_too_big(path, source.max_bytes))
            progress.phase("reading", total=st.st_size, unit="bytes")
            data = f.read(source.max_bytes + 1)
            progress.advance(len(data))
    except OSError as e:
        raise FetchError(f"cannot read feed file {path}: {_reason(e)}") from None
    if len(data) > source.max_bytes:
        raise FetchError(_too_big(path, source.max_bytes))
    if source.checksum_url:
        _verify(
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
        raise FetchError(f"cannot read checksum file {path}: {_reason(e)}") from None
    return _sidecar_digest(body, str(path))


# -- http(s) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Client:
    """What every request of one fetch shares: credentials are loaded once, up front, so
    that an unreadable token or certificate fails at once and is never retried."""

    session: aiohttp.ClientSession
    source: FeedSource
    headers: dict[str, str]  # credentials: sent only to the feed's own origin
    ssl: ssl.SSLContext | bool
    timeout: aiohttp.ClientTimeout


async def _fetch_http(
    source: FeedSource, state: FetchState, session: aiohttp.ClientSession, progress: Progress
) -> FetchResult:
    client = _client(source, session)
    conditional: dict[str, str] = {}
    if state.etag:
        conditional["If-None-Match"] = state.etag
    if state.last_modified:
        conditional["If-Modified-Since"] = state.last_modified
    status, headers, data = await _get(
        client, source.url, conditional, source.max_bytes, progress=progress
    )
    url = shown_url(source.url)
    if status == 304:
        if not conditional:
            raise FetchError(f"HTTP 304 from {url} to a request that was not conditional")
        log.info("feed %s: not modified (HTTP 304 from %s)", source.name, url)
        new_state = FetchState(
            headers.get("ETag") or state.etag,
            headers.get("Last-Modified") or state.last_modified,
        )
        return FetchResult(True, None, new_state, status)
    assert data is not None
    if source.checksum_header:
        value = headers.get(source.checksum_header)
        if value is None:
            raise FetchError(f"no {source.checksum_header} header in the response from {url}")
        where = f"{source.checksum_header} header"
        _verify(data, _header_digest(value, where), where)
    if source.checksum_url:
        progress.clear()  # the body is in; a retry warning may follow
        _, _, body = await _get(client, source.checksum_url, {}, MAX_CHECKSUM_BYTES)
        where = f"checksum file {shown_url(source.checksum_url)}"
        if body is None:  # a 304 to a request that was not conditional
            raise FetchError(f"{where} answered HTTP 304 without a body")
        _verify(data, _sidecar_digest(body, where), where)
    log.info("feed %s: HTTP %d from %s, %d bytes", source.name, status, url, len(data))
    return FetchResult(
        False, data, FetchState(headers.get("ETag"), headers.get("Last-Modified")), status
    )


def _client(source: FeedSource, session: aiohttp.ClientSession) -> _Client:
    parts = urlsplit(source.url)
    if sum(map(bool, (source.token_file, source.basic_auth_env, parts.username))) > 1:
        raise FetchError(
            f"feed {source.name}: use one of token_file, basic_auth_env and credentials in the URL"
        )
    headers: dict[str, str] = {}
    if source.token_file is not None:
        headers["Authorization"] = f"Bearer {_read_token(source.token_file)}"
    if source.basic_auth_env:
        headers["Authorization"] = _basic_auth(source.basic_auth_env)
    sends_credentials = bool(headers or parts.username)
    if sends_credentials and parts.scheme.lower() == "http" and not _is_loopback(parts.hostname):
        raise FetchError(
            f"refusing to send credentials over plain http:// to {shown_url(source.url)}; "
            "use https://"
        )
    context: ssl.SSLContext | bool = True
    if source.ca_file is not None or source.client_cert is not None:
        context = _ssl_context(source)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=source.connect_timeout, sock_read=source.read_timeout
    )
    return _Client(session, source, headers, context, timeout)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"cannot read token file {path}: {_reason(e)}") from None
    if not token:
        raise FetchError(f"token file {path} is empty")
    if not _TOKEN.fullmatch(token):
        raise FetchError(
            f"token file {path} holds whitespace or characters not allowed in an HTTP header"
        )
    return token


def _basic_auth(prefix: str) -> str:
    """The Authorization header value (UTF-8, as RFC 7617 recommends), built here because
    aiohttp's BasicAuth is deprecated and its replacement is not in every supported 3.x."""
    user_var, password_var = f"{prefix}_USERNAME", f"{prefix}_PASSWORD"
    user, password = os.environ.get(user_var), os.environ.get(password_var)
    if not user or password is None:
        raise FetchError(f"basic auth needs ${user_var} and ${password_var} in the environment")
    if ":" in user:
        raise FetchError(f"${user_var} must not contain ':'")
    credentials = f"{user}:{password}".encode("utf-8", "surrogateescape")
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _ssl_context(source: FeedSource) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if source.ca_file is not None:
        try:
            context.load_verify_locations(cafile=source.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise FetchError(f"cannot load CA file {source.ca_file}: {_reason(e)}") from None
    if source.client_cert is not None:
        try:
            context.load_cert_chain(source.client_cert, source.client_key)
        except (OSError, ssl.SSLError) as e:
            key = f" with key {source.client_key}" if source.client_key else ""
            raise FetchError(
                f"cannot load client certificate {source.client_cert}{key}: {_reason(e)}"
            ) from None
    return context


async def _get(
    client: _Client,
    url: str,
    extra: dict[str, str],
    max_bytes: int,
    *,
    progress: Progress = NO_PROGRESS,
) -> tuple[int, Mapping[str, str], bytes | None]:
    """GET ``url`` with retries: (status, headers, body or None for 304)."""
    source = client.source
    attempts = max(0, source.retries) + 1
    for attempt in range(1, attempts + 1):
        try:
            return await _attempt(client, url, extra, max_bytes, progress)
        except _Transient as e:
            if attempt == attempts:
                suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                raise FetchError(f"{e}{suffix}") from None
            delay = random.uniform(0, min(MAX_BACKOFF, source.backoff * 2 ** (attempt - 1)))
            progress.clear()  # the warning goes to stderr too
            log.warning(
                "feed %s: attempt %d of %d failed: %s; retrying in %.1fs",
                source.name,
                attempt,
                attempts,
                e,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _attempt(
    client: _Client, url: str, extra: dict[str, str], max_bytes: int, progress: Progress
) -> tuple[int, Mapping[str, str], bytes | None]:
    shown = shown_url(url)
    same_origin = _origin(url) == _origin(client.source.url)
    headers = {"User-Agent": USER_AGENT, **(client.headers if same_origin else {}), **extra}
    log.debug("GET %s%s", shown, " (conditional)" if extra else "")
    try:
        async with client.session.get(
            url,
            headers=headers,
            ssl=client.ssl,
            timeout=client.timeout,
        ) as resp:
            status = resp.status
            if status == 304:
                return status, resp.headers, None
            if not 200 <= status < 300 or status == 206:
                raise _status_error(client.source, status, shown)
            return status, resp.headers, await _read_body(resp, shown, max_bytes, progress)
    except FetchError:
        raise
    except aiohttp.ClientConnectorCertificateError:
        raise FetchError(
            f"TLS certificate of {shown} is not trusted (set ca_file for a private CA)"
        ) from None
    except aiohttp.ClientSSLError as e:
        raise FetchError(
            f"TLS handshake with {shown} failed (check client_cert and ca_file): {_reason(e)}"
        ) from None
    except aiohttp.ConnectionTimeoutError:
        raise _Transient(
            f"timed out connecting to {shown} after {client.source.connect_timeout:g}s"
        ) from None
    except TimeoutError:
        raise _Transient(
            f"timed out: no data from {shown} for {client.source.read_timeout:g}s"
        ) from None
    except aiohttp.ClientConnectorError as e:
        raise _Transient(f"cannot connect to {shown}: {_reason(e.os_error)}") from None
    except aiohttp.TooManyRedirects:
        raise FetchError(f"too many redirects from {shown}") from None
    except aiohttp.InvalidURL:
        raise FetchError(f"invalid feed URL {shown}") from None
    except aiohttp.ClientError as e:
        raise _Transient(f"request to {shown} failed: {type(e).__name__}") from None


async def _read_body(
    resp: aiohttp.ClientResponse, shown: str, max_bytes: int, progress: Progress
) -> bytes:
    """The body, refusing more than ``max_bytes`` (decoded: a compressed bomb is cut off
    too) and anything shorter than its Content-Length."""
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    expected = None if encoded else resp.content_length
    if expected is not None and expected > max_bytes:
        raise FetchError(_too_big(shown, max_bytes, f" (Content-Length {expected})"))
    chunks: list[bytes] = []
    received = 0
    progress.phase("downloading", total=expected, unit="bytes")
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > max_bytes:
                raise FetchError(_too_big(shown, max_bytes))
            chunks.append(chunk)
            progress.advance(len(chunk))
    except TimeoutError:
        raise  # reported by the caller, like a timeout before the headers
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        if expected is not None and received < expected:
            raise _Transient(_truncated(shown, received, expected)) from None
        raise _Transient(
            f"connection to {shown} dropped after {received} bytes of the body"
        ) from None
    if expected is not None and received != expected:
        raise _Transient(_truncated(shown, received, expected))
    return b"".join(chunks)


def _status_error(source: FeedSource, status: int, shown: str) -> FetchError:
    message = f"HTTP {status} from {shown}"
    if status in (401, 403):
        if source.token_file is not None:
            hint = "check the token file"
        elif source.basic_auth_env:
            hint = f"check ${source.basic_auth_env}_USERNAME and ${source.basic_auth_env}_PASSWORD"
        elif source.client_cert is not None:
            hint = "check the client certificate"
        else:
            hint = "the feed needs credentials: token_file, basic_auth_env or client_cert"
        return FetchError(f"{message} ({hint})")
    if status == 404:
        return FetchError(f"{message} (check the feed URL)")
    if status >= 500:
        return _Transient(message)
    return FetchError(message)


# -- checksums ---------------------------------------------------------------------------


def _verify(data: bytes, expected: bytes, where: str) -> None:
    if not hmac.compare_digest(hashlib.sha256(data).digest(), expected):
        raise FetchError(f"checksum mismatch: the {len(data)}-byte body does not match the {where}")


def _sidecar_digest(body: bytes, where: str) -> bytes:
    """First token of a checksum file (``sha256sum`` output works as it is)."""
    tokens = body[:MAX_CHECKSUM_BYTES].split(maxsplit=1)
    token = tokens[0].decode("ascii", "replace") if tokens else ""
    if not _HEX_SHA256.fullmatch(token):
        raise FetchError(f"{where} does not start with a hex SHA-256")
    return bytes.fromhex(token)


def _header_digest(value: str, where: str) -> bytes:
    """Hex, or base64 as some object stores send it (x-amz-checksum-sha256)."""
    value = value.strip()
    if _HEX_SHA256.fullmatch(value):
        return bytes.fromhex(value)
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise FetchError(f"{where} is not a SHA-256 (hex or base64)")
    return digest


# -- messages ----------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """``url`` fit for a message: no userinfo, no query string (signed URLs keep their
    secrets there), no fragment."""
    try:
        parsed = yarl.URL(url)
        if parsed.scheme == "file" or not parsed.host:
            return str(parsed.with_query(None).with_fragment(None))
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparseable URL>"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    try:
        parsed = yarl.URL(url)
        return parsed.scheme, parsed.host, parsed.port
    except (ValueError, TypeError):
        return "", None, None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reason(e: BaseException | None) -> str:
    """An exception's reason without anything it was given to read: strerror for OS
    errors, the library's reason for TLS errors, else only the type."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return _reason(e.os_error)
    if isinstance(e, ssl.SSLError):
        return str(e.reason or type(e).__name__)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return type(e).__name__


def _too_big(where: object, max_bytes: int, detail: str = "") -> str:
    return f"feed {where} is over the {max_bytes}-byte limit{detail}"


def _truncated(shown: str, received: int, expected: int) -> str:
    return f"truncated body from {shown}: {received} of {expected} bytes"
