"""The sanity gates between DNS answers and the diversion set (pure: no I/O, no clock).

What a listed host's DNS says is attacker-controlled: Cleanfeed's operators learnt that a
listed site could point its name at a busy third party and have that party's traffic
diverted (or the proxy overloaded). So, per host:

- addresses in a protected prefix (``protect.Protected``) are never diverted; an answer
  that had nothing else is refused;
- an answer with more than ``max_per_host`` addresses is refused whole (a fan-out over a
  CDN or a provider's range);
- a family (A or AAAA) without a usable answer (timeout, SERVFAIL, NXDOMAIN, no data, or
  refused above) keeps the host's previous addresses of that family until ``grace``
  seconds after its last accepted answer, then loses them;

and for the whole set:

- more than ``max_total`` addresses: refused;
- more than ``max_growth`` times the previous set (and more than ``growth_allowance``
  addresses more): refused unless forced;
- more than ``max_failed`` of the hosts without an answer from the resolvers: refused
  unless forced (broken resolvers must not look like an empty list);
- more than ``max_vanished`` of the still-listed hosts that had addresses losing all of them
  in one run (and more than ``vanished_allowance`` hosts): refused unless forced. Listed
  hosts die one by one; all at once is a resolver that filters them (RPZ answers NXDOMAIN
  for exactly these names) or lies, which must not silently empty the set. Hosts the list
  no longer carries leave without counting.

A refused set changes nothing: the previous set stays active. Every decision names the
host by its keyed digest, never by name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.lookup import Answer, Resolution
from divert.protect import Protected

__all__ = ["STATES", "Decision", "Outcome", "decide", "literal"]

#: A host's state in the status, from the most to the least notable.
STATES = (
    "refused",
    "protected",
    "kept",
    "expired",
    "timeout",
    "servfail",
    "error",
    "nxdomain",
    "nodata",
    "ok",
)
#: Decisions that are refusals (logged as warnings); the others are informational.
REFUSALS = frozenset({"protected", "per-host", "total", "growth", "failed", "vanished"})


@dataclass(frozen=True)
class Decision:
    """One gate decision. ``digest`` is "" for decisions about the whole set."""

    gate: str  # protected, per-host, kept, expired, total, growth, failed, vanished
    detail: str
    digest: str = ""

    @property
    def refusal(self) -> bool:
        return self.gate in REFUSALS

    def line(self) -> str:
        who = f"host {self.digest}" if self.digest else "set"
        return f"{who}: {self.gate}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"gate": self.gate, "detail": self.detail, "digest": self.digest}


@dataclass
class Outcome:
    dset: DiversionSet
    #: digest -> {"4": time of the last accepted A answer, "6": ... AAAA}, for the next run
    memory: dict[str, dict[str, float]]
    states: dict[str, str]
    decisions: list[Decision] = field(default_factory=list)
    refused: Decision | None = None  # the whole set refused (the previous stays)
    failed: int = 0  # hosts the resolvers gave no answer for
    held: int = 0  # hosts with addresses in the previous set, still listed
    vanished: int = 0  # ... of which left without any address

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state] = counts.get(state, 0) + 1
        return {s: counts[s] for s in STATES if s in counts}


def literal(address: str) -> Resolution:
    """An IP-literal entry as if its host had resolved to exactly that address."""
    addr = ipaddress.ip_address(address.strip("[]"))
    found, none = Answer("ok", (addr.compressed,)), Answer("nodata")
    return Resolution(found, none) if addr.version == 4 else Resolution(none, found)


def decide(
    answers: Mapping[str, Resolution],
    *,
    previous: DiversionSet | None,
    memory: Mapping[str, Mapping[str, float]],
    protected: Protected,
    config: DivertConfig,
    now: float,
    force: bool = False,
    literals: frozenset[str] = frozenset(),
) -> Outcome:
    """The new set from this run's ``answers`` (by host digest; ``literals`` are the digests
    of IP-literal entries) and the previous set, with every gate applied."""
    out = Outcome(DiversionSet.EMPTY, {}, {})
    hosts: dict[str, list[str]] = {}
    since = previous.created_at if previous is not None else now
    for digest, resolution in answers.items():
        before = previous.hosts.get(digest, ()) if previous is not None else ()
        addresses, state = _host(
            digest, resolution, before, memory.get(digest, {}), since, protected, config, now, out
        )
        out.states[digest] = state
        if addresses:
            hosts[digest] = addresses
        if before:
            out.held += 1
            out.vanished += not addresses
        if resolution.failed and digest not in literals:
            out.failed += 1
    out.dset = DiversionSet.build(hosts, created_at=now)
    out.refused = _whole(out, previous, len(answers) - len(literals), config, force)
    if out.refused is not None:
        out.decisions.append(out.refused)
    return out


def _host(
    digest: str,
    resolution: Resolution,
    before: tuple[str, ...],
    memory: Mapping[str, float],
    since: float,
    protected: Protected,
    config: DivertConfig,
    now: float,
    out: Outcome,
) -> tuple[list[str], str]:
    """One host's addresses for the new set, and its state; decisions go to ``out``."""
    fresh = {
        "4": list(resolution.v4.addresses) if resolution.v4.status == "ok" else [],
        "6": list(resolution.v6.addresses) if resolution.v6.status == "ok" else [],
    }
    blocked = [(a, n) for f in fresh.values() for a in f if (n := protected.match(a))]
    total = sum(map(len, fresh.values()))
    states = set()
    if blocked:
        shown = ", ".join(f"{a} in {n}" for a, n in blocked[:4])
        more = f" and {len(blocked) - 4} more" if len(blocked) > 4 else ""
        out.decisions.append(
            Decision(
                "protected",
                f"{len(blocked)} of {total} addresses in protected prefixes ({shown}{more}): "
                "not diverted",
                digest,
            )
        )
        states.add("protected")
        for family in fresh.values():
            family[:] = [a for a in family if not protected.match(a)]
    allowed = sum(map(len, fresh.values()))
    refused = allowed > config.max_per_host
    if refused:
        out.decisions.append(
            Decision(
                "per-host",
                f"{allowed} addresses, over max_per_host {config.max_per_host}: none diverted",
                digest,
            )
        )
    if refused or (blocked and not allowed):
        states.add("refused")

    addresses: list[str] = []
    unanswered = set()
    kept: dict[str, float] = {}
    answers = {"4": resolution.v4, "6": resolution.v6}
    for family, answer in answers.items():
        if fresh[family] and not refused:
            addresses += fresh[family]
            kept[family] = now
            continue
        why = "refused by a gate" if answer.status == "ok" else answer.status
        previous = [a for a in before if str(ipaddress.ip_address(a).version) == family]
        if not previous:
            if answer.status != "ok":
                unanswered.add(answer.status)
            continue
        last = memory.get(family, since)
        name = "A" if family == "4" else "AAAA"
        age = _duration(now - last)
        if now - last <= config.grace:
            still = [a for a in previous if not protected.match(a)]
            addresses += still
            kept[family] = last
            states.add("kept")
            out.decisions.append(
                Decision(
                    "kept",
                    f"{name} {why}: keeps its {len(still)} previous address(es), last "
                    f"answered {age} ago (grace {_duration(config.grace)})",
                    digest,
                )
            )
        else:
            states.add("expired")
            out.decisions.append(
                Decision(
                    "expired",
                    f"{name} {why} for {age}, beyond grace {_duration(config.grace)}: "
                    f"its {len(previous)} previous address(es) removed",
                    digest,
                )
            )
    if kept:
        out.memory[digest] = kept
    if not addresses:
        states |= unanswered
    state = next((s for s in STATES if s in states), "ok")
    return addresses, state


def _whole(
    out: Outcome,
    previous: DiversionSet | None,
    resolvable: int,
    config: DivertConfig,
    force: bool,
) -> Decision | None:
    """The decision refusing the whole new set, or None when it may be published."""
    count = len(out.dset)
    if count > config.max_total:
        return Decision(
            "total", f"{count:,} addresses, over max_total {config.max_total:,}: not published"
        )
    if force:
        return None
    if resolvable and out.failed / resolvable > config.max_failed:
        return Decision(
            "failed",
            f"{out.failed:,} of {resolvable:,} hosts got no answer from the resolvers "
            f"(timeout, SERVFAIL), over max_failed {config.max_failed:g}: are the resolvers "
            "working? (--force to publish anyway)",
        )
    if previous is not None:
        before = len(previous)
        limit = max(before * config.max_growth, before + config.growth_allowance)
        if count > limit:
            ratio = f"{count / before:.1f}x" if before else "from nothing"
            return Decision(
                "growth",
                f"{count:,} addresses, {ratio} the previous {before:,} (max_growth "
                f"{config.max_growth:g}, growth_allowance {config.growth_allowance}): not "
                "published (--force to accept)",
            )
    if out.vanished > max(out.held * config.max_vanished, config.vanished_allowance):
        return Decision(
            "vanished",
            f"{out.vanished:,} of the {out.held:,} listed hosts that had addresses lost all of "
            f"them in one run (max_vanished {config.max_vanished:g}, vanished_allowance "
            f"{config.vanished_allowance}): do the resolvers filter or rewrite these names? "
            "(--force to publish anyway)",
        )
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
