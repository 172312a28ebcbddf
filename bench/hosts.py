"""Host benchmark: what reading an internationalised host costs, as ratios measured in one run.

Per host, ``canonical_host`` (WHATWG's domain to ASCII by ada, urls/hosts.py) against
``urllib.parse.urlsplit`` of ``http://<host>/`` and against itself with the IDNA step it
had before issue 21 (UTS 46 mapping and the idna package's ``alabel``, copied below),
in alternating rounds by CPU time; then the worst 64 KiB hosts, in milliseconds (no target
here: the matcher's bound is bench/adversarial.py's). Numbers of distinct hosts are unique
per round, so no cache hides work.

    .venv/bin/python bench/hosts.py [--hosts 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
from collections.abc import Callable

import idna

from blocklist_addon.urls import canonical
from blocklist_addon.urls.canonical import canonical_host

KIB64 = 64 * 1024


def idna_before(host: str) -> str:
    """canonical._idna before issue 21, verbatim: UTS 46 mapping, then IDNA2008 validity
    through ``idna.alabel``; a label it refused stayed escaped UTF-8."""
    try:
        text = host.encode("latin-1").decode("utf-8")
        text = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (UnicodeError, idna.IDNAError, ValueError):
        text = None
    if text is None or "%" in text:
        return host.encode("latin-1").lower().decode("latin-1")
    labels = []
    for label in text.split("."):
        if label.isascii():
            labels.append(label.lower())
            continue
        try:
            labels.append(idna.alabel(label).decode("ascii"))
        except (UnicodeError, idna.IDNAError, ValueError):
            labels.append(label.encode("utf-8").decode("latin-1"))
    return ".".join(labels)


SHAPES: dict[str, Callable[[int], str]] = {
    "ascii": lambda i: f"www{i}.example.test",
    "latin": lambda i: f"b\u00fccher{i}.example.test",
    "emoji": lambda i: f"\u2603{i}.example.test",
    "cjk": lambda i: f"\u4f8b\u3048{i}\u3002\u30c6\u30b9\u30c8",
    "refused": lambda i: f"a\u05d0{i}.example.test",  # Bidi: browsers refuse it
}


def per_call_ns(functions: dict[str, Callable[[str], object]], hosts: list[str], rounds: int):
    """Best CPU time a call over ``rounds`` rounds; "before" runs canonical_host with the
    IDNA step it had before issue 21 put in for its round (the rest is today's code)."""
    best = dict.fromkeys(functions, float("inf"))
    now = canonical._idna
    for _ in range(rounds):
        for name, function in functions.items():
            canonical._idna = idna_before if name == "before" else now
            try:
                start = time.process_time()
                for host in hosts:
                    function(host)
                best[name] = min(best[name], time.process_time() - start)
            finally:
                canonical._idna = now
    return {name: best[name] / len(hosts) * 1e9 for name in functions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    columns = ("urlsplit", "before", "now", "now/split")
    print(f"{'host':10}" + "".join(f" {c:>10}" for c in columns) + f" {'now/before':>11}")
    for shape, make in SHAPES.items():
        hosts = [make(i) for i in range(args.hosts)]
        ns = per_call_ns(
            {
                "urlsplit": lambda h: urllib.parse.urlsplit(f"http://{h}/"),
                "before": canonical_host,
                "now": canonical_host,
            },
            hosts,
            args.rounds,
        )
        print(
            f"{shape:10} {ns['urlsplit']:>8.0f}ns {ns['before']:>8.0f}ns {ns['now']:>8.0f}ns"
            f" {ns['now'] / ns['urlsplit']:>9.1f}x {ns['now'] / ns['before']:>10.2f}x"
        )

    print("\nworst 64 KiB hosts (one call each):")
    worst = {
        "one label of distinct CJK": "".join(chr(0x4E00 + i) for i in range(KIB64 // 3)),
        "1 KiB labels of distinct CJK": ".".join(
            "".join(chr(0x4E00 + i * 341 + j) for j in range(341)) for i in range(KIB64 // 1024)
        ),
        "refused labels of 59 code points": ".".join(
            "\u0301" + "".join(chr(0x4E00 + i * 58 + j) for j in range(58))
            for i in range(KIB64 // 177)
        ),
        "short labels": "\u00fc." * (KIB64 // 3) + "test",
        "soft hyphens around a label": "a" + "\u00ad" * (KIB64 // 2 - 1),
    }
    now = canonical._idna
    for name, host in worst.items():
        took = []
        for idna_step in (idna_before, now):
            canonical._idna = idna_step
            try:
                start = time.process_time()
                canonical_host(host)
                took.append((time.process_time() - start) * 1e3)
            finally:
                canonical._idna = now
        print(f"  {name:34} before {took[0]:7.1f} ms   now {took[1]:7.1f} ms")


if __name__ == "__main__":
    main()
