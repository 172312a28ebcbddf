"""Resolving the listed hosts: A and AAAA, following CNAMEs, through the configured resolvers.

dnspython's asyncio resolver, one question per (host, type), at most ``concurrency`` hosts at
once, each question bounded by ``timeout`` and the whole run by ``deadline``: a host still
unanswered at the deadline counts as timed out (the gates then keep its last addresses for
the grace period). Nothing is cached between runs; TTLs do not matter because the set is
re-resolved on its own schedule.

A recursive resolver answers a CNAME with the whole chain; when an answer stops at a CNAME
(an authoritative server that does not hold the target), the target is asked next, up to
``MAX_CNAMES`` names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from blocklist_addon.ops.progress import NO_PROGRESS, Progress
from divert import DivertError

__all__ = ["Answer", "Lookup", "Resolution"]

MAX_CNAMES = 8
#: EDNS UDP size: answers of a few dozen addresses fit without a TCP retry.
EDNS_PAYLOAD = 1232

type Status = Literal["ok", "nodata", "nxdomain", "servfail", "timeout", "error"]
#: Statuses that say the resolvers could not answer (not that the name has no address).
FAILURES: frozenset[str] = frozenset({"servfail", "timeout", "error"})


@dataclass(frozen=True)
class Answer:
    """One family's answer: "ok" with addresses, or why there are none."""

    status: Status
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolution:
    v4: Answer
    v6: Answer

    @property
    def failed(self) -> bool:
        return self.v4.status in FAILURES or self.v6.status in FAILURES


TIMED_OUT = Resolution(Answer("timeout"), Answer("timeout"))


class Lookup:
    """Resolves many hosts with one dnspython resolver."""

    def __init__(
        self,
        resolvers: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = 3.0,
        concurrency: int = 100,
    ) -> None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=not resolvers)
        except dns.resolver.NoResolverConfiguration:
            raise DivertError(
                "no resolvers configured and /etc/resolv.conf names none: set resolvers"
            ) from None
        if resolvers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in resolvers]
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None
        resolver.use_edns(0, 0, EDNS_PAYLOAD)
        self.resolver = resolver
        self.timeout = timeout
        self.concurrency = concurrency

    async def resolve_many(
        self, hosts: Sequence[str], *, deadline: float, progress: Progress = NO_PROGRESS
    ) -> dict[str, Resolution]:
        """Every host's resolution; those unanswered ``deadline`` seconds from now time out."""
        end = time.monotonic() + deadline
        slots = asyncio.Semaphore(self.concurrency)
        progress.phase("resolving", total=len(hosts), unit="hosts")
        results: dict[str, Resolution] = {}

        async def one(host: str) -> None:
            async with slots:
                results[host] = await self.resolve(host, end=end)
            progress.advance(1)

        tasks = [asyncio.create_task(one(h)) for h in hosts]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, end - time.monotonic()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return {h: results.get(h, TIMED_OUT) for h in hosts}

    async def resolve(self, host: str, *, end: float | None = None) -> Resolution:
        """A and AAAA of one host, asked at the same time."""
        end = time.monotonic() + 2 * self.timeout if end is None else end
        try:
            name = dns.name.from_text(host)
        except dns.exception.DNSException:
            return Resolution(Answer("error"), Answer("error"))
        v4, v6 = await asyncio.gather(
            self._family(name, dns.rdatatype.A, end), self._family(name, dns.rdatatype.AAAA, end)
        )
        return Resolution(v4, v6)

    async def _family(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, end: float
    ) -> Answer:
        seen = {name}
        for _ in range(MAX_CNAMES):
            left = end - time.monotonic()
            if left <= 0:
                return Answer("timeout")
            try:
                answer = await self.resolver.resolve(
                    name, rdtype, lifetime=min(self.timeout, left), search=False,
                    raise_on_no_answer=False,
                )  # fmt: skip
            except dns.resolver.NXDOMAIN:
                return Answer("nxdomain")
            except dns.resolver.LifetimeTimeout:
                return Answer("timeout")
            except dns.resolver.NoNameservers:
                return Answer("servfail")
            except dns.exception.DNSException:
                return Answer("error")
            if answer.rrset is not None:
                return Answer("ok", tuple(sorted({r.address for r in answer.rrset})))
            target = answer.canonical_name
            if target in seen:  # no data at the end of the chain (or a loop)
                return Answer("nodata")
            seen.add(target)
            name = target
        return Answer("error")  # a chain longer than MAX_CNAMES
