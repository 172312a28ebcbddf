"""Videos in the upload guard (issue 22, item 3), end to end: a real mitmdump with the addon
in reverse mode in front of a real aiohttp upload site, enforcing a hash list synced by the
real ``blocklist-sync`` that lists one clip by its vPDQ. The listed clip made another way
(re-encoded, resized, trimmed) is refused before the site sees a byte, as a raw body and in
a multipart form; 50 other clips are decoded and pass; a clip that cannot be checked is
refused with its reason counted (the proxy runs ``blocklist_image_uncheckable=refuse``, so
a clean clip that were not fully checked would be refused too). The clips are drawn here
(``testlab.videos``): nothing from any real list."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator

import pytest
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons
from test_imageproxy import Site, make, multipart, post, upload_site

from blocklist_addon.addon import BlocklistAddon
from blocklist_addon.guards.images import INLINE_BYTES
from blocklist_addon.hashes.video import hash_video
from testlab.harness import Proxy, running, sync, wait_for
from testlab.origins import TestCA
from testlab.videos import draw, encode

LISTED = draw(1)  # 8 s at 10 fps, 320 x 240: 8 frames hashed, PDQ quality 96-100
LISTED_FILE = encode(LISTED)
#: The listed clip as HMA's compact features, what a hotline's feed carries.
COMPACT = [
    f"{value.hex()},{quality},{n:.3f}"
    for n, (value, quality) in enumerate(hash_video(LISTED_FILE).frames)
]
#: Frames a clip may decode in this proxy (blocklist_video_max_frames): the listed clip's 80
#: fit, LONG's 250 do not.
MAX_FRAMES = 200
LONG = encode(draw(5, seconds=25, size=(64, 48)))

VARIANTS: dict[str, Callable[[], bytes]] = {
    "re-encoded-crf-40": lambda: encode(LISTED, options={"crf": "40"}),
    "resized-240x180": lambda: encode(LISTED, size=(240, 180)),
    "trimmed-2.5s": lambda: encode(LISTED[25:]),
    "vp9-webm": lambda: encode(LISTED, "webm"),
    # Over INLINE_BYTES: checked off the event loop (the others are small enough to be
    # looked at inline first, and must not pass for it).
    "upscaled-640x480-4mbit": lambda: encode(LISTED, size=(640, 480), bit_rate=4_000_000),
}


@pytest.fixture(scope="module")
def others() -> list[bytes]:
    """50 unrelated clips, tiny (128 x 96, 3 s at 2 fps: 3 frames hashed) so that sending
    them all costs seconds; made once for the module."""
    return [encode(draw(seed, seconds=3, fps=2, size=(128, 96)), fps=2) for seed in range(300, 350)]


@pytest.fixture(scope="module")
def site(ca: TestCA) -> Iterator[Site]:
    with upload_site(ca) as started:
        yield started


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, site: Site, confdir: pathlib.Path, ca: TestCA
) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("video-proxy")
    records = [
        {"id": "clip-1", "vpdq": COMPACT, "category": "A"},
        {"id": "exact-1", "sha1": "0" * 40},
    ]
    path = directory / "hashes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    store = (directory / "store").as_uri()
    sync(store, path, name="hotline", data_dir=directory / "data", fmt="hashes-jsonl")
    options = {
        "blocklist_image_uncheckable": "refuse",
        "blocklist_video_max_frames": str(MAX_FRAMES),
    }
    with running(make(directory / "proxy", store, site, confdir, ca, **options)) as p:
        yield p


def assert_refused_as_the_listed_clip(proxy: Proxy, site: Site, sent: tuple[int, bytes]) -> None:
    """A 451 naming the list, a block line with the entry, kind vpdq, the feed's category and
    a distance within PDQ's threshold, and no connection to the site."""
    status, answer = sent
    assert status == 451, answer
    assert json.loads(answer)["list"] == "hotline"
    block = proxy.blocks()[-1]
    assert (block["where"], block["list"], block["entry"], block["kind"], block["category"]) == (
        "image",
        "hotline",
        "clip-1",
        "vpdq",
        "A",
    )
    assert 0 <= block["distance"] <= 31  # type: ignore[operator]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_listed_clip_made_another_way_is_refused_before_the_site_sees_a_byte(
    proxy: Proxy, site: Site, variant: str
) -> None:
    """As a raw API body (whatever its declared type) and as a part of a form."""
    data = VARIANTS[variant]()
    assert (len(data) > INLINE_BYTES) == (variant == "upscaled-640x480-4mbit")
    before = (len(site.uploads), site.origin.connections)
    status, _, answer = post(
        proxy, "/api/v1/media", data, "application/octet-stream", method="PUT",
        Accept="application/json",
    )  # fmt: skip
    assert_refused_as_the_listed_clip(proxy, site, (status, answer))
    body, kind = multipart([("holiday.jpg", data)], {"title": "holiday"})
    status, _, answer = post(proxy, "/forum/upload", body, kind, Accept="application/json")
    assert_refused_as_the_listed_clip(proxy, site, (status, answer))
    assert (len(site.uploads), site.origin.connections) == before


def test_the_webhook_gets_the_video_match(proxy: Proxy, site: Site) -> None:
    """The moderation queue hears of a refused video as of an image: entry, kind, category."""
    status, _, answer = post(
        proxy, "/api/v1/media", VARIANTS["trimmed-2.5s"](), "video/mp4", Accept="application/json"
    )
    assert status == 451, answer
    reference = proxy.blocks()[-1]["reference"]
    event = wait_for(
        lambda: [e for e in site.events if e["reference"] == reference], 30, "the webhook"
    )[0]  # type: ignore[index]
    assert (event["entry"], event["kind"], event["category"]) == ("clip-1", "vpdq", "A")


def test_fifty_other_clips_are_decoded_and_pass(
    proxy: Proxy, site: Site, others: list[bytes]
) -> None:
    """Each reaches the site byte for byte, each counted as a decoded video, none unchecked
    (which under refuse would have been a 422)."""
    videos = proxy.metric_series("blocklist_uploads_checked_total", file="video")
    unchecked = proxy.metric("blocklist_images_unchecked_total")
    for number, data in enumerate(others):
        status, _, answer = post(proxy, "/api/v1/media", data, "video/mp4")
        assert status == 200, (number, answer)
        assert site.uploads[-1] == ("/api/v1/media", data)
    assert proxy.metric_series("blocklist_uploads_checked_total", file="video") == videos + 50
    assert proxy.metric("blocklist_images_unchecked_total") == unchecked


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        # FFmpeg cannot open an MP4 cut short at all: its frames are unknown.
        ("truncated", LISTED_FILE[: len(LISTED_FILE) // 3], "truncated"),
        # 250 frames, past blocklist_video_max_frames.
        ("too-many-frames", LONG, "frames-skipped"),
    ],
)
def test_a_clip_that_cannot_be_checked_is_refused_with_its_reason_counted(
    proxy: Proxy, site: Site, name: str, data: bytes, reason: str
) -> None:
    before = (len(site.uploads), site.origin.connections)
    why = proxy.metric_series("blocklist_images_unchecked_total", reason=reason, action="refuse")
    status, _, answer = post(proxy, "/api/v1/media", data, "video/mp4")
    assert status == 422, (name, answer)
    assert json.loads(answer)["error"] == "upload_not_checked"
    assert reason in json.loads(answer)["message"]
    assert (len(site.uploads), site.origin.connections) == before
    counted = proxy.metric_series(
        "blocklist_images_unchecked_total", reason=reason, action="refuse"
    )
    assert counted == why + 1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("blocklist_video_max_frames", 0),
        ("blocklist_video_max_seconds", -1),
        ("blocklist_video_query_match_percent", "100.5"),
        ("blocklist_video_query_match_percent", "nan"),
        ("blocklist_video_compared_match_percent", "eighty"),
    ],
)
def test_bad_video_option_values_are_refused_when_set(option: str, value: object) -> None:
    """Checked in configure, as the other options are: a share of frames that is no number
    from 0 to 100 would otherwise fail only when a list with videos loads."""
    addon = BlocklistAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, **{option: tctx.options.default(option)})
        with pytest.raises(OptionsError, match=option):
            tctx.configure(addon, **{option: value})
