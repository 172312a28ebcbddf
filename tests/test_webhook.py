"""The image webhook: events go out in the background with bounded retries, a platform
that refuses is not retried, one that is down costs nothing but a counted failure."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from blocklist_addon import webhook
from blocklist_addon.metrics import Metrics


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "FIRST_BACKOFF", 0.01)


async def serve(statuses: list[int], received: list[bytes]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        assert request.headers["Authorization"] == "Bearer t0ken"
        return web.Response(status=statuses.pop(0) if statuses else 204)

    app = web.Application()
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/events"


async def wait_until(condition, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("statuses", "result", "attempts"),
    [([], "sent", 1), ([503, 500], "sent", 3), ([400], "failed", 1), ([503] * 9, "failed", 4)],
)
async def test_retries_are_bounded(tmp_path, statuses, result, attempts) -> None:
    received: list[bytes] = []
    runner, url = await serve(list(statuses), received)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    metrics = Metrics()
    hook = webhook.Webhook(metrics)
    hook.configure(url, str(token))
    try:
        hook.send(b'{"entry": "e1"}')  # returns at once; the POST happens in the background
        assert received == []
        await wait_until(
            lambda: metrics.value("blocklist_image_webhook_total", result=result), result
        )
        assert received == [b'{"entry": "e1"}'] * attempts
    finally:
        await hook.done()
        await runner.cleanup()


async def test_an_unreachable_platform_is_a_counted_failure(unused_tcp_port: int) -> None:
    metrics = Metrics()
    hook = webhook.Webhook(metrics)
    hook.configure(f"http://127.0.0.1:{unused_tcp_port}/events", "")
    try:
        hook.send(b"{}")
        await wait_until(
            lambda: metrics.value("blocklist_image_webhook_total", result="failed"), ""
        )
    finally:
        await hook.done()


def test_bad_settings_are_refused_at_configure(tmp_path) -> None:
    hook = webhook.Webhook(Metrics())
    with pytest.raises(ValueError, match="http"):
        hook.configure("ftp://moderation.example.net/x", "")
    with pytest.raises(ValueError, match="cannot read"):
        hook.configure("https://moderation.example.net/x", str(tmp_path / "missing"))
    assert webhook._shown("https://user:pw@moderation.example.net:8443/k?secret=1") == (
        "https://moderation.example.net:8443/..."
    )
