"""Authentication and TLS for an http(s) feed: a bearer token, basic auth or a client
certificate, loaded once before the first request, sent only to the feed's own origin and
never over plain http:// beyond loopback."""

from __future__ import annotations

import base64
import os
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import yarl

from blocklist_addon.ops.credentials import SecretFileError, is_loopback, read_token
from sync.fetch.errors import FetchError, reason, shown_url
from sync.fetch.types import FeedSource

__all__ = ["Client", "client_for", "origin"]


@dataclass(frozen=True)
class Client:
    """What every request of one fetch shares: credentials are loaded once, up front, so
    that an unreadable token or certificate fails at once and is never retried."""

    session: aiohttp.ClientSession
    source: FeedSource
    headers: dict[str, str]  # credentials: sent only to the feed's own origin
    ssl: ssl.SSLContext | bool  # with the client certificate: the feed's own origin only
    timeout: aiohttp.ClientTimeout
    #: TLS for any other origin (a redirect's, a checksum file's): the same trust, no
    #: client certificate.
    ssl_elsewhere: ssl.SSLContext | bool = True


def client_for(source: FeedSource, session: aiohttp.ClientSession) -> Client:
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
    if parts.username:  # sent as a header, like the others: to the feed's own origin only
        url = yarl.URL(source.url)
        headers["Authorization"] = _basic(url.user or "", url.password or "")
    sends_credentials = bool(headers or parts.username)
    if sends_credentials and parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        raise FetchError(
            f"refusing to send credentials over plain http:// to {shown_url(source.url)}; "
            "use https://"
        )
    context: ssl.SSLContext | bool = True
    elsewhere: ssl.SSLContext | bool = True
    if source.ca_file is not None or source.client_cert is not None:
        context = _ssl_context(source)
        if source.client_cert is None:
            elsewhere = context
        elif source.ca_file is not None:
            elsewhere = _ssl_context(replace(source, client_cert=None, client_key=None))
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=source.connect_timeout, sock_read=source.read_timeout
    )
    return Client(session, source, headers, context, timeout, elsewhere)


def _read_token(path: Path) -> str:
    try:
        return read_token(path, "token file", private=False)
    except SecretFileError as e:
        raise FetchError(str(e)) from None


def _basic_auth(prefix: str) -> str:
    """The Authorization header value (UTF-8, as RFC 7617 recommends), built here because
    aiohttp's BasicAuth is deprecated and its replacement is not in every supported 3.x."""
    user_var, password_var = f"{prefix}_USERNAME", f"{prefix}_PASSWORD"
    user, password = os.environ.get(user_var), os.environ.get(password_var)
    if not user or password is None:
        raise FetchError(f"basic auth needs ${user_var} and ${password_var} in the environment")
    if ":" in user:
        raise FetchError(f"${user_var} must not contain ':'")
    return _basic(user, password)


def _basic(user: str, password: str) -> str:
    credentials = f"{user}:{password}".encode("utf-8", "surrogateescape")
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _ssl_context(source: FeedSource) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if source.ca_file is not None:
        try:
            context.load_verify_locations(cafile=source.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise FetchError(f"cannot load CA file {source.ca_file}: {reason(e)}") from None
    if source.client_cert is not None:
        try:
            context.load_cert_chain(source.client_cert, source.client_key)
        except (OSError, ssl.SSLError) as e:
            key = f" with key {source.client_key}" if source.client_key else ""
            raise FetchError(
                f"cannot load client certificate {source.client_cert}{key}: {reason(e)}"
            ) from None
    return context


def origin(url: str) -> tuple[str, str | None, int | None]:
    try:
        parsed = yarl.URL(url)
        return parsed.scheme, parsed.host, parsed.port
    except (ValueError, TypeError):
        return "", None, None
