"""Hostile-URL benchmark: the worst case of the embedded-URL search and of ``match``.

Every 64 KiB shape of ``tests/test_embedded.py``'s adversarial set (marker floods, nested
escapes, dot-segment padding, base64 and hex chains, ideographic hosts...) is searched by
``embedded_urls`` and matched whole by ``Blocklist.match`` against a small list whose hosts the
shapes mention but whose pages they never name (the worst case: nothing ends the search), timed
by this thread's CPU time, best of ``--rounds``. The test bounds the output (linear in the URL's
length); this measures what a proxy pays for one such request. The reference,
``urllib.parse.urlsplit`` plus ``unquote`` of the same URL, is printed beside each shape; the
figure that matters is the worst time, since one hostile request costs that.

    .venv/bin/python bench/adversarial.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from blocklist_addon import Blocklist
from blocklist_addon.urls.embedded import embedded_urls
from testlab.adversarial import ADVERSARIAL

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    blocklist = Blocklist.from_entries(LIST)
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'shape':>22} {'KiB':>5} {'split ms':>9} {'embedded ms':>12} {'match ms':>9}")
    worst = {"embedded": (0.0, ""), "match": (0.0, "")}
    for name, url in ADVERSARIAL.items():
        split = best(lambda u=url: unquote(urlsplit(u).query), args.rounds)
        found = best(lambda u=url: embedded_urls(u), args.rounds)
        matched = best(lambda u=url: blocklist.match(u), args.rounds)
        worst["embedded"] = max(worst["embedded"], (found, name))
        worst["match"] = max(worst["match"], (matched, name))
        kib = len(url) / 1024
        print(f"{name:>22} {kib:5.0f} {split:9.2f} {found:12.1f} {matched:9.1f}")
    for what, (ms, name) in worst.items():
        print(f"worst {what}: {ms:.1f} ms ({name})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
