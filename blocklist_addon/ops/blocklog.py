"""One JSON line per block, for the operator's records and appeals.

A line names the time, the client (whole, truncated to its network, or omitted), the list,
the entry's opaque id, where the block happened and the reference shown on the splash page.
It never holds the requested URL unless ``blocklist_log_url`` asks for it: logs travel
further than the list may.

The proxy's own log keeps subscribers' destinations out too: mitmproxy logs every client
and server connection (``server connect unlisted.example.org:443``), which would make an
ISP's or a school's log a browsing history nobody asked for (and name listed hosts).
``ConnectionLog`` drops those lines unless ``blocklist_log_connections`` turns them on;
errors (a crash and its traceback) are always kept.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mitmproxy import connection, ctx
from mitmproxy.exceptions import OptionsError

from blocklist_addon.urls.matcher import Match

if TYPE_CHECKING:
    from blocklist_addon.hashes import HashMatch

__all__ = [
    "BlockEvent",
    "BlockLog",
    "ConnectionLog",
    "client_address",
    "client_field",
    "uploader_of",
]

#: Longest uploader value kept; characters other than printable ASCII are dropped.
UPLOADER_MAX = 128

#: The logger of mitmproxy's per-connection lines (each names the client and destination).
CONNECTION_LOGGER = "mitmproxy.proxy.server"

log = logging.getLogger("blocklist.block")

ClientMode = Literal["full", "truncated", "omit"]


@dataclass(frozen=True, slots=True)
class BlockEvent:
    match: Match | HashMatch  # a HashMatch for an uploaded image (never its hash)
    where: Literal["request", "connect", "tls", "page", "upload", "image"]
    action: Literal["splash", "refuse", "neutralize", "report"]
    client: str | None  # the client's IP address
    reference: str
    url: str | None = None  # logged only when blocklist_log_url is on
    method: str | None = None
    uploader: str | None = None  # blocklist_uploader_header's value, when the operator set one


def client_address(client: connection.Client) -> str | None:
    """The client's IP address as a BlockEvent takes it."""
    peer = client.peername
    return str(peer[0]) if peer else None


def client_field(address: str | None, mode: ClientMode) -> str | None:
    """The client as logged: the address, its /24 (IPv4) or /48 (IPv6) network, or None."""
    if address is None or mode == "omit":
        return None
    if mode == "full":
        return address
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def uploader_of(headers: Mapping[str, str]) -> str | None:
    """The uploader, as the platform names it in the request header that
    ``blocklist_uploader_header`` names (None when unset or absent): printable ASCII only,
    at most UPLOADER_MAX characters, so that a value cannot forge a log line."""
    name = ctx.options.blocklist_uploader_header
    if not name or (value := headers.get(name)) is None:
        return None
    value = "".join(c for c in value if " " <= c <= "~").strip()[:UPLOADER_MAX]
    return value or None


def record(event: BlockEvent, *, client_mode: ClientMode, with_url: bool) -> str:
    """The JSON line for one block (without the newline)."""
    doc: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": "block",
        "action": event.action,
        "where": event.where,
        "list": event.match.list_name,
        "entry": event.match.entry_id,
    }
    if isinstance(event.match, Match):
        doc["embedded"] = event.match.embedded
    else:  # an image: which kind of hash matched, and how near (never the hash itself)
        doc["kind"] = event.match.kind
        doc["distance"] = event.match.distance
        category = getattr(event.match, "category", None)
        if category is not None:  # the hotline's category (severity) of the entry
            doc["category"] = category
    doc["reference"] = event.reference
    client = client_field(event.client, client_mode)
    if client is not None:
        doc["client"] = client
    if event.method:
        doc["method"] = event.method
    if event.uploader is not None:
        doc["uploader"] = event.uploader
    if with_url and event.url is not None:
        doc["url"] = event.url
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"))


class BlockLog:
    """Writes block events to a file of JSON lines, or to the proxy's own log."""

    def __init__(self) -> None:
        self._path: str | None = None  # None: block lines go to the proxy's own log
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the open file

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_log_file",
            str,
            "",
            "File to append one JSON line per block to. Empty: the proxy's own log.",
        )
        loader.add_option(
            "blocklist_log_client",
            str,
            "truncated",
            "How block lines name the client: full (its address), truncated (its /24 or /48 "
            "network) or omit.",
            choices=["full", "truncated", "omit"],
        )
        loader.add_option(
            "blocklist_log_url",
            bool,
            False,
            "Also write the requested URL into block lines. Off by default: logs must not "
            "become a plaintext copy of the confidential list.",
        )
        loader.add_option(
            "blocklist_uploader_header",
            str,
            "",
            "In front of a platform: the name of a request header the platform (or its "
            "authenticating gateway in front of this proxy) sets to the uploading account, "
            "e.g. X-Platform-User. Its value goes into the block line and the webhook event "
            "of a refused upload as 'uploader': personal data, so off (empty) by default; the "
            "header must be one clients cannot set themselves.",
        )

    def configure(self, updated: set[str]) -> None:
        if "blocklist_log_file" in updated:
            self._close()
            self._path = ctx.options.blocklist_log_file or None
            if self._path is not None:
                try:
                    self._open(self._path)
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    raise OptionsError(
                        f"cannot open blocklist_log_file {self._path}: {reason}"
                    ) from None

    def done(self) -> None:
        self._close()

    def write(self, event: BlockEvent) -> None:
        line = record(
            event,
            client_mode=ctx.options.blocklist_log_client,  # type: ignore[arg-type]
            with_url=ctx.options.blocklist_log_url,
        )
        if self._path is None:
            log.info(line)
            return
        try:
            self._follow_rotation(self._path)
            assert self._fd is not None
            os.write(self._fd, line.encode() + b"\n")
        except OSError as exc:
            log.warning(f"blocklist: cannot write the block log: {exc.strerror or exc}")

    def _open(self, path: str) -> None:
        # The directory is made as systemd's LogsDirectory= would (a missing one used to
        # stop the proxy with a traceback); O_APPEND: whole lines from several proxy
        # processes never interleave.
        if directory := os.path.dirname(path):
            os.makedirs(directory, mode=0o750, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o640)
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)

    def _follow_rotation(self, path: str) -> None:
        """Reopen ``path`` when it no longer names the open file: logrotate renamed it (its
        default) or someone deleted it; the lines must go to the path, not the old file."""
        try:
            stat = os.stat(path)
            current = (stat.st_dev, stat.st_ino) == self._identity
        except FileNotFoundError:
            current = False
        if not current or self._fd is None:
            self._close()
            self._open(path)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ConnectionLog(logging.Filter):
    """Keeps mitmproxy's per-connection lines (client and server connects, TLS handshake
    warnings, each naming a destination) out of the log unless the operator asks."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = False

    def load(self, loader) -> None:
        loader.add_option(
            "blocklist_log_connections",
            bool,
            False,
            "Log mitmproxy's per-connection lines (client connect, server connect HOST, TLS "
            "handshake warnings): a record of every destination each client visits. Off by "
            "default, so that the proxy keeps no browsing log; errors are always logged.",
        )
        logging.getLogger(CONNECTION_LOGGER).addFilter(self)

    def configure(self, updated: set[str]) -> None:
        if "blocklist_log_connections" in updated:
            self.enabled = ctx.options.blocklist_log_connections

    def done(self) -> None:
        logging.getLogger(CONNECTION_LOGGER).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return self.enabled or record.levelno >= logging.ERROR
