"""http(s):// feeds: one conditional GET, retried on transient failures with jittered
backoff, its body bounded and checked against its length and checksums."""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Iterator, Mapping

import aiohttp
import yarl

from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from sync.fetch.auth import Client, client_for, origin
from sync.fetch.checksum import MAX_CHECKSUM_BYTES, header_digest, sidecar_digest, verify
from sync.fetch.errors import FetchError, Transient, reason, shown_url, too_big, truncated
from sync.fetch.types import FeedSource, FetchResult, FetchState

__all__ = ["MAX_BACKOFF", "MAX_REDIRECTS", "USER_AGENT", "fetch_http"]

log = logging.getLogger("blocklist.sync")

USER_AGENT = "blocklist-sync"
#: Longest wait between two attempts, however many retries are configured.
MAX_BACKOFF = 30.0
_CHUNK = 64 * 1024
#: Redirects one request follows (aiohttp's default).
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Concatenated gzip members read in one body (aiohttp's limit too): each costs a new
#: decompressor and a copy of the rest of its chunk.
MAX_GZIP_MEMBERS = 1024


async def fetch_http(
    source: FeedSource, state: FetchState, session: aiohttp.ClientSession, progress: Progress
) -> FetchResult:
    """The feed within ``source.timeout``, every attempt and the checksum file included."""
    try:
        async with asyncio.timeout(source.timeout):
            return await _fetch(source, state, session, progress)
    except TimeoutError:
        raise FetchError(
            f"timed out: {shown_url(source.url)} did not finish within {source.timeout:g}s"
        ) from None


async def _fetch(
    source: FeedSource, state: FetchState, session: aiohttp.ClientSession, progress: Progress
) -> FetchResult:
    client = client_for(source, session)
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
    if not (source.checksum_header or source.checksum_url or _framed(headers)):
        raise FetchError(
            f"the body from {url} has no Content-Length and is not chunked: it ends where "
            "the connection closed, and a cut download cannot be told from the whole list "
            "(its last entry cut to a whole site); set checksum_url or checksum_header"
        )
    if source.checksum_header:
        value = headers.get(source.checksum_header)
        if value is None:
            raise FetchError(f"no {source.checksum_header} header in the response from {url}")
        where = f"{source.checksum_header} header"
        verify(data, header_digest(value, where), where)
    if source.checksum_url:
        progress.clear()  # the body is in; a retry warning may follow
        _, _, body = await _get(client, source.checksum_url, {}, MAX_CHECKSUM_BYTES)
        where = f"checksum file {shown_url(source.checksum_url)}"
        if body is None:  # a 304 to a request that was not conditional
            raise FetchError(f"{where} answered HTTP 304 without a body")
        verify(data, sidecar_digest(body, where), where)
    log.info("feed %s: HTTP %d from %s, %d bytes", source.name, status, url, len(data))
    return FetchResult(
        False, data, FetchState(headers.get("ETag"), headers.get("Last-Modified")), status
    )


async def _get(
    client: Client,
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
        except Transient as e:
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
    client: Client, url: str, extra: dict[str, str], max_bytes: int, progress: Progress
) -> tuple[int, Mapping[str, str], bytes | None]:
    """One GET, following redirects itself: credentials (the token, basic auth and the
    client certificate) go to the feed's own origin only, and never from https:// down to
    plain http://, where anyone on the path could read or change the list."""
    shown = shown_url(url)
    log.debug("GET %s%s", shown, " (conditional)" if extra else "")
    try:
        for _ in range(MAX_REDIRECTS + 1):
            same_origin = origin(url) == origin(client.source.url)
            headers = {
                "User-Agent": USER_AGENT,
                "Accept-Encoding": "gzip, deflate",  # what _Inflater reads
                **(client.headers if same_origin else {}),
                **extra,
            }
            async with client.session.get(
                yarl.URL(url).with_user(None),  # URL credentials: in the headers above
                headers=headers,
                ssl=client.ssl if same_origin else client.ssl_elsewhere,
                timeout=client.timeout,
                allow_redirects=False,
                auto_decompress=False,  # _read_body inflates, held to the stream's end
            ) as resp:
                status = resp.status
                if status in _REDIRECTS:
                    url = _redirect(url, resp.headers.get("Location"), status, shown)
                    continue
                if status == 304:
                    return status, resp.headers, None
                if not 200 <= status < 300 or status == 206:
                    raise _status_error(client.source, status, shown)
                return status, resp.headers, await _read_body(resp, shown, max_bytes, progress)
        raise FetchError(f"too many redirects from {shown}")
    except FetchError:
        raise
    except aiohttp.ClientConnectorCertificateError:
        raise FetchError(
            f"TLS certificate of {shown} is not trusted (set ca_file for a private CA)"
        ) from None
    except aiohttp.ClientSSLError as e:
        raise FetchError(
            f"TLS handshake with {shown} failed (check client_cert and ca_file): {reason(e)}"
        ) from None
    except aiohttp.ConnectionTimeoutError:
        raise Transient(
            f"timed out connecting to {shown} after {client.source.connect_timeout:g}s"
        ) from None
    except TimeoutError:
        raise Transient(
            f"timed out: no data from {shown} for {client.source.read_timeout:g}s"
        ) from None
    except aiohttp.ClientConnectorError as e:
        raise Transient(f"cannot connect to {shown}: {reason(e.os_error)}") from None
    except aiohttp.InvalidURL:
        raise FetchError(f"invalid feed URL {shown}") from None
    except aiohttp.ClientError as e:
        raise Transient(f"request to {shown} failed: {type(e).__name__}") from None
    except ValueError:  # a URL yarl cannot parse, a header aiohttp will not send
        raise FetchError(f"invalid request to {shown}") from None


async def _read_body(
    resp: aiohttp.ClientResponse, shown: str, max_bytes: int, progress: Progress
) -> bytes:
    """The body, refusing more than ``max_bytes`` (decoded, as it is inflated: a
    compressed bomb is cut off in bounded memory), anything shorter than its
    Content-Length, and a compressed stream that stops before its end."""
    coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    inflater = None if coding == "identity" else _Inflater(coding, shown)
    expected = resp.content_length  # of the bytes on the wire
    if inflater is None and expected is not None and expected > max_bytes:
        raise FetchError(too_big(shown, max_bytes, f" (Content-Length {expected})"))
    chunks: list[bytes] = []
    received = wire = 0
    progress.phase("downloading", total=None if inflater else expected, unit="bytes")
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            wire += len(chunk)
            for piece in (chunk,) if inflater is None else inflater.feed(chunk):
                received += len(piece)
                if received > max_bytes:
                    raise FetchError(too_big(shown, max_bytes))
                chunks.append(piece)
                progress.advance(len(piece))
    except TimeoutError:
        raise  # reported by the caller, like a timeout before the headers
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        if expected is not None and wire < expected:
            raise Transient(truncated(shown, wire, expected)) from None
        raise Transient(f"connection to {shown} dropped after {wire} bytes of the body") from None
    if expected is not None and wire != expected:
        raise Transient(truncated(shown, wire, expected))
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


class _Inflater:
    """A gzip or deflate body inflated as it arrives, a piece of at most _CHUNK bytes at a
    time, and held to its end: a stream cut before its end is refused, not taken as the
    list (its last entry cut mid-URL). What the sync asks for (Accept-Encoding) is all it
    reads; aiohttp's own decoding checks no gzip trailer."""

    def __init__(self, coding: str, shown: str) -> None:
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise FetchError(f"unsupported Content-Encoding {coding[:32]!r} from {shown}")
        self.gzip = coding != "deflate"
        self.coding = "gzip" if self.gzip else "deflate"
        self.shown = shown
        self.z: zlib._Decompress | None = None
        self.members = 0

    def _error(self, what: str) -> FetchError:
        return FetchError(f"the {self.coding} body from {self.shown} {what}")

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if data and (self.z is None or self.z.eof):  # a first member, or another
                if self.z is not None and not self.gzip:
                    raise self._error("has data after its end")
                self.members += 1
                if self.members > MAX_GZIP_MEMBERS:
                    raise self._error(f"has over {MAX_GZIP_MEMBERS} gzip members")
                # deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send it
                raw = not self.gzip and data[0] & 0x0F != 8
                self.z = zlib.decompressobj(31 if self.gzip else -15 if raw else 15)
            if self.z is None:
                return
            try:
                out = self.z.decompress(data, _CHUNK)
            except zlib.error:
                raise self._error("is corrupt") from None
            if out:
                yield out
            if self.z.eof:
                data = self.z.unused_data
                if not data:
                    return
                continue
            data = self.z.unconsumed_tail
            if not data and len(out) < _CHUNK:
                return  # all of it read: the stream goes on in the next chunk

    def finish(self) -> None:
        if self.z is not None and not self.z.eof:
            raise self._error("is cut short (the stream stops before its end)")


def _framed(headers: Mapping[str, str]) -> bool:
    """Whether the body's end is marked (a length, or chunks), not just the connection's."""
    coding = headers.get("Transfer-Encoding", "").rpartition(",")[2].strip().lower()
    return "Content-Length" in headers or coding == "chunked"


def _redirect(url: str, location: str | None, status: int, shown: str) -> str:
    """Where a redirect from ``url`` goes: http(s) only, never from https:// to http://."""
    if not location:
        raise FetchError(f"HTTP {status} from {shown} without a Location")
    try:
        target = yarl.URL(url).join(yarl.URL(location))
    except (ValueError, TypeError):
        raise FetchError(f"HTTP {status} from {shown} to an invalid URL") from None
    scheme = target.scheme.lower()
    if scheme not in ("http", "https") or not target.host:
        raise FetchError(f"HTTP {status} from {shown} to a URL that is not http(s)")
    if scheme == "http" and yarl.URL(url).scheme.lower() == "https":
        raise FetchError(f"refusing a redirect from {shown} to plain http://")
    return str(target)


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
        return Transient(message)
    return FetchError(message)
