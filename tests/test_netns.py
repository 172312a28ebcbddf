"""The namespace helpers clean up after themselves, whatever happens in the test."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

import pytest

from testlab.harness import wait_for
from testlab.netns import Lab, gateway_topology, unavailable

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=str(unavailable()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_failing_test_still_deletes_its_namespaces_and_kills_its_processes() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), Lab() as lab:
        topo = gateway_topology(lab)
        process = topo.gateway.popen(["sleep", "600"])
        names = [ns.path for ns in lab.namespaces]
        assert all(path.exists() for path in names)
        # ip netns exec runs the program in place: the PID becomes the program's own.
        comm = pathlib.Path(f"/proc/{process.pid}/comm")
        wait_for(lambda: comm.read_text().strip() == "sleep", 10, "ip netns exec to exec")
        raise RuntimeError("the test failed")
    assert not any(path.exists() for path in names)
    assert process.poll() is not None and not alive(process.pid)


def test_a_process_started_without_the_helpers_is_killed_with_its_namespace() -> None:
    """A proxy a test started itself and did not stop (its own Popen, not ``popen``) would
    otherwise outlive the namespace, unreachable, polling its store for ever."""
    with Lab() as lab:
        ns = lab.namespace("stray")
        stray = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "600"])
        comm = pathlib.Path(f"/proc/{stray.pid}/comm")
        wait_for(lambda: comm.read_text().strip() == "sleep", 10, "ip netns exec to exec")
    assert stray.wait(10) == -signal.SIGKILL


def test_names_are_unique_and_sockets_stay_in_their_namespace() -> None:
    with Lab() as one, Lab() as two:
        a, b = one.namespace("same"), two.namespace("same")
        assert a.name != b.name and str(os.getpid()) in a.name
        server = a.listen("127.0.0.1")
        with server:
            port = server.getsockname()[1]
            a.connect("127.0.0.1", port).close()  # inside a: the listener is there
            with pytest.raises(ConnectionRefusedError):
                b.connect("127.0.0.1", port)  # b has its own loopback
