"""Hostile-URL benchmark: the worst case of the embedded-URL search and of ``match``.

Every 64 KiB shape of ``tests/test_embedded.py``'s adversarial set (marker floods, nested
escapes, dot-segment padding, base64 and hex chains, ideographic hosts...) is searched by
``embedded_urls`` and matched whole by ``Blocklist.match`` against a small list whose hosts the
shapes mention but whose pages they never name (the worst case: nothing ends the search), timed
by this thread's CPU time, best of ``--rounds``. The tests bound the output (linear in the URL's
length) and the lookups (``tests/test_matcher_bounds.py``); this measures what a proxy pays for
one such request, and prints the lookups ``match`` made (host-index probes and expression
digests, counted by ``testlab.adversarial.CountingBlocklist``) per byte. The reference, what
a web framework does to read the same URL (``urllib.parse.urlsplit``, ``unquote`` of its
path and ``parse_qsl`` of its query), is printed beside each shape; since it costs next
to nothing on most shapes, ``match`` is also given as a multiple of it on the "params"
shape (7,645 parameters, the costliest for it), so that a loaded machine moves that figure
less than the times. The figure that matters is the worst time, since one hostile request
costs that. "no depths" is ``match`` on the same list as a snapshot without directory depths
(one written by a sync that passes none): every directory of a listed host is walked.

    .venv/bin/python bench/adversarial.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from blocklist_addon import Blocklist
from blocklist_addon.urls.embedded import embedded_urls
from blocklist_addon.urls.matcher import compile_entry, expression_of
from blocklist_addon.urls.snapshot import Snapshot, expression_digest, host_key
from testlab.adversarial import ADVERSARIAL, CountingBlocklist

#: Hosts the shapes carry, with pages they never name: every candidate is looked up and none
#: matches, so nothing ends the search early (a hit would return at once).
LIST = ["listed.test/x.html", "a.test/none.html", "h1.test/y", "h7.test/z", "h.test/none"]


def best(work: Callable[[], object], rounds: int) -> float:
    """The least thread CPU time of ``rounds`` calls, in milliseconds."""
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        work()
        times.append(time.thread_time() - start)
    return min(times) * 1000


def reference(url: str) -> object:
    """What a web framework does to read a URL: split it, unquote its path, parse its query."""
    parts = urlsplit(url)
    return unquote(parts.path), parse_qsl(parts.query, keep_blank_values=True)


def without_depths(entries: list[str]) -> Blocklist:
    """The list as a snapshot with no directory depths (four items an entry)."""
    compiled = [c for c in map(compile_entry, entries) if c is not None]
    return Blocklist(
        Snapshot.build(
            (expression_digest(expression_of(c)), host_key(c.host), "default", None)
            for c in compiled
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    blocklist = Blocklist.from_entries(LIST)
    no_depths = without_depths(LIST)
    counting = CountingBlocklist.from_entries(LIST)
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    print(f"lookups: {'compiled' if blocklist._compiled is not None else 'Python (not built)'}")
    unit = best(lambda: reference(ADVERSARIAL["params"]), args.rounds)
    print(f"unit: the reference on 'params', {unit:.2f} ms")
    print(
        f"{'shape':>26} {'KiB':>4} {'ref ms':>7} {'embedded ms':>11} {'match ms':>8}"
        f" {'units':>6} {'lookups':>7} {'a byte':>6} {'no depths ms':>12}"
    )
    worst = {"embedded": (0.0, ""), "match": (0.0, ""), "match, no depths": (0.0, "")}
    for name, url in ADVERSARIAL.items():
        ref = best(lambda u=url: reference(u), args.rounds)
        found = best(lambda u=url: embedded_urls(u), args.rounds)
        matched = best(lambda u=url: blocklist.match(u), args.rounds)
        undepthed = best(lambda u=url: no_depths.match(u), args.rounds)
        worst["match, no depths"] = max(worst["match, no depths"], (undepthed, name))
        counting.reset()
        counting.match(url)
        worst["embedded"] = max(worst["embedded"], (found, name))
        worst["match"] = max(worst["match"], (matched, name))
        kib = len(url) / 1024
        ratio = matched / unit
        print(
            f"{name:>26} {kib:4.0f} {ref:7.2f} {found:11.1f} {matched:8.1f} {ratio:6.1f}"
            f" {counting.lookups:7,} {counting.lookups / len(url):6.3f} {undepthed:12.1f}"
        )
    for what, (ms, name) in worst.items():
        print(f"worst {what}: {ms:.1f} ms, {ms / unit:.1f} units ({name})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
