"""Several proxy processes on one Redis, as at a small ISP's edge: a sync reaches every one
of them within seconds, Redis going away changes nothing for clients, and Redis coming back
is picked up without a restart."""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Callable

from testlab.harness import Proxy, assert_splash, feed_with, running, sync, wait_for

#: The issue's figure for a fleet: every proxy enforces a new version within 2 s of the sync.
FLEET_DEADLINE = 2.0
LISTED = "http://blocked.example.com/page.html"
UNLISTED = "http://unlisted.example.org/"


def test_two_proxies_on_one_redis(
    make_proxy: Callable[..., Proxy], redis_factory, tmp_path: pathlib.Path
) -> None:
    redis = redis_factory()
    data = tmp_path / "data"
    sync(redis.url, feed_with(tmp_path), data_dir=data)
    with contextlib.ExitStack() as stack:
        fleet = [stack.enter_context(running(make_proxy(redis.url))) for _ in range(2)]
        for proxy in fleet:
            assert_splash(proxy.get(LISTED), page=False)

        # A new version reaches both.
        fresh = "http://fresh.example.net/new.html"
        assert all(proxy.get(fresh).status == 200 for proxy in fleet)
        sync(redis.url, feed_with(tmp_path, fresh), data_dir=data)
        synced = time.monotonic()
        for proxy in fleet:
            wait_for(lambda p=proxy: p.get(fresh).status == 451, FLEET_DEADLINE, "the new version")
        print(f"both proxies enforced it {time.monotonic() - synced:.2f} s after the sync")

        # Redis dies: both keep enforcing what they hold and say the store is down.
        redis.kill()
        for proxy in fleet:
            wait_for(lambda p=proxy: p.health()[1]["store"] == "down", 30, "Redis seen down")
            status, doc = proxy.health()
            assert (status, doc["status"]) == (200, "degraded")
            assert_splash(proxy.get(fresh), page=False)
            assert proxy.get(UNLISTED).status == 200

        # Redis returns (empty: it kept nothing) and the next sync fills it: no restart.
        redis.start()
        later = "http://later.example.net/page.html"
        sync(redis.url, feed_with(tmp_path, fresh, later), data_dir=data)
        for proxy in fleet:
            wait_for(
                lambda p=proxy: p.get(later).status == 451, 60, "the list after Redis returned"
            )
            assert proxy.health()[1]["status"] == "ok"
            assert_splash(proxy.get(LISTED), page=False)
        assert all(p.process is not None and p.process.poll() is None for p in fleet)
