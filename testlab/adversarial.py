"""Hostile URL shapes of about 64 KiB: marker floods, nested escapes, dot-segment padding,
base64 chains, ideographic hosts, the wrapper families' triggers repeated, hosts of
thousands of labels and paths of thousands of directories. ``tests/test_embedded.py``
bounds the search's output on each, ``tests/test_matcher_bounds.py`` the lookups ``match``
makes; ``bench/adversarial.py`` times them. Reserved names only."""

from __future__ import annotations

import base64

from blocklist_addon.urls.matcher import Blocklist
from blocklist_addon.urls.snapshot import Snapshot

__all__ = ["ADVERSARIAL", "CountingBlocklist", "N", "nested_base64"]

#: The size the shapes are built to.
N = 64 * 1024


def nested_base64(levels: int) -> str:
    """A URL in base64 in a redirector's URL in base64 ..., ``levels`` deep."""
    url = "http://a.test/x"
    for level in range(levels):
        url = f"http://r{level}.example.net/?u=" + base64.b64encode(url.encode()).decode()
    return url


#: A host of about 8 KiB: 4,090 one-letter labels above a listed host.
_HOST_8K = "a." * 4090 + "listed.test"

ADVERSARIAL = {
    "schemes": "http://r.example.net/?u=" + "http://" * (N // 7),
    "distinct hosts": "http://r.example.net/?u="
    + "".join(f"http://h{i}.test/" for i in range(N // 16)),
    "www": "http://r.example.net/" + "".join(f"www.h{i}.test/" for i in range(N // 14)),
    "bare values": "http://r.example.net/?" + "".join(f"a=h{i}.test&" for i in range(N // 12)),
    "protocol-relative": "http://r.example.net/?" + "=//" * (N // 3),
    "params": "http://r.example.net/?" + "".join(f"k{i}=v{i}&" for i in range(N // 10)),
    "nested %25": "http://r.example.net/?u=http%" + "25" * (N // 2) + "3A//listed.test/",
    "many %25": "http://r.example.net/?u=" + "%25" * (N // 3),
    "high bytes": "http://r.example.net/?u="
    + "".join(f"http://h{i}.test/%C3%A9%FF" for i in range(N // 24)),
    "long path": "http://r.example.net/?u=http://listed.test/" + "a" * N,
    "dot-padded": "http://r.example.net/?u=http://listed.test/" + "www.a/../" * (N // 9),
    "dot-padded hosts": "http://r.example.net/"
    + "".join(f"www.h{i}.test/../" for i in range(N // 32))
    + "a" * (N // 2),
    "base64 values": "http://r.example.net/?" + "a=aHR0cDovL2EudGVzdC8&" * (N // 22),
    "base64 nested": "http://r.example.net/?u="
    + base64.b64encode(
        (
            "http://r.example.net/?u=" + base64.b64encode(b"http://a.test/" * (N // 30)).decode()
        ).encode()
    ).decode(),
    "hex segments": "http://r.example.net" + "/687474703a2f2f612e74" * (N // 21),
    "proofpoint v3": "http://r.example.net/v3" + "/__http://a.test/*__;JQ!!" * (N // 25),
    "proofpoint v3 open": "http://r.example.net/v3/" + "__http:" * (N // 7),
    "path hosts": "http://r.example.net" + "/h.test" * (N // 7),
    "ideographic hosts": "http://r.example.net" + "/h\u3002test" * (N // 9),
    "dot-padded groups": "http://r.example.net/"
    + "".join(f"www.h{i}.test/../x/" for i in range(N // 34))
    + "a" * (N // 2),
    "dot-padded nested": "http://r.example.net/?u=http://listed.test/"
    + "www.a/" * (N // 12)
    + "../" * (N // 12),
    # the wrapper families of issue 21, their triggers repeated
    "split base64": "http://r.example.net" + "/aHR0cDovL2EudGVzdC9h" * (N // 21),
    "split base64 pieces": "http://r.example.net" + "/aH/R0/cD/ov" * (N // 12),
    "split base64 junk": "http://r.example.net/aHR0c/DovL/2EudGVzdC9h" + "/x" * (N // 2),
    "version tags": "http://r.example.net/?" + "u=a1aHR0cDovL2EudGVzdC8&" * (N // 24),
    "path parameters": "http://r.example.net" + "/RU=http%3A%2F%2Fa.test%2Fx" * (N // 27),
    "user info": "http://r.example.net/?u=" + "http://a.test%252F@" * (N // 19),
    "plain extensions": "http://r.example.net" + "/plain/http://a.test/x@png" * (N // 26),
    "mention words": "http://r.example.net" + "/tag/a.test/page/2" * (N // 18),
    "ssl values": "http://r.example.net/?" + "url=ssl:a.test/x&" * (N // 17),
    "base64 levels": nested_base64(22),
    # hosts of thousands of labels, paths of thousands of directories (issue 21, item 4)
    "one-letter labels": "http://" + "a." * (N // 2 - 10) + "listed.test/x",
    "one-letter labels embedded": "http://r.example.net/?u=http://"
    + "a." * (N // 2 - 20)
    + "listed.test/x",
    "seven 8 KiB hosts": "http://r.example.net/?"
    + "&".join(f"u{i}=http://{_HOST_8K}/x" for i in range(7)),
    "deep path": "http://listed.test/" + "a/" * (N // 2 - 10) + "x",
    "deep path embedded": "http://r.example.net/?u=http://listed.test/" + "a/" * (N // 2 - 20),
    "deep path escaped": "http://r.example.net/?u=http%3A%2F%2Flisted.test%2F"
    + "a%2F" * (N // 4 - 20),
    # eight URLs on a listed host, then 8 KiB of directories, seven times: each of the eight
    # candidates runs into the directories (no marker there ends it before the length cap)
    # and every directory of each is a digest, about 4 a byte
    "directory clusters": "http://r.example.net/?"
    + "".join("u=http://a.test/&" * 8 + f"{i}/" * 4096 for i in range(7)),
}


class CountingBlocklist(Blocklist):
    """A Blocklist that counts the lookups ``match`` makes: host-index probes (one per host
    name in each call of ``_hosts_listed``, and the bytes of those names, each hashed
    once) and expression digests (each digest of each call of ``_find``, all hashed). The
    compiled lookups (``compiled=True``, the default as in the proxy) count their own,
    the same way; the bench prints them, the tests bound them and hold the two to the same
    counts."""

    __slots__ = ("_counted", "_since")

    def __init__(self, snapshot: Snapshot, *, compiled: bool = True) -> None:
        super().__init__(snapshot, compiled=compiled)
        self._counted = [0, 0, 0]  # host probes, their bytes, digests (the reference's)
        self._since = self._compiled_counts()
        hosts_listed, find = self._hosts_listed, self._find

        def counted_hosts(names: list[str]) -> list[str]:
            self._counted[0] += len(names)
            self._counted[1] += sum(len(name.encode("utf-8")) for name in names)
            return hosts_listed(names)

        def counted_find(digests: list[bytes]) -> tuple[int, int] | None:
            self._counted[2] += len(digests)
            return find(digests)

        self._hosts_listed = counted_hosts
        self._find = counted_find

    def _compiled_counts(self) -> tuple[int, int, int]:
        return (0, 0, 0) if self._compiled is None else self._compiled.counts()

    def _count(self, k: int) -> int:
        return self._counted[k] + self._compiled_counts()[k] - self._since[k]

    @property
    def hosts(self) -> int:
        return self._count(0)

    @property
    def host_bytes(self) -> int:
        return self._count(1)

    @property
    def digests(self) -> int:
        return self._count(2)

    @property
    def lookups(self) -> int:
        return self.hosts + self.digests

    def reset(self) -> None:
        self._counted = [0, 0, 0]
        self._since = self._compiled_counts()
