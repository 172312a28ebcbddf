"""systemd's readiness protocol (sd_notify), for ``Type=notify`` units.

The proxy starts listening before its list is loaded; it tells systemd ``READY=1`` only once
the list is enforced, so that units ordered after it (and ``systemctl start``, which waits)
see a proxy that blocks. Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["ready", "send", "stopping"]

log = logging.getLogger(__name__)


def send(*fields: str) -> bool:
    """Send ``KEY=value`` fields to the service manager; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning(f"blocklist: cannot notify systemd at {address!r}: {exc.strerror or exc}")
        return False
    return True


def ready(status: str) -> bool:
    return send("READY=1", f"STATUS={status}")


def stopping() -> bool:
    return send("STOPPING=1")
