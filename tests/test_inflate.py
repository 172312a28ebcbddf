"""Content-Encoding decoded under a cap (blocklist_addon.content.inflate): what the guards read of a
body never costs more memory than the cap, whatever the body inflates to."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocklist_addon.content.inflate import TooLarge, inflate

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


@pytest.mark.parametrize("coding", list(ENCODERS))
@given(data=st.binary(max_size=4096))
def test_every_coding_round_trips_and_the_cap_holds(coding: str, data: bytes) -> None:
    encoded = ENCODERS[coding](data)
    assert inflate(encoded, coding, len(data)) == data
    if data:
        with pytest.raises(TooLarge):
            inflate(encoded, coding, len(data) - 1)


def test_stacked_codings_are_undone_last_applied_first() -> None:
    data = b"listed.example.com/page.html " * 100
    assert inflate(brotli.compress(gzip.compress(data)), "gzip, br", 10_000) == data
    assert inflate(data, "identity", 10_000) == data
    assert inflate(data, None, 10_000) == data


def test_every_gzip_member_is_read_as_gzip_does() -> None:
    """An origin reading gzip(1)'s concatenated members would see the second one."""
    assert inflate(gzip.compress(b"first ") + gzip.compress(b"second"), "gzip", 100) == (
        b"first second"
    )


def test_raw_deflate_is_read_as_lenient_servers_do() -> None:
    raw = zlib.compressobj(wbits=-15)
    data = b"x" * 1000
    assert inflate(raw.compress(data) + raw.flush(), "deflate", 1000) == data


@pytest.mark.parametrize(
    ("body", "coding"),
    [
        (b"not gzip at all", "gzip"),
        (gzip.compress(b"x" * 1000, mtime=0)[:-12], "gzip"),
        (b"\x00" * 10, "br"),
        (zstd.compress(b"x" * 1000)[:-3], "zstd"),
        (b"abc", "compress"),
    ],
    ids=["not-gzip", "truncated-gzip", "not-br", "truncated-zstd", "compress"],
)
def test_broken_or_unknown_codings_are_value_errors(body: bytes, coding: str) -> None:
    with pytest.raises(ValueError) as raised:
        inflate(body, coding, 10_000)
    assert not isinstance(raised.value, TooLarge)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_bomb_costs_no_more_memory_than_the_cap(coding: str) -> None:
    cap = 8 << 20
    zeros = bytes(256 << 20)  # in a few hundred KiB; brotli's quality 5 makes it in 0.5 s, not 8
    bomb = brotli.compress(zeros, quality=5) if coding == "br" else ENCODERS[coding](zeros)
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            inflate(bomb, coding, cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * cap, peak
