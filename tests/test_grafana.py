"""The Grafana dashboard and the alerting rules in deploy/grafana/ cannot drift from the code:
every metric a panel or a rule names is one the code exports (a renamed counter turns this
red): the proxy's from a live proxy's /metrics, ``blocklist-divert run``'s from the metrics
file a Runner renders, ``blocklist-sync``'s from the file a real sync writes with
``--metrics-file`` (which says a failed run too, as the sync alerts need). The dashboard is
JSON Grafana imports (panels on its 24-column grid, unique ids, the data source an input chosen
at import)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from collections.abc import Callable

from ruamel.yaml import YAML

from blocklist_addon.lists.store import open_store
from divert.config import DivertConfig
from divert.dataset import DiversionSet
from divert.run import Runner
from testlab.harness import SAMPLE_FEED, VENV_BIN, Proxy, synced_store

GRAFANA = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "grafana"
#: Series Prometheus makes itself (up) or node_exporter's textfile collector does (the mtime
#: of each file it reads), not our code.
PROMETHEUS_OWN = {"up", "node_textfile_mtime_seconds"}
#: The prefix of the names ``blocklist-divert run`` writes (divert/runreport.py).
DIVERT = "blocklist_divert_"
#: ... and ``blocklist-sync --metrics-file`` (sync/metrics.py).
SYNC = "blocklist_sync_"
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in matchers and by/without clauses) or dashboard variables."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)", r"\1", expr)
    return {
        m.group()
        for m in _IDENT.finditer(expr)
        if m.group() not in _KEYWORDS and not expr[m.end() :].lstrip().startswith("(")
    }


def dashboard() -> dict:
    return json.loads((GRAFANA / "blocklist-proxy.json").read_text())


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            exprs.append(variable["query"]["query"])
    return exprs


def alert_exprs() -> list[str]:
    """The rules of every shipped file: the proxies' and gateways', and the sync's."""
    exprs = []
    for name in ("prometheus-alerts.yml", "prometheus-alerts-sync.yml"):
        rules = YAML(typ="safe").load((GRAFANA / name).read_text())
        exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs


def test_names_are_read_from_expressions() -> None:
    """The extraction itself: without it finding names, the check below would pass empty."""
    assert metric_names(
        'sum by (instance, where) (rate(blocklist_blocks_total{instance=~"$instance"}[5m]))'
    ) == {"blocklist_blocks_total"}
    assert metric_names("blocklist_list_loaded == 0 and blocklist_hashes_loaded == 0") == {
        "blocklist_list_loaded",
        "blocklist_hashes_loaded",
    }
    assert metric_names("label_values(blocklist_list_loaded, instance)") == {
        "blocklist_list_loaded"
    }
    assert metric_names('up{job="blocklist-proxy"} == 0') == {"up"}
    assert metric_names('time() - node_textfile_mtime_seconds{file=~".*divert.*"} > 300') == {
        "node_textfile_mtime_seconds"
    }


def exposed(text: str) -> set[str]:
    """The metric names with a sample in Prometheus text exposition."""
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def named() -> set[str]:
    return {name for expr in dashboard_exprs() + alert_exprs() for name in metric_names(expr)}


def test_every_metric_named_is_exported(
    make_proxy: Callable[..., Proxy], tmp_path: pathlib.Path
) -> None:
    """Each proxy name in a panel, a variable or an alerting rule is in a live proxy's
    /metrics (the diversion gateway's and the sync's are checked below)."""
    proxy = make_proxy(synced_store(tmp_path)).start()
    exported = exposed(proxy.metrics())
    proxy_names = {n for n in named() if not n.startswith((DIVERT, SYNC))}
    assert len(proxy_names) >= 25, sorted(proxy_names)  # the dashboard covers the proxy
    assert proxy_names - exported - PROMETHEUS_OWN == set()


async def test_every_divert_metric_named_is_in_the_metrics_file(tmp_path: pathlib.Path) -> None:
    """Each blocklist_divert_* name a panel or a rule uses is in the metrics file a Runner
    writes for node_exporter's textfile collector, and every one the file has is on the
    dashboard: an operator sees all of what the gateway reports."""

    async def healthy() -> tuple[bool, str]:
        return True, "ok"

    store = open_store((tmp_path / "store").as_uri(), namespace="divert")
    runner = Runner(DivertConfig(), store, None, lambda _: None, healthy)
    runner.held = DiversionSet(("192.0.2.10",), ("2001:db8::10",))
    runner.version = 3
    written = exposed(runner.metrics())
    await store.close()
    divert_names = {n for n in named() if n.startswith(DIVERT)}
    assert {"blocklist_divert_withdrawn", "blocklist_divert_in_sync"} <= divert_names
    assert divert_names - written == set()
    dashboard_names = {n for e in dashboard_exprs() for n in metric_names(e)}
    assert written - dashboard_names == set()


def test_dashboard_imports() -> None:
    """What Grafana's import needs: an input for the data source every query uses, panels
    with unique ids inside the 24-column grid, each with a query."""
    board = dashboard()
    assert board["uid"] == "blocklist-proxy" and board["title"]
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].count("(") == target["expr"].count(")")


def sync_with_metrics(
    store: str, feed: pathlib.Path, data: pathlib.Path, metrics: pathlib.Path
) -> subprocess.CompletedProcess[str]:
    """The real ``blocklist-sync`` of one feed file, writing its metrics file."""
    command = [
        str(VENV_BIN / "blocklist-sync"), "--store", store, "--feed-url", feed.as_uri(),
        "--format", "text", "--name", "sample", "--metrics-file", str(metrics),
    ]  # fmt: skip
    env = {**os.environ, "BLOCKLIST_DATA_DIR": str(data)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def samples(text: str) -> dict[str, float]:
    """Each series line of Prometheus text (name and labels as written) and its value."""
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_sync_metric_named_is_in_the_file_a_sync_writes(tmp_path: pathlib.Path) -> None:
    """Each blocklist_sync_* name a panel or a rule uses is in the file a real sync wrote, and
    every name the file has is on the dashboard; a later failing run says so (success 0, the
    feed 0) while the store's times of the last good fetch and confirmation stay."""
    store, metrics = (tmp_path / "store").as_uri(), tmp_path / "textfile" / "sync.prom"
    done = sync_with_metrics(store, SAMPLE_FEED, tmp_path / "data", metrics)
    assert done.returncode == 0, done.stderr
    text = metrics.read_text()
    written = exposed(text)
    sync_names = {n for n in named() if n.startswith(SYNC)}
    assert {"blocklist_sync_last_run_success", "blocklist_sync_feed_fetch_success"} <= sync_names
    assert sync_names - written == set()
    assert written - {n for e in dashboard_exprs() for n in metric_names(e)} == set()
    first = samples(text)
    assert first["blocklist_sync_last_run_success"] == 1
    assert first['blocklist_sync_feed_fetch_success{kind="urls",feed="sample"}'] == 1
    assert first['blocklist_sync_active_version{kind="urls"}'] == 1
    confirmed = first['blocklist_sync_list_confirmed_timestamp_seconds{kind="urls"}']
    assert confirmed > 1e9

    done = sync_with_metrics(store, tmp_path / "missing.txt", tmp_path / "data", metrics)
    assert done.returncode == 1, done.stderr
    second = samples(metrics.read_text())
    assert second["blocklist_sync_last_run_success"] == 0
    assert second['blocklist_sync_feed_fetch_success{kind="urls",feed="sample"}'] == 0
    assert second['blocklist_sync_list_confirmed_timestamp_seconds{kind="urls"}'] == confirmed
    assert (
        second["blocklist_sync_last_run_timestamp_seconds"]
        > first["blocklist_sync_last_run_timestamp_seconds"]
    )
