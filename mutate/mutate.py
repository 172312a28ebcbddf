"""`make mutate`: mutmut over the security-critical modules, each in a scratch copy.

For each module (the ``MODULES`` table: the module and the test files that exercise it), a
copy of the working tree (or of ``--rev``) is made under ``var/mutate/<module>/``, a
``[tool.mutmut]`` section naming the module and its tests is appended to the copy's
pyproject.toml, and ``mutmut run`` mutates the module there: the working tree is never
touched. Only the in-process tests (``-m "not net"``) see a mutant: mutmut runs each in a
child forked from pytest, not in the processes the ``net`` tests start.

Then it prints, per module, the mutants, how many were killed, the survivors explained as
equivalent in ``mutate/equivalent.toml`` and the unexplained ones, with each unexplained
survivor's diff; it exits 1 when one is left. A survivor counts as explained only while its
mutated line is still the one the explanation quotes (mutmut numbers the mutants of a
function in order, so an edit to the function renumbers them).

Inside a module's directory, ``../../../.venv/bin/mutmut show <name>`` shows a mutant,
``mutmut run <name>`` reruns one (after copying a new test into ``tests/`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "mutate"
EXPLANATIONS = ROOT / "mutate" / "equivalent.toml"
MUTMUT_VERSION = "3.8.1"  # the results are read from its files: see collect()

#: Each module and the test files that exercise it in-process.
MODULES: dict[str, list[str]] = {
    "divert/gates.py": ["tests/test_divert_gates.py"],
    # the depths a snapshot records are read and written for the matcher's directory walk
    "blocklist_addon/urls/snapshot.py": ["tests/test_snapshot.py", "tests/test_matcher_depth.py"],
    "blocklist_addon/urls/snapshot_build.py": [
        "tests/test_snapshot.py",
        "tests/test_matcher_depth.py",
    ],
    "blocklist_addon/urls/snapshot_format.py": ["tests/test_snapshot.py"],
    "blocklist_addon/guards/flow.py": ["tests/test_flow.py"],
    # unescape_by_level is tested with the embedded URL tables it is written for
    "blocklist_addon/urls/canonical.py": ["tests/test_canonical.py", "tests/test_embedded.py"],
    # not tests/test_wrappers.py: a minute a mutant, where these take seconds; the Python
    # reference lookups run only with compiled=False, in test_matcher_compiled.py
    "blocklist_addon/urls/matcher.py": [
        "tests/test_matcher.py",
        "tests/test_matcher_compiled.py",
        "tests/test_matcher_depth.py",
        "tests/test_matcher_mutants.py",
    ],
}
#: What the tests import or read besides the module (mutmut copies only what it is told to).
ALSO_COPY = ["blocklist_addon", "divert", "sync", "testlab", "samples", "deploy", "fuzz"]
PYTEST_ARGS = [
    "-p", "no:xdist", "-p", "no:cacheprovider", "-m", "not net", "-q", "--hypothesis-seed=0",
]  # fmt: skip

#: mutmut's verdicts: caught by a test, left alive, or not run to a verdict.
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}
ALIVE = {"survived", "no tests"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: {' '.join(MODULES)}")
    parser.add_argument("--rev", help="mutate this git revision (git archive) instead of the tree")
    parser.add_argument("--children", type=int, default=2, help="mutmut --max-children")
    parser.add_argument("--collect", help=argparse.SUPPRESS)  # internal: run in a copy
    args = parser.parse_args()
    if args.collect:
        json.dump(collect(args.collect), sys.stdout)
        return 0

    from importlib.metadata import version

    if (found := version("mutmut")) != MUTMUT_VERSION:
        sys.exit(f"error: mutmut {found} installed; this reads the files of {MUTMUT_VERSION}")
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        sys.exit(f"error: not in the MODULES of {Path(__file__).name}: {', '.join(unknown)}")
    explanations = load_explanations()
    rows, unexplained = [], 0
    for module in modules:
        started = time.monotonic()
        results = mutate(module, args.rev, args.children)
        row, lines = judge(module, results, explanations)
        row["seconds"] = round(time.monotonic() - started)
        rows.append(row)
        unexplained += row["unexplained"]
        print("\n".join(lines), flush=True)
    print()
    print(table(rows))
    report = SCRATCH / "report.md"
    report.write_text(table(rows) + "\n")
    print(f"\n(also in {report.relative_to(ROOT)})")
    if unexplained:
        print(f"\n{unexplained} unexplained surviving mutant(s): kill each with a test, or")
        print(f"explain it as equivalent in {EXPLANATIONS.relative_to(ROOT)}.")
        return 1
    return 0


def mutate(module: str, rev: str | None, children: int) -> dict[str, dict[str, str]]:
    """Run mutmut over ``module`` in a fresh copy; its mutants' verdicts (and diffs)."""
    work = SCRATCH / module.removesuffix(".py").replace("/", ".")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    copy_tree(work, rev)
    missing = [t for t in [module, *MODULES[module]] if not (work / t).is_file()]
    if missing:
        sys.exit(f"error: {module}: not in the copy: {', '.join(missing)}")
    config = {
        "source_paths": [module],
        "pytest_add_cli_args_test_selection": MODULES[module],
        "also_copy": ALSO_COPY,
        "pytest_add_cli_args": PYTEST_ARGS,
    }
    with (work / "pyproject.toml").open("a") as f:
        f.write("\n[tool.mutmut]\n")
        f.writelines(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
    mutmut = Path(sys.executable).parent / "mutmut"
    print(f"{module}: mutmut run in {work.relative_to(ROOT)} ...", flush=True)
    with (work / "run.log").open("wb") as log:
        run = subprocess.run(
            [mutmut, "run", "--max-children", str(children)],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    if run.returncode:
        tail = (work / "run.log").read_text(errors="replace")[-3000:]
        sys.exit(f"{tail}\nerror: mutmut run failed ({run.returncode}): {work / 'run.log'}")
    out = subprocess.run(
        [sys.executable, __file__, "--collect", module],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def copy_tree(work: Path, rev: str | None) -> None:
    """The working tree's files (tracked, new ones git does not ignore, and the extensions
    built from its C sources), or ``rev``'s (without extensions: the Python fallbacks run)."""
    if rev:
        archive = subprocess.run(
            ["git", "archive", rev], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = list(filter(None, listed.split("\0")))
    # The extensions built from the tree's C sources (git ignores them): without
    # _lookup.so the matcher's compiled branches would never run under a mutant.
    names += [
        str(built.relative_to(ROOT))
        for name in names
        if name.endswith(".c")
        for built in (ROOT / name).parent.glob(Path(name).stem + ".*.so")
    ]
    for name in names:
        source = ROOT / name
        if source.is_file():  # not a file deleted in the tree
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)


def collect(module: str) -> dict[str, dict[str, str]]:
    """In a module's copy after ``mutmut run``: each mutant's verdict, and the diff of each
    one not caught. Reads mutmut's own files (``mutants/<module>.meta``), hence the pin."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    data = SourceFileMutationData(path=Path(module))
    data.load()
    results = {}
    for name, code in data.exit_code_by_key.items():
        status = status_by_exit_code[code]
        results[name] = {"status": status}
        if status not in CAUGHT:
            results[name]["diff"] = get_diff_for_mutant(name, path=Path(module))
    return results


def mutated_line(diff: str) -> str:
    """The lines a mutant writes (its diff's + lines), stripped: what an explanation quotes."""
    return "\n".join(
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    )


def load_explanations() -> dict[str, dict[str, str]]:
    with EXPLANATIONS.open("rb") as f:
        explanations = tomllib.load(f)
    for name, entry in explanations.items():
        if set(entry) != {"mutant", "why"} or not entry["why"].strip():
            sys.exit(f"error: {EXPLANATIONS.name}: [{name!r}] needs exactly 'mutant' and 'why'")
    return explanations


def judge(
    module: str, results: dict[str, dict[str, str]], explanations: dict[str, dict[str, str]]
) -> tuple[dict[str, object], list[str]]:
    """The module's row of the score table, and the lines naming what is left alive."""
    counts = Counter(r["status"] for r in results.values())
    lines = [f"{module}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    explained, unexplained, unfinished = [], [], []
    for name, result in results.items():
        status = result["status"]
        if status in CAUGHT:
            continue
        line = mutated_line(result["diff"])
        entry = explanations.get(name)
        if status in ALIVE and entry and entry["mutant"] == line:
            explained.append(name)
            continue
        why = status
        if entry:
            why += f"; the explanation quotes {entry['mutant']!r}, the mutant is now {line!r}"
        (unexplained if status in ALIVE else unfinished).append(name)
        lines.append(f"  UNEXPLAINED {name} ({why}):")
        lines += [f"    {d}" for d in result["diff"].splitlines()]
    prefix = module.removesuffix(".py").replace("/", ".") + "."
    for name in filter(lambda name: name.startswith(prefix), explanations):
        if name not in results:
            lines.append(f"  note: {name} is explained as equivalent but no longer exists")
        elif (status := results[name]["status"]) in CAUGHT:
            lines.append(f"  note: {name} is explained as equivalent but was {status}")
    lines.append(f"  {len(explained)} survivor(s) explained in {EXPLANATIONS.name}")
    total = len(results)
    caught = sum(counts[s] for s in CAUGHT)
    row = {
        "module": module,
        "mutants": total,
        "caught": caught,
        "equivalent": len(explained),
        "unexplained": len(unexplained) + len(unfinished),
        "score": caught / (total - len(explained)) if total > len(explained) else 1.0,
    }
    return row, lines


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| module | mutants | killed | equivalent (explained) | unexplained survivors | score"
        " | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['module']}` | {r['mutants']} | {r['caught']} | {r['equivalent']} | "
            f"{r['unexplained']} | {r['score']:.1%} | {r['seconds']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
