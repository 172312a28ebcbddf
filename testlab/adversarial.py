"""Hostile URL shapes of about 64 KiB: marker floods, nested escapes, dot-segment padding,
base64 chains, ideographic hosts. ``tests/test_embedded.py`` bounds the search's output on
each; ``bench/adversarial.py`` times the worst of them. Reserved names only."""

from __future__ import annotations

import base64

__all__ = ["ADVERSARIAL", "N"]

#: The size the shapes are built to.
N = 64 * 1024

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
}
