"""The active list's hostnames, encrypted, in the store namespace ``divert``.

The sync keeps each feed's hosts (and IP-literal entries) beside its compiled entries, and
after every run, suppression and rollback rebuilds the hosts of the *active list*: the union
of its feeds' hosts, less any host the active snapshot no longer has an entry on (so a host
whose every entry is suppressed, or whose feed was removed, is not diverted; a failed feed's
last good hosts stay, like its entries). The resolver reads that one document.

Everything hostname-bearing is a Fernet token (``keyfile.HostKey``); the state documents
beside them hold counts, times, feed names and the key's id only. Store keys::

    blob  feed-hosts:<feed>   token of that feed's hosts          state  feed-hosts:<feed>
    blob  hosts               token of the active list's hosts    state  hosts

Plaintext inside a token: ``BLHOSTS1\\n`` then the hosts, one a line, zlib-compressed.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from blocklist_addon.lists.hostkey import HostKey, HostKeyError
from blocklist_addon.lists.store import Store
from blocklist_addon.urls.snapshot import Snapshot, host_key

__all__ = ["ActiveHosts", "HostStore", "open_hosts", "seal"]

MAGIC = b"BLHOSTS1\n"
ACTIVE = "hosts"


def feed_key(name: str) -> str:
    return f"feed-hosts:{name}"


def seal(key: HostKey, hosts: Iterable[str]) -> bytes:
    text = "\n".join(sorted(set(hosts))).encode("utf-8")
    return key.encrypt(zlib.compress(MAGIC + text, 6))


def open_hosts(key: HostKey, token: bytes) -> list[str]:
    """The hosts in a token (HostKeyError when the key is wrong or the token damaged)."""
    try:
        plain = zlib.decompress(key.decrypt(token))
    except zlib.error:
        raise HostKeyError("stored hostnames are damaged (not compressed data)") from None
    if not plain.startswith(MAGIC):
        raise HostKeyError("stored hostnames are not in a format this version reads")
    body = plain[len(MAGIC) :].decode("utf-8")
    return body.split("\n") if body else []


@dataclass(frozen=True)
class ActiveHosts:
    """The active list's hosts, decrypted (in memory only), with what they were built from."""

    hosts: Sequence[str]
    state: dict[str, Any]

    @property
    def list_checksum(self) -> str | None:
        return self.state.get("list")


class HostStore:
    """Hostnames in the ``divert`` namespace store (``open_store(url, namespace="divert")``)."""

    def __init__(self, store: Store, key: HostKey) -> None:
        self.store = store
        self.key = key

    async def has_feed(self, name: str) -> bool:
        """Whether a feed's hosts are kept under this key: otherwise the sync must fetch
        the feed whole (no 304) to learn them."""
        state = await self.store.get_state(feed_key(name))
        return bool(state) and state.get("key") == self.key.key_id

    async def save_feed(self, name: str, hosts: Iterable[str]) -> int:
        hosts = set(hosts)
        token = await asyncio.to_thread(seal, self.key, hosts)
        await self.store.set_blob(feed_key(name), token)
        state = {"hosts": len(hosts), "key": self.key.key_id, "changed": time.time()}
        await self.store.set_state(feed_key(name), state)
        return len(hosts)

    async def refresh(self, lists: Store, feeds: Sequence[str]) -> dict[str, Any] | None:
        """Rebuild the active list's hosts when the active list, a feed's hosts or the key
        changed since last time. Returns the new state, or None when nothing changed (or
        no list is active)."""
        active = await lists.active()
        if active is None or not feeds:  # no feeds known here (suppress without --config)
            return None
        changed = {}
        for name in feeds:
            state = await self.store.get_state(feed_key(name)) or {}
            ok = state.get("key") == self.key.key_id
            changed[name] = state.get("changed") if ok else None
        inputs = {"list": active.checksum, "key": self.key.key_id, "feeds": changed}
        previous = await self.store.get_state(ACTIVE) or {}
        if previous.get("inputs") == inputs:
            return None
        loaded = await lists.load_active()
        if loaded is None:
            return None
        info, data = loaded
        snapshot = await asyncio.to_thread(Snapshot.from_bytes, data)
        hosts: set[str] = set()
        missing = []
        for name in feeds:
            token = await self.store.get_blob(feed_key(name)) if changed[name] else None
            if token is None:
                missing.append(name)
                continue
            hosts.update(await asyncio.to_thread(open_hosts, self.key, token))
        kept = [h for h in hosts if snapshot.has_host(host_key(h))]
        await self.store.set_blob(ACTIVE, await asyncio.to_thread(seal, self.key, kept))
        state = {
            "inputs": {**inputs, "list": info.checksum},
            "list": info.checksum,
            "list_version": info.version,
            "hosts": len(kept),
            "hostless_entries": snapshot.hostless,
            "feeds_without_hosts": missing,
            "key": self.key.key_id,
            "updated_at": time.time(),
        }
        await self.store.set_state(ACTIVE, state)
        return state

    async def state(self) -> dict[str, Any] | None:
        """What the active hosts were built from (counts and times; no key needed)."""
        return await self.store.get_state(ACTIVE)

    async def load_active(self) -> ActiveHosts:
        """Decrypt the active list's hosts; HostKeyError when there are none to read."""
        state = await self.store.get_state(ACTIVE)
        token = await self.store.get_blob(ACTIVE)
        if state is None or token is None:
            raise HostKeyError(
                "no hostnames stored: run blocklist-sync with --divert-key-file "
                "(or divert_key_file in its config) first"
            )
        if state.get("key") != self.key.key_id:
            raise HostKeyError(
                "the stored hostnames were written with another key: give blocklist-sync "
                "and blocklist-divert the same key file"
            )
        hosts = await asyncio.to_thread(open_hosts, self.key, token)
        return ActiveHosts(hosts, state)
