"""Benchmark-only mitmproxy addon: the CPU time the blocklist addon's own hooks take.

``--set bench_hook_times=PATH``: every hook of the blocklist addon loaded before this one is
wrapped to add up its thread CPU time (``time.thread_time``); ten times a second the running
total is written to PATH with the process's CPU time at the same instant. Reading the thread
clock is a system call (about 1 to 3 us here): what an empty interval measures is taken off
each call. ``bench/proxy.py``
divides the growth of one by the other between two snapshots: the share of the proxy's work
that is the addon's own hooks, a figure the machine's other load moves far less than a
throughput ratio (both parts slow down alike). It leaves out mitmproxy's dispatch of each
hook (under 1 us a call). Loaded into plain mitmdump too, where it times nothing but writes
its file alike: the instrument's own work (its ten writes a second cost the addon's proxy
about 30 us a request at 150 to 200 requests a second, load 10, by a CPU-time profile) is
then on both sides of the A/B ratio, not charged to the addon. So is its timing: each timed
call reads the thread clock twice (a system call, about 3 us here: 25 us a request for the
four flow hooks, 1.5% of plain mitmdump's CPU per page), so where there is no addon to time
this one's own hooks of the same names read it as often, around nothing.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import pathlib
import time

from mitmproxy import ctx
from mitmproxy.addonmanager import traverse

HOOKS = [
    "client_connected",
    "requestheaders",
    "request",
    "responseheaders",
    "response",
    "http_connect",
    "tls_clienthello",
    "server_connect",
]


def empty_interval() -> float:
    """What timing nothing measures (the median of many), to take off each measurement."""
    samples = []
    for _ in range(2001):
        start = time.thread_time()
        samples.append(time.thread_time() - start)
    return sorted(samples)[len(samples) // 2]


class HookTimes:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.overhead = 0.0
        self._task: asyncio.Task[None] | None = None

    def load(self, loader) -> None:
        loader.add_option("bench_hook_times", str, "", "File for the hooks' CPU time.")

    def running(self) -> None:
        if not ctx.options.bench_hook_times:
            return
        self.overhead = empty_interval()
        chain = traverse(ctx.master.addons.chain)
        target = next((a for a in chain if type(a).__name__ == "BlocklistAddon"), None)
        for name in HOOKS if target is not None else ():
            method = getattr(target, name, None)
            if method is not None:
                setattr(target, name, self._timed(method))
        if target is None:  # plain mitmdump: the same clock reads, in this addon's hooks
            nothing = self._timed(_nothing)
            for name in HOOKS:
                setattr(self, name, nothing)
        self._task = asyncio.create_task(self._write(pathlib.Path(ctx.options.bench_hook_times)))

    # The hooks timed, here doing nothing unless running() replaces them (in plain mitmdump,
    # to read the thread clock as the timed hooks do): mitmproxy dispatches them in both.
    def client_connected(self, *args) -> None: ...
    def requestheaders(self, *args) -> None: ...
    def request(self, *args) -> None: ...
    def responseheaders(self, *args) -> None: ...
    def response(self, *args) -> None: ...
    def http_connect(self, *args) -> None: ...
    def tls_clienthello(self, *args) -> None: ...
    def server_connect(self, *args) -> None: ...

    def _timed(self, method):
        if inspect.iscoroutinefunction(method):
            raise SystemExit(f"cannot time async hook {method}")

        @functools.wraps(method)
        def timed(*args):
            start = time.thread_time()
            try:
                return method(*args)  # a returned coroutine runs later, untimed
            finally:
                self.seconds += time.thread_time() - start - self.overhead
                self.calls += 1

        return timed

    async def _write(self, path: pathlib.Path) -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            hooks = max(0.0, self.seconds)
            snapshot = {"hooks": hooks, "calls": self.calls, "cpu": time.process_time()}
            tmp.write_text(json.dumps(snapshot))
            tmp.replace(path)
            await asyncio.sleep(0.1)


def _nothing(*args) -> None:
    return None


addons = [HookTimes()]
