"""The image webhook: events go out in the background with bounded retries, a platform
that refuses is not retried, one that is down costs nothing but a counted failure."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest
from aiohttp import web

from blocklist_addon.ops import webhook
from blocklist_addon.ops.metrics import Metrics


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
    token = private_token(tmp_path)
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


# -- issue 20, item 5: the token file, where the token may go, a sender that dies ----------


def private_token(directory: pathlib.Path, text: str = "t0ken\n") -> pathlib.Path:
    token = directory / "token"
    token.write_text(text)
    token.chmod(0o600)
    return token


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (0o640, "readable by its group"),
        (0o604, "readable by everyone"),
        (0o620, "writable by its group"),
        (0o602, "writable by everyone"),
    ],
)
def test_a_token_file_others_can_read_or_change_is_refused(tmp_path, mode, words) -> None:
    token = private_token(tmp_path)
    token.chmod(mode)
    with pytest.raises(ValueError, match=f"{words}: chmod 600 {token}") as refused:
        webhook.Webhook(Metrics()).configure("https://moderation.example.net/x", str(token))
    assert str(token) in str(refused.value)
    token.chmod(0o600)
    webhook.Webhook(Metrics()).configure("https://moderation.example.net/x", str(token))


def test_a_token_file_behind_a_symlink_or_of_another_owner_is_refused(tmp_path) -> None:
    token = private_token(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(token)
    with pytest.raises(ValueError, match=f"{link} is a symbolic link"):
        webhook.Webhook(Metrics()).configure("https://moderation.example.net/x", str(link))
    if os.geteuid() != 0:
        pytest.skip("only root can give the token file to another user")
    os.chown(token, 65534, -1)
    with pytest.raises(ValueError, match=f"{token} is owned by uid 65534.*chown"):
        webhook.Webhook(Metrics()).configure("https://moderation.example.net/x", str(token))


def test_a_token_that_would_break_the_header_is_refused(tmp_path) -> None:
    token = private_token(tmp_path, "t0ken\r\nX-Injected: 1\n")
    with pytest.raises(ValueError, match="characters not allowed in an HTTP header"):
        webhook.Webhook(Metrics()).configure("https://moderation.example.net/x", str(token))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://moderation.example.net/events", False),
        ("http://192.0.2.10/events", False),
        ("http://[2001:db8::1]:8080/events", False),
        ("http://127.0.0.2:8080/events", True),
        ("http://[::1]/events", True),
        ("http://localhost:8080/events", True),
        ("https://moderation.example.net/events", True),
    ],
)
def test_the_token_never_goes_over_plain_http_beyond_loopback(tmp_path, url, allowed) -> None:
    hook = webhook.Webhook(Metrics())
    hook.configure(url, "")  # without a token plain http is the platform's choice
    if allowed:
        hook.configure(url, str(private_token(tmp_path)))
    else:
        with pytest.raises(ValueError, match="refusing to send the bearer token over plain"):
            hook.configure(url, str(private_token(tmp_path)))


async def test_a_sender_that_raises_is_restarted_and_the_next_event_delivered(
    tmp_path, caplog
) -> None:
    received: list[bytes] = []
    runner, url = await serve([], received)
    metrics = Metrics()
    hook = webhook.Webhook(metrics)
    hook.configure(url, str(private_token(tmp_path)))
    post, calls = hook._post, []

    async def raises_once(session, event):  # a bug in the sender, once
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return await post(session, event)

    hook._post = raises_once  # type: ignore[method-assign]
    try:
        hook.send(b'{"entry": "e1"}')
        await wait_until(
            lambda: metrics.value("blocklist_task_restarts_total", task="webhook"), "restart"
        )
        assert metrics.value("blocklist_image_webhook_total", result="failed") == 1
        assert "the webhook sender failed (RuntimeError" in caplog.text
        hook.send(b'{"entry": "e2"}')
        await wait_until(lambda: received, "the next event")
        assert received == [b'{"entry": "e2"}']
        assert metrics.value("blocklist_image_webhook_total", result="sent") == 1
    finally:
        await hook.done()
        await runner.cleanup()


async def test_a_sender_task_killed_from_outside_is_restarted(tmp_path) -> None:
    received: list[bytes] = []
    runner, url = await serve([], received)
    metrics = Metrics()
    hook = webhook.Webhook(metrics)
    hook.configure(url, str(private_token(tmp_path)))
    try:
        hook.send(b'{"entry": "e1"}')
        await wait_until(lambda: received, "the first event")
        assert hook._task is not None
        hook._task.cancel()  # killed, not stopped by done()
        await wait_until(
            lambda: metrics.value("blocklist_task_restarts_total", task="webhook"), "restart"
        )
        hook.send(b'{"entry": "e2"}')
        await wait_until(lambda: len(received) == 2, "the next event")
        assert received[1] == b'{"entry": "e2"}'
    finally:
        await hook.done()
    assert hook._task is None or hook._task.done()  # done() stops it for good
    await runner.cleanup()
