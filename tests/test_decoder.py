"""Untrusted images are decoded in worker processes (blocklist_addon.hashes.decoder): a
decoder that crashes, allocates without end or spins costs one upload its check (reported
as unchecked), never the proxy's process, and the next upload is checked as usual."""

from __future__ import annotations

import os

import pytest

from blocklist_addon import HashList
from blocklist_addon.hashes import HashMatch
from blocklist_addon.hashes.decoder import DecoderPool
from blocklist_addon.hashes.images import Limits, Uncheckable
from testlab.decoder_faults import hostile
from testlab.images import draw, encode, reference_pdq

LISTED = draw(1)


@pytest.fixture(scope="module")
def pool():
    pool = DecoderPool(2, memory=1 << 30, work=hostile)
    try:
        yield pool
    finally:
        pool.close()


def check(pool: DecoderPool, data: bytes) -> object:
    return pool.run(data, Limits(), True, cpu_seconds=2, timeout=60)


def listed(pool: DecoderPool) -> bool:
    """The pool's workers hash the listed picture as this process does: the same match,
    entry p at the same distance."""
    hashlist = HashList.from_entries([{"id": "p", "pdq": reference_pdq(LISTED)}])
    hashed, reason = check(pool, encode(LISTED))
    here = hashlist.match_bytes(encode(LISTED))
    expected = HashMatch("default", "p", "pdq", here.distance if here else -1)
    return (reason, hashlist.match_frames(hashed), here) == (None, expected, expected)


@pytest.mark.parametrize("fault", [b"segfault", b"spin"])
def test_a_decoder_that_dies_is_an_unchecked_upload_and_the_pool_recovers(
    pool: DecoderPool, fault: bytes
) -> None:
    before = pool.restarts
    with pytest.raises(Uncheckable) as raised:
        check(pool, fault)
    assert raised.value.reason == "decoder-crashed"
    assert pool.restarts == before + 1
    assert listed(pool)  # the next upload is checked by new workers


def test_a_runaway_allocation_stops_at_the_workers_limit(pool: DecoderPool) -> None:
    """8 GiB asked for under a 1 GiB address-space limit: MemoryError in the worker, which
    goes on serving (no restart)."""
    before = pool.restarts
    with pytest.raises(MemoryError):
        check(pool, b"allocate")
    assert pool.restarts == before
    assert listed(pool)


def test_workers_are_other_processes() -> None:
    pool = DecoderPool(1)
    try:
        pool.warm()
        hashed, reason = pool.run(encode(LISTED), Limits(), True, cpu_seconds=5, timeout=60)
        assert reason is None and len(hashed) == 1
        assert os.getpid() not in {p.pid for p in pool._executor()._processes.values()}
    finally:
        pool.close()
