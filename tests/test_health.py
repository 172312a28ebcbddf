"""Health and list age when the wall clock jumps (blocklist_addon/status.health, ActiveList).

Ages are wall-clock differences between a sync's timestamp and now: a clock that jumps
forward past the maximum age makes the list stale (still enforced), one that jumps back
makes it fresh again and never yields a negative age.
"""

from __future__ import annotations

import pytest
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons

from blocklist_addon import Blocklist
from blocklist_addon.addon import BlocklistAddon
from blocklist_addon.lists.active import ActiveList
from blocklist_addon.lists.store import VersionInfo
from blocklist_addon.ops.metrics import Metrics
from blocklist_addon.ops.status import health

SYNCED_AT = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def loaded(clock: Clock) -> ActiveList:
    lists = ActiveList(Metrics(), clock=clock)
    info = VersionInfo(
        version=3, created_at=SYNCED_AT, entries=1, checksum="00", source="feeds: test"
    )
    lists.blocklist = Blocklist.from_entries(["http://listed.example/page.html"])
    lists.info, lists.origin, lists.fresh_at = info, "store", info.created_at
    lists.started = lists.store_up = True
    return lists


def test_clock_jumps_around_the_maximum_age() -> None:
    clock = Clock(SYNCED_AT + 60)
    lists = loaded(clock)
    with taddons.context(lists) as tctx:
        tctx.configure(lists, blocklist_max_age=3600)
        status, doc = health(lists)
        assert (status, doc["status"], doc["age_seconds"]) == (200, "ok", 60)

        clock.now = SYNCED_AT + 10 * 3600  # forward ten hours: stale, still enforced
        status, doc = health(lists)
        assert (status, doc["status"], doc["age_seconds"]) == (503, "stale", 36000)
        assert lists.stale() and lists.blocklist is not None

        clock.now = SYNCED_AT - 24 * 3600  # back a day, before the sync itself
        status, doc = health(lists)
        assert (status, doc["status"], doc["age_seconds"]) == (200, "ok", 0)
        assert lists.age() == 0.0

        tctx.configure(lists, blocklist_max_age=0)  # 0: never stale
        clock.now = SYNCED_AT + 10**9
        assert health(lists)[1]["status"] == "ok"
        gauges = {g.name: g.value for g in lists.gauges()}
        assert gauges["blocklist_list_stale"] == 0
        assert gauges["blocklist_list_age_seconds"] == 10**9


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("blocklist_poll", 0),
        ("blocklist_max_age", -1),
        ("blocklist_start_timeout", 0),
        ("blocklist_image_max_frames", 0),
        ("blocklist_image_threshold", 129),
        ("blocklist_upload_max_bytes", -5),
    ],
)
def test_bad_option_values_are_refused_when_set(
    option: str, value: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked in configure, as mitmproxy expects: ``blocklist_poll=0`` used to be accepted
    and would have made the store watcher spin. At start the refusal is one logged line
    (mitmproxy then exits before it listens); once running, mitmproxy refuses the change."""
    addon = BlocklistAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, **{option: value})  # at start
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].startswith(f"blocklist: {option}")
        tctx.configure(addon, **{option: tctx.options.default(option)})  # good: running
        with pytest.raises(OptionsError, match=option):
            tctx.configure(addon, **{option: value})
