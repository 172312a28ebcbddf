"""The README's quick start: `make run` syncs the sample feed and starts a proxy that blocks.

Runs the real Makefile target (on free ports, everything under a temporary RUN_DIR, with a
venv of its own) and follows the instructions it prints: the curl commands' requests get the
451 splash page, over HTTP and over HTTPS with the CA it names.
"""

from __future__ import annotations

import http.client
import os
import pathlib
import re
import signal
import ssl
import subprocess
import sys
import sysconfig
from collections.abc import Iterator

import pytest

from testlab.harness import ROOT, free_port, wait_for


def own_venv(directory: pathlib.Path) -> pathlib.Path:
    """A venv for ``make run`` to install the project into, never the one running the suite.
    It sees the suite's installed libraries read-only (a .pth file), so that ``make venv``
    finds the dependencies satisfied and installs only the project: no download, seconds."""
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    suite = sysconfig.get_paths()["purelib"]
    (site / "zz-suite-libraries.pth").write_text(suite + "\n")
    return venv


@pytest.fixture
def make_run(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[bytes], pathlib.Path]]:
    port, status = free_port(), free_port()
    venv = own_venv(tmp_path)
    log = tmp_path / "make-run.log"
    command = [
        "make",
        "--no-print-directory",
        "run",
        f"VENV={venv}",
        f"RUN_PORT={port}",
        f"RUN_STATUS=127.0.0.1:{status}",
        f"RUN_DIR={tmp_path / 'var'}",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            start_new_session=True,  # make and the proxy it execs stop together
        )  # fmt: skip
    try:
        yield process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)


def _get(port: int, url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", url, headers={"Accept": "text/html"})
    else:
        host, _, path = url.removeprefix("https://").partition("/")
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.set_tunnel(host, 443)
        conn.request("GET", "/" + path, headers={"Accept": "text/html"})
    try:
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_make_run_starts_a_proxy_that_shows_the_splash_page(make_run) -> None:
    process, log = make_run

    def printed() -> re.Match[str] | None:
        if process.poll() is not None:
            raise AssertionError(f"make run exited {process.returncode}:\n{log.read_text()}")
        return re.search(r"proxy listening at 127\.0\.0\.1:(\d+)", log.read_text())

    wait_for(printed, 120, "make run to start the proxy")
    text = log.read_text()
    curl_http = re.search(r"curl -i -x http://127\.0\.0\.1:(\d+) .*(http://\S+)", text)
    curl_https = re.search(r"--cacert (\S+) (https://\S+)", text)
    assert curl_http is not None and curl_https is not None, text
    port = int(curl_http.group(1))
    wait_for(lambda: "enforcing version" in log.read_text(), 30, "the list to load")

    status, body = _get(port, curl_http.group(2))
    assert status == 451
    assert "Access denied" in body

    context = ssl.create_default_context(cafile=curl_https.group(1))
    status, body = _get(port, curl_https.group(2), context=context)
    assert status == 451
    assert "Access denied" in body
