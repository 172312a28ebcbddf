"""Where compiled lists live between the sync worker and the proxies.

A store keeps numbered versions of the compiled list (the snapshot bytes plus a little
metadata), one *active* pointer, small JSON state documents and larger blobs for the sync
worker, and named locks. DESIGN ("Data held in the store") fixes the protocol that makes it
safe for several publishers and many readers at once:

1. a version is written whole under a fresh number before anything points at it;
2. it is activated by one atomic pointer flip that only moves forward, so a slow or stale
   publisher can never re-activate an older list;
3. the flip is announced (Redis pub/sub; for files, the pointer file's change) and readers
   also poll the pointer, so a lost notice only delays a reload;
4. old versions are pruned, keeping the newest ``keep`` and always the active one.

Two backends share that contract: :class:`RedisStore` (shared by many proxy nodes) and
:class:`FileStore` (one box, no server). :func:`open_store` picks one from a store URL.
Every failure surfaces as :class:`StoreError` with one line an operator can act on.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from blocklist_addon.lists.store.base import (
    DATA_DIR_ENV,
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    SCHEMES,
    SYNCED_STATE,
    URL_FORMS,
    IncompleteVersion,
    Store,
    StoreError,
    VersionInfo,
)
from blocklist_addon.lists.store.file_store import FileStore, write_atomic

if TYPE_CHECKING:
    from blocklist_addon.lists.store.redis_store import RedisStore

__all__ = [
    "SCHEMES",
    "SYNCED_STATE",
    "SYSTEM_DATA_DIR",
    "URL_FORMS",
    "FileStore",
    "IncompleteVersion",
    "RedisStore",
    "Store",
    "StoreError",
    "VersionInfo",
    "default_data_dir",
    "open_store",
    "write_atomic",
]


def __getattr__(name: str) -> object:
    """``RedisStore`` on first use: redis-py costs every command and proxy start about 80 ms
    of imports, which the embedded store never needs."""
    if name == "RedisStore":
        from blocklist_addon.lists.store.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: A namespace is one Redis key component and one directory name, never a store's own.
_NAMESPACE = re.compile(r"(?!(?:versions|state|blob|lock)$)[a-z][a-z0-9-]{0,31}")


#: The data directory of a system install: the service user's home, which the install
#: step makes (docs/operators-guide.md). Once it exists every command uses it by default,
#: whoever runs it, so the sync, the proxy, blocklist-scan and blocklist-divert agree
#: without each being told (issue 25, item 7).
SYSTEM_DATA_DIR = pathlib.Path("/var/lib/blocklist-proxy")


def default_data_dir() -> pathlib.Path:
    """Where every command keeps the embedded store (when no store URL is given) and its
    local copies: ``$BLOCKLIST_DATA_DIR``; else :data:`SYSTEM_DATA_DIR` when it exists (a
    system install); else ``$XDG_DATA_HOME/blocklist-proxy``
    (``~/.local/share/blocklist-proxy``: a checkout used without installing)."""
    if configured := os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(configured)
    if SYSTEM_DATA_DIR.is_dir():
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".local" / "share"
    return base / "blocklist-proxy"


def open_store(
    url: str | None = None,
    *,
    keep: int = 5,
    prefix: str = "blocklist:",
    namespace: str | None = None,
) -> Store:
    """Open the store named by a store URL (DESIGN "Store URLs"); None is the embedded store
    in :func:`default_data_dir`. Nothing is contacted until the first operation.

    ``namespace`` opens a separate store of the same kind inside it, with its own versions,
    pointer, announcements, state and locks: a list of another kind (``"hashes"``) or the
    diversion set (``"divert"``) lives beside the URL list without touching it (Redis keys
    under ``blocklist:<namespace>:``, a ``<namespace>/`` directory of the file store).

    A Redis password not in the URL comes from ``$BLOCKLIST_REDIS_PASSWORD`` or the file
    named by ``$BLOCKLIST_REDIS_PASSWORD_FILE``, so that it never has to be on a command line.
    ``redis+sentinel://`` URLs (``store/sentinel.py``) follow a primary across failovers.
    """
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise StoreError(f"invalid store namespace {namespace!r}: use a-z, 0-9 and -")
    if url is None:
        base = default_data_dir()
        return FileStore(base if namespace is None else base / namespace, keep=keep)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"):
        try:
            parts = urlsplit(url)
            in_url = parts.password or dict(parse_qsl(parts.query)).get("password")
        except ValueError:
            raise StoreError(f"invalid redis URL {scheme}://...: cannot parse it") from None
        password = None if in_url else _password_from_env()  # redis-py reads the URL's
        if (in_url or password or "").startswith(PLACEHOLDER):
            source = "the store URL" if in_url else f"${PASSWORD_ENV}(_FILE)"
            raise StoreError(
                f"the Redis password from {source} is still the shipped placeholder "
                f"({PLACEHOLDER}...): make a real one (openssl rand -hex 32) and put its hash "
                "in Redis' ACL file (docs/operators-guide.md)"
            )
        if namespace is not None:
            prefix = f"{prefix}{namespace}:"
        from blocklist_addon.lists.store.redis_store import RedisStore

        return RedisStore(url, keep=keep, prefix=prefix, password=password)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StoreError(f"invalid file store URL {url!r}: use file:///absolute/path/to/dir")
        path = pathlib.Path(unquote(parts.path))
        return FileStore(path if namespace is None else path / namespace, keep=keep)
    shown = f"scheme {scheme!r}" if scheme else "without a scheme"
    raise StoreError(f"unsupported store URL {shown}: use one of {', '.join(SCHEMES)}")


#: How the passwords and hashes deploy/ ships as placeholders begin; never a real password.
PLACEHOLDER = "CHANGE-ME"


def _password_from_env() -> str | None:
    if password := os.environ.get(PASSWORD_ENV):
        return password
    if path := os.environ.get(PASSWORD_FILE_ENV):
        try:
            return pathlib.Path(path).read_text().rstrip("\r\n") or None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StoreError(f"cannot read ${PASSWORD_FILE_ENV} {path}: {reason}") from None
    return None
