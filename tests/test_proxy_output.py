"""The proxy's own log reaches where its output goes line by line, while it runs.

Under systemd the output goes to the journal through a socket, and with ``> file`` (a
container, or the chroot of tests/test_walk.py) to a file: neither is a terminal, so Python
would hold the log back in 8 KB blocks until then or until the proxy stops. The walk of the
school chapter found a proxy that had been serving for a minute with an empty log.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from testlab.harness import Proxy, running, synced_store, wait_for


def test_the_log_is_written_line_by_line_while_the_proxy_runs(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # as systemd starts it
    with running(make_proxy(synced_store(tmp_path))) as proxy:
        wait_for(lambda: "HTTP(S) proxy listening" in proxy.log(), 5.0, "the first lines")
        assert "enforcing version" in proxy.log()
        assert proxy.get("http://blocked.example.com/page.html").status == 451
        assert proxy.process is not None and proxy.process.poll() is None  # still running
