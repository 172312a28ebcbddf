"""Secrets kept in files (bearer tokens, keys) and where they may be sent: one check for
every such file in the project, so that the proxy, the sync and blocklist-divert refuse the
same things with the same words.

A secret file is read only when nobody but its owner could have read or replaced it: not
through a symbolic link (whoever owns the link can re-point it), a regular file, owned by
the user reading it (or root, who could replace anything anyway), and neither readable nor
writable by its group or others (the rule ssh applies to its keys). The refusal names the
file and the command that fixes it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import re
import stat

__all__ = ["SecretFileError", "is_loopback", "read_private", "read_token"]

#: A secret file is small; this much is read at most.
MAX_BYTES = 64 * 1024
# A bearer token goes into a header: visible ASCII only (no CR/LF to smuggle headers).
_TOKEN = re.compile(r"[\x21-\x7e]+")


class SecretFileError(ValueError):
    """A secret file that cannot be read or must not be trusted; the message says why and
    what to do."""


def read_private(path: str | os.PathLike[str], what: str, *, group_may_read: bool = False) -> bytes:
    """The bytes of a secret file (``what`` names it in messages: "key file"); raises
    SecretFileError when it is missing, a symbolic link, not a regular file, another user's,
    or open to its group (unless ``group_may_read``: reading only) or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretFileError(
                f"{what} {path} is a symbolic link: name the file itself (whoever owns a "
                "link can point it elsewhere)"
            ) from None
        raise SecretFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        _check(path, what, status, group_may_read)
        return file.read(MAX_BYTES)


def _check(
    path: str | os.PathLike[str], what: str, status: os.stat_result, group_may_read: bool
) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise SecretFileError(f"{what} {path} is not a regular file")
    me = os.geteuid()
    if status.st_uid not in (me, 0):
        raise SecretFileError(
            f"{what} {path} is owned by uid {status.st_uid}, not by the user reading it "
            f"(uid {me}) or root: chown {_user(me)} {path}"
        )
    mode = status.st_mode
    for bit, words in (  # writable first: who can write it can replace the secret
        (stat.S_IWOTH, "writable by everyone"),
        (stat.S_IWGRP, "writable by its group"),
        (stat.S_IROTH, "readable by everyone"),
        (0 if group_may_read else stat.S_IRGRP, "readable by its group"),
    ):
        if mode & bit:
            raise SecretFileError(f"{what} {path} is {words}: chmod 600 {path}")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_token(
    path: str | os.PathLike[str], what: str = "token file", *, private: bool = True
) -> str:
    """A bearer token from a file, stripped; SecretFileError when it cannot be read, is not
    private (read_private; ``private=False`` skips that check, for the sync's feed tokens,
    which the compose kit mounts 0644 for its containers' users), is empty, or holds what an
    HTTP header must not (whitespace, CR/LF, non-ASCII)."""
    if private:
        data = read_private(path, what)
    else:
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_BYTES)
        except OSError as exc:
            raise SecretFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = "\n"
    if not token:
        raise SecretFileError(f"{what} {path} is empty")
    if not _TOKEN.fullmatch(token):
        raise SecretFileError(
            f"{what} {path} holds whitespace or characters not allowed in an HTTP header"
        )
    return token


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: localhost, 127.0.0.0/8 or ::1,
    the only places a secret may go over plain http://."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
