"""The hostname key: what lets the sync store the list's hostnames, and the resolver read
them back, without their ever being plaintext at rest.

``blocklist-divert keygen`` writes a Fernet key (AES-128-CBC + HMAC-SHA256, from
``cryptography``) to a file of mode 0600 and never overwrites one: losing the old key
silently would leave stored hostnames unreadable. The same key, through HMAC with fixed
labels, gives the opaque host digests that name hosts in the diversion set, the status and
the logs: without the key a digest cannot be tested against a guessed hostname.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from blocklist_addon.ops.credentials import SecretFileError, read_private

__all__ = ["KEY_FILE_ENV", "HostKey", "HostKeyError", "generate", "load"]


class HostKeyError(Exception):
    """The hostname key, or hostnames stored under it, cannot be used: one line an operator
    can act on, never holding a hostname (the sync and ``blocklist-divert`` both say it)."""


#: Names the key file when no option or config does (the sync and blocklist-divert both read it).
KEY_FILE_ENV = "BLOCKLIST_DIVERT_KEY_FILE"
#: Hex digits of a host digest: 64 bits, no collision among a million hosts in practice.
DIGEST_HEX = 16


@dataclass(frozen=True)
class HostKey:
    """A loaded key: encrypts, decrypts and digests hostnames."""

    raw: bytes = field(repr=False)  # the 32 key bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise HostKeyError("a hostname key is 32 bytes")

    @functools.cached_property
    def _fernet(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self.raw))

    @property
    def key_id(self) -> str:
        """Names the key in state documents without revealing it (rotation is detected)."""
        return self._mac(b"blocklist-divert key id v1").hex()[:DIGEST_HEX]

    def digest(self, host: str) -> str:
        """The opaque name of a host (or IP-literal entry) in sets, status and logs."""
        return hmac.new(self._digest_key, host.encode("utf-8"), hashlib.sha256).hexdigest()[
            :DIGEST_HEX
        ]

    @functools.cached_property
    def _digest_key(self) -> bytes:
        return self._mac(b"blocklist-divert host digest v1")

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise HostKeyError(
                "stored hostnames do not open with this key (another key, or damaged): "
                "run blocklist-sync with the key blocklist-divert uses"
            ) from None

    def _mac(self, label: bytes) -> bytes:
        return hmac.new(self.raw, label, hashlib.sha256).digest()


def generate(path: Path) -> HostKey:
    """Write a new key to ``path`` (mode 0600); HostKeyError if anything is already there."""
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise HostKeyError(
            f"{path} already exists: not overwritten (hostnames stored with it would become "
            "unreadable); remove it first to replace the key"
        ) from None
    except OSError as e:
        raise HostKeyError(f"cannot create {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return HostKey(base64.urlsafe_b64decode(key))


def load(path: Path) -> HostKey:
    """Read a key file; HostKeyError when it is missing, not a key, or not safe
    (credentials.read_private: a symbolic link, another user's but root's, writable by
    anyone but its owner, readable by everyone; whoever can replace the key can read what
    is stored with the new one)."""
    try:
        text = read_private(path, "key file", group_may_read=True).strip()
    except SecretFileError as e:
        raise HostKeyError(str(e)) from None
    try:
        raw = base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or base64.urlsafe_b64encode(raw) != text:
        raise HostKeyError(f"{path} is not a hostname key (make one: blocklist-divert keygen)")
    return HostKey(raw)
