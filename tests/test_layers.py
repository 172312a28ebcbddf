"""The import rules of the code's layers, read from its own imports (an AST walk, no import).

Lowest first (docs/architecture.md): ``urls`` and ``content`` are pure parsers and matchers;
``hashes`` matches files; ``ops`` holds what operators see; ``lists`` follows the store;
``guards`` are the mitmproxy concerns, and ``addon``/``cli`` put them together. A layer may
import its own and lower ones, never a higher one; the pure layers import nothing of
mitmproxy, redis or aiohttp; no module imports itself back through others. ``sync`` and
``divert`` are commands beside the proxy: they may use the lower layers and a shared module,
never each other, nor the guards.

Imports under ``if TYPE_CHECKING:`` are for type checkers only and do not count.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("blocklist_addon", "sync", "divert")

#: Layers, lowest first; a module is in the first layer whose prefix it starts with.
LAYERS = [
    ("blocklist_addon.urls",),
    ("blocklist_addon.content",),
    ("blocklist_addon.ops.errors", "blocklist_addon.ops.metrics"),
    ("blocklist_addon.ops.credentials",),
    ("blocklist_addon.lists.store", "blocklist_addon.hashes"),
    ("blocklist_addon.ops",),
    ("blocklist_addon.lists",),
    # The status page shows the lists' state and the concerns' metrics: above the lists.
    ("blocklist_addon.ops.status",),
    ("blocklist_addon.guards",),
    ("blocklist_addon.addon", "blocklist_addon.cli", "blocklist_addon"),
]
PURE = ("blocklist_addon.urls", "blocklist_addon.content")
IMPURE = ("mitmproxy", "redis", "aiohttp")
#: Imports that break a rule today, each to go with the move that fixes it (issue 23): the
#: test fails when one of them disappears, so the list only shrinks.
KNOWN: set[tuple[str, str]] = {
    # The library API's Blocklist.load(store_url): a lazy import, as HashList.aload's.
    ("blocklist_addon.urls.matcher", "blocklist_addon.lists.store"),
}
#: Import cycles today, as sets of modules (none: keep it so).
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> Iterator[str]:
    """The modules ``module`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from walk(
                        [n for n in inner if isinstance(n, ast.stmt | ast.ExceptHandler)]
                    )  # type: ignore[misc]
            if isinstance(node, ast.ExceptHandler):
                yield from walk(node.body)

    yield from walk(ast.parse(path.read_text()).body)


def layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), number)
    return None if best is None else best[1]


def violations() -> set[tuple[str, str]]:
    found = set()
    for module in MODULES:
        for imported in imports(module):
            if module.startswith(PURE) and imported.startswith(IMPURE):
                found.add((module, imported))
            if imported.split(".")[0] in ("testlab", "tests", "bench"):
                found.add((module, imported))  # the product never imports its test lab
            if imported not in MODULES and imported.split(".")[0] not in PACKAGES:
                continue
            ours, theirs = layer(module), layer(imported)
            if ours is not None and theirs is not None and theirs > ours:
                found.add((module, imported))  # upward
            top, other = module.split(".")[0], imported.split(".")[0]
            if {top, other} == {"sync", "divert"}:
                found.add((module, imported))
            if top in ("sync", "divert") and imported.startswith(
                ("blocklist_addon.guards", "blocklist_addon.addon")
            ):
                found.add((module, imported))
    return found


def test_no_layer_imports_upward_and_pure_layers_stay_pure() -> None:
    new = violations() - KNOWN
    assert not new, "imports against the layers (docs/architecture.md):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in sorted(new)
    )


def test_the_known_exceptions_only_shrink() -> None:
    gone = KNOWN - violations()
    assert not gone, "fixed, remove from KNOWN:\n" + "\n".join(f"  {a} -> {b}" for a, b in gone)


def cycles() -> set[frozenset[str]]:
    """Sets of modules that import each other (Tarjan's strongly connected components)."""
    graph = {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}
    # A package's __init__ importing its own modules is how packages export: not a cycle.
    for module, targets in graph.items():
        if MODULES[module].name == "__init__.py":
            graph[module] = {t for t in targets if not t.startswith(module + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_and_the_known_ones_only_shrink() -> None:
    found = cycles()
    assert found <= KNOWN_CYCLES, f"import cycles: {sorted(map(sorted, found - KNOWN_CYCLES))}"
    assert found == KNOWN_CYCLES, f"gone, remove: {sorted(map(sorted, KNOWN_CYCLES - found))}"


def test_the_rules_catch_an_upward_import(tmp_path: pathlib.Path) -> None:
    """The walk itself: a pure module importing a guard is reported."""
    source = (
        "from blocklist_addon.guards.urls import Enforcer\nimport mitmproxy\n"
        "from testlab.harness import Proxy\n"
    )
    MODULES["blocklist_addon.urls.probe"] = tmp_path / "probe.py"
    (tmp_path / "probe.py").write_text(source)
    try:
        found = violations()
    finally:
        del MODULES["blocklist_addon.urls.probe"]
    assert ("blocklist_addon.urls.probe", "blocklist_addon.guards.urls") in found
    assert ("blocklist_addon.urls.probe", "mitmproxy") in found
    assert ("blocklist_addon.urls.probe", "testlab.harness") in found
