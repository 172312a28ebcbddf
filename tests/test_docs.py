"""The README and docs/*.md say what the code does: a reader who follows them literally
meets no command the parser refuses, no option, metric or file that is not there.

The operator's guide is walked for real on a fresh Debian (``make test-walk``, opt-in);
this is the cheap half that runs in ``make test``: every check is in-process and reads
the code's own tables (argparse parsers, mitmproxy's registered options, the metric
tables), never runs a command against a system. Each failure names the doc file and line.

``KNOWN`` lists findings in docs this module's author may not edit (others were editing
them): each entry is one doc and the text that fails there, with the fix. The lead
applies the fix and removes the entry; an entry that no longer fails fails
``test_known_findings_still_fail``, so the list only shrinks.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import dataclasses
import functools
import glob
import importlib
import importlib.util
import io
import re
import shlex
import sys
import tempfile
import tokenize
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Findings the lead is to fix in docs owned by others: (doc, check, failing text) -> the fix.
#: Empty it as the docs are fixed (test_known_findings_still_fail says which are done).
KNOWN: dict[tuple[str, str, str], str] = {}

# -- reading the docs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a doc: where it is, its text, and the fenced block it is in (if any)."""

    doc: Path
    number: int
    text: str
    fence: str | None  # the block's info string ("" untagged), None outside blocks

    @property
    def where(self) -> str:
        return f"{rel(self.doc)}:{self.number}"


@functools.cache
def doc_lines(doc: Path) -> tuple[Line, ...]:
    """The doc's lines; those in fenced blocks lose the fence's indentation."""
    out: list[Line] = []
    fence: str | None = None
    marker, indent = "", 0
    for number, raw in enumerate(doc.read_text().splitlines(), 1):
        stripped = raw.lstrip()
        if fence is None:
            opened = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if opened:
                marker, fence, indent = opened[1], opened[2], len(raw) - len(stripped)
                continue
            out.append(Line(doc, number, raw, None))
        elif stripped.startswith(marker) and not stripped.strip(marker[0]).strip():
            fence = None
        else:
            out.append(Line(doc, number, raw[indent:] if raw[:indent].isspace() else raw, fence))
    return tuple(out)


def all_lines() -> Iterator[Line]:
    for doc in DOCS:
        yield from doc_lines(doc)


def rel(doc: Path) -> str:
    """The doc's path in the repository (a doc elsewhere, as the self-test's: its name)."""
    return str(doc.relative_to(ROOT)) if doc.is_relative_to(ROOT) else doc.name


Failures = list[tuple[Line, str, str]]  # (the line, the failing text, why)


def per_docs(check: Callable[[], Failures]) -> Callable[[], Failures]:
    """Run ``check`` once per set of docs read (its test and test_known_findings_still_fail
    share the answer; the self-test's broken doc gets its own)."""
    answers: dict[tuple[object, ...], Failures] = {}

    @functools.wraps(check)
    def cached() -> Failures:
        key = (*DOCS, OPTIONS_DOC)
        if key not in answers:
            answers[key] = check()
        return answers[key]

    return cached


def report(check: str, failures: Failures) -> None:
    """Fail with every (line, failing text, why) that is not a known finding."""
    new = [
        f"{line.where}: {why}"
        for line, text, why in failures
        if (rel(line.doc), check, text) not in KNOWN
    ]
    assert not new, f"{len(new)} doc line(s) disagree with the code:\n" + "\n".join(new)


def found(check: str, failures: Failures) -> set[tuple[str, str, str]]:
    return {(rel(line.doc), check, text) for line, text, _ in failures}


# -- 1. command lines --------------------------------------------------------------------------

SHELL_FENCES = {"", "sh", "bash", "shell", "console"}
#: Lines of a diagram in an untagged block (``blocklist-sync --(hosts)--> ...``): not commands.
DIAGRAM = re.compile(r"-->|--\(|<--")
#: Sample values for placeholders the docs write as <NAME>, by NAME (else "sample").
PLACEHOLDERS = {"id": "3f1c2a9d0b7e4c55", "port": "8081", "file": "/tmp/sample"}
SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<<", "<<<", ">|"}


def strip_comment(text: str) -> str:
    """``text`` up to a shell comment: a # at a word's start, outside quotes."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def shell_lines() -> Iterator[tuple[Line, str]]:
    """Each shell line of a fenced block, its backslash continuations joined; the body of a
    here-document (a file's text, not commands) left out."""
    for doc in DOCS:
        lines = [line for line in doc_lines(doc) if line.fence in SHELL_FENCES]
        i, until = 0, ""
        while i < len(lines):
            first, text = lines[i], strip_comment(lines[i].text).rstrip()
            i += 1
            if until:
                until = "" if first.text.strip() == until else until
                continue
            while (
                text.endswith("\\")
                and i < len(lines)
                and lines[i].number == lines[i - 1].number + 1
            ):
                text = text[:-1] + " " + strip_comment(lines[i].text).strip()
                i += 1
            if heredoc := HEREDOC.search(text):
                until = heredoc[2]
            yield first, text


def simple_commands(text: str) -> Iterator[list[str]]:
    """The words of each simple command on a shell line, redirections dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    tokens = iter(lexer)
    for token in tokens:
        if token in SEPARATORS:
            yield words
            words = []
        elif token in REDIRECTS:
            next(tokens, None)
            if words and words[-1].isdigit():  # 2>&1: the 2 was the redirection's
                words.pop()
        else:
            words.append(token)
    yield words


def unwrap(words: list[str]) -> list[str]:
    """The command under sudo, ``runuser -u USER --``, env and VAR=value prefixes."""
    while words:
        if words[0] == "sudo":  # and its options: sudo -u blocklist -E ...
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] in {"-u", "-g"} else words[1:]
        elif words[0] in {"$", "exec", "env"}:  # $: a prompt
            words = words[1:]
        elif words[0] == "runuser" and "--" in words:
            words = words[words.index("--") + 1 :]
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        else:
            return words
    return words


def scripts() -> dict[str, str]:
    """Console script -> module, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name: target.split(":")[0] for name, target in project["scripts"].items()}


@functools.cache
def script_parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser a console script's module builds (``build_parser`` or
    ``_parser``): what the command itself parses its arguments with."""
    module = importlib.import_module(scripts()[name])
    for attribute in ("build_parser", "_parser"):
        if callable(make := getattr(module, attribute, None)):
            parser = make()
            assert isinstance(parser, argparse.ArgumentParser)
            return parser
    raise AssertionError(f"{name}: {module.__name__} has no build_parser() or _parser()")


def command_words(words: list[str]) -> tuple[str, list[str]] | None:
    """(script or "make", its arguments) when ``words`` runs one of ours, else None."""
    words = unwrap(words)
    if not words:
        return None
    first = words[0]
    name = first.rsplit("/", 1)[-1]
    if name in scripts() and (first == name or first.endswith(f"bin/{name}")):
        return name, words[1:]
    if first == "make":
        return "make", words[1:]
    return None


def sample_values(words: list[str]) -> list[str] | None:
    """Placeholders in argument values (<ID>) replaced by sample values; None when a word
    stands for words left out (``...``), which no parser can check."""
    if "..." in words:
        return None
    return [
        re.sub(r"<([^<>]+)>", lambda m: PLACEHOLDERS.get(m[1].lower(), "sample"), word)
        for word in words
    ]


@functools.cache
def makefile_targets() -> frozenset[str]:
    """The Makefile's targets (``name:`` at a line's start, not ``name :=``)."""
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


Parsed = tuple[argparse.Namespace, list[str]]


def parse_error(
    parser: argparse.ArgumentParser, words: list[str], known: bool = False
) -> Parsed | str:
    """(namespace, words left over) or the parser's error message (argparse exits on one)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if known:
                return parser.parse_known_args(words)
            return parser.parse_args(words), []
        except SystemExit as exit_:
            if exit_.code in (0, None):  # --help, --version: accepted
                return argparse.Namespace(), []
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exit_)


def check_proxy(words: list[str]) -> str | None:
    """blocklist-proxy: its own flags, then what it passes to mitmdump, parsed by mitmdump's
    parser; every --set names a registered option and a value of its type."""
    parsed = parse_error(script_parser("blocklist-proxy"), words, known=True)
    if isinstance(parsed, str):
        return parsed
    _, rest = parsed
    from mitmproxy.tools import cmdline

    opts = mitmproxy_options()
    parsed = parse_error(cmdline.mitmdump(opts), rest)
    if isinstance(parsed, str):
        return f"mitmdump refuses what blocklist-proxy passes on: {parsed}"
    namespace, _ = parsed
    for setting in getattr(namespace, "setoptions", None) or []:
        key, _, value = setting.partition("=")
        if key not in opts:
            return f"--set {key}: no such option"
        if error := value_error(key, value):
            return f"--set {setting}: {error}"
    return None


def value_error(key: str, value: str) -> str | None:
    """Why option ``key`` refuses the text ``value`` (its type, its choices), or None."""
    option = mitmproxy_options()._options[key]
    try:
        mitmproxy_options()._parse_setval(option, [value])
    except Exception as exc:
        return str(exc)
    if option.choices and value not in option.choices:
        return f"not one of {option.choices}"
    return None


@per_docs
def command_failures() -> Failures:
    """Our command lines in the docs' shell blocks that their parsers (or make) refuse."""
    failures = []
    for line, text in shell_lines():
        if DIAGRAM.search(text):
            continue
        try:
            commands = list(simple_commands(text))
        except ValueError as exc:  # unbalanced quotes: prose, or a command no shell runs
            if command_words(text.split()) is not None:
                failures.append((line, text, f"not a shell line ({exc}): {text}"))
            continue
        for words in commands:
            ours = command_words(words)
            if ours is None:
                continue
            name, args = ours
            values = sample_values(args)
            if values is None:
                continue
            shown = " ".join([name, *args])
            if name == "make":
                for target in (a for a in values if "=" not in a and not a.startswith("-")):
                    if target not in makefile_targets():
                        failures.append((line, shown, f"`{shown}`: no make target {target}"))
                continue
            if name == "blocklist-proxy":
                error = check_proxy(values)
            else:
                parsed = parse_error(script_parser(name), values)
                error = parsed if isinstance(parsed, str) else None
            if error:
                failures.append((line, shown, f"`{shown}`: {name} refuses it: {error}"))
    return failures


INLINE_MAKE = re.compile(r"`make((?: [\w.=/-]+)*)`")


@per_docs
def inline_make_failures() -> Failures:
    """`make TARGET` in prose (README's table, the docs' pointers): the target exists."""
    failures = []
    for line in all_lines():
        if line.fence is not None:
            continue
        for match in INLINE_MAKE.finditer(line.text):
            words = [w for w in match[1].split() if w != "..."]  # ...: words left out
            targets = [w for w in words if "=" not in w and not w.startswith("-")]
            failures += [
                (line, match[0], f"{match[0]}: no make target {t}")
                for t in targets
                if t not in makefile_targets()
            ]
    return failures


@per_docs
def inline_command_failures() -> Failures:
    """Our commands in prose code spans (`blocklist-divert resolve --quiet`): every word
    accepted. A span may be a fragment (`blocklist-sync suppress`, its ID left out), so an
    argument missing is not a failure; synopses ([--store URL], PATH...) are skipped."""
    failures = []
    for line in all_lines():
        if line.fence is not None:
            continue
        for span in re.findall(r"`([^`]+)`", line.text):
            if "[" in span or "..." in span:
                continue
            try:
                ours = command_words(shlex.split(span))
            except ValueError:
                continue
            if ours is None or ours[0] == "make":
                continue
            name, args = ours
            if name == "blocklist-proxy":
                error = check_proxy(args)
            else:
                parsed = parse_error(script_parser(name), args)
                error = parsed if isinstance(parsed, str) else None
            if error and "arguments are required" not in error:
                failures.append((line, span, f"`{span}`: {name} refuses it: {error}"))
    return failures


SCRIPT_RUN = re.compile(r"python3? ((?:bench|testlab|fuzz|mutate)/[\w/]+\.py)([^`|;&#]*)")


@per_docs
def script_flag_failures() -> Failures:
    """``.venv/bin/python bench/proxy.py --flag``: each --flag is one the script defines (it
    is in its source as a string). Weaker than a parse: those scripts build their parsers
    inside main(), and running them is what this module avoids."""
    failures = []
    for line in all_lines():
        for match in SCRIPT_RUN.finditer(line.text):
            source = ROOT / match[1]
            if not source.is_file():
                continue  # the path check names it
            text = source.read_text()
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", match[2]):
                if flag == "--help" and "argparse" in text:
                    continue
                if f'"{flag}"' not in text and f"'{flag}'" not in text:
                    failures.append((line, flag, f"{match[1]} {flag}: the script has no {flag}"))
    return failures


def test_every_command_line_parses() -> None:
    """A reader copies the docs' command lines: each must get past the command's parser."""
    report(
        "command",
        command_failures()
        + inline_make_failures()
        + inline_command_failures()
        + script_flag_failures(),
    )


def test_the_command_lines_are_found() -> None:
    """The scan above reads what it should: the commands of each kind the docs show."""
    seen = set()
    for _, text in shell_lines():
        with contextlib.suppress(ValueError):
            seen |= {ours[0] for w in simple_commands(text) if (ours := command_words(w))}
    assert {"blocklist-sync", "blocklist-proxy", "blocklist-divert", "make"} <= seen, seen


def help_example_failures() -> tuple[int, list[str]]:
    """How many example lines the commands' --help texts (their parsers' epilogs) show,
    and those the command refuses."""
    failures, checked = [], 0
    for name in scripts():
        parser = script_parser(name)
        for text in (parser.epilog or "").replace("\\\n", " ").splitlines():
            words = strip_comment(text).split()
            if not words or words[0] != name:
                continue
            args = shlex.split(strip_comment(text))[1:]
            checked += 1
            if name == "blocklist-proxy":
                error = check_proxy(args)
            else:
                parsed = parse_error(parser, args)
                error = parsed if isinstance(parsed, str) else None
            if error:
                failures.append(f"{name} --help shows `{text.strip()}`, which it refuses: {error}")
    return checked, failures


def test_help_examples_parse() -> None:
    """The examples in a command's own --help are docs too (product code: the lead fixes)."""
    checked, failures = help_example_failures()
    assert checked >= 10, f"only {checked} examples found in the commands' --help"
    assert not failures, "\n".join(failures)


# -- 2. mitmproxy options ---------------------------------------------------------------------


@functools.cache
def mitmproxy_options() -> Any:
    """Every option mitmdump with the addon loaded has: mitmproxy's, its default addons'
    and the blocklist addon's (as ``mitmdump -s addon.py --options`` lists them)."""
    from mitmproxy import options
    from mitmproxy.tools import dump

    from blocklist_addon.addon import BlocklistAddon

    async def build() -> options.Options:
        opts = options.Options()
        master = dump.DumpMaster(opts, with_termlog=False, with_dumper=True)
        master.addons.add(BlocklistAddon())
        master._legacy_log_events.uninstall()  # its loop ends here: log nothing into it
        return opts

    return asyncio.run(build())


def addon_options() -> dict[str, Any]:
    """The blocklist_ options the addon registers, by name."""
    opts = mitmproxy_options()
    return {k: o for k, o in opts._options.items() if k.startswith("blocklist_")}


#: blocklist_ names in the docs that are neither options nor metrics, each with the file
#: that defines it (test_other_names_are_defined: the name is in that file).
OTHER_NAMES = {
    "blocklist_addon": "pyproject.toml",  # the package
    "blocklist_proxy": "deploy/transparent/blocklist-transparent.nft",  # nft table, BIRD protocol
    "blocklist_divert4": "divert/planes/bird.py",  # BIRD static protocols
    "blocklist_divert6": "divert/planes/bird.py",
}
NAME = re.compile(r"(?<![\w-])blocklist_[a-z0-9_]+\*?")
#: What a metric's name looks like (the rest of the blocklist_ names are options).
METRIC_LIKE = re.compile(
    r"blocklist_(?:list|hashes|sync|divert|store)_|_total$|_seconds$|_timestamp|_up$"
)


def test_other_names_are_defined() -> None:
    """The blocklist_ names let through as neither option nor metric are where they are said
    to be defined."""
    for name, path in OTHER_NAMES.items():
        assert re.search(rf"\b{name}\b", (ROOT / path).read_text()), f"{name} not in {path}"


def named(line: Line) -> Iterator[str]:
    """The blocklist_ names on a line (a trailing * marks a prefix: blocklist_list_*)."""
    for match in NAME.finditer(line.text):
        yield match[0]


def unknown_names() -> Iterator[tuple[Line, str, bool]]:
    """Each blocklist_ name on a doc line that is no option, metric or OTHER_NAMES entry,
    and whether it looks like a metric (else it is taken for an option)."""
    options, metrics = addon_options(), code_metrics()
    known = options.keys() | metrics | OTHER_NAMES.keys()
    for line in all_lines():
        for name in named(line):
            if name in known:
                continue
            prefix = name.rstrip("*")
            grep = line.fence is None and re.search(rf"grep [^`]*{name}\b", line.text)
            if (name.endswith("*") or grep) and any(k.startswith(prefix) for k in known):
                continue  # a pattern: blocklist_list_* or `... | grep blocklist_image`
            yield line, name, bool(METRIC_LIKE.search(prefix))


@per_docs
def option_failures() -> Failures:
    """blocklist_ names that are not options (nor metrics, nor OTHER_NAMES)."""
    return [
        (line, name, f"{name}: no such option of the addon (nor a metric)")
        for line, name, metric in unknown_names()
        if not metric
    ]


def test_every_option_named_exists() -> None:
    """A blocklist_ setting the docs name must be one the addon registers."""
    report("option", option_failures())


SETTING = re.compile(r"(?<![\w-])(?:--set[ =])?(blocklist_[a-z0-9_]+)=([^\s`'\",;)]*)")


@per_docs
def setting_failures() -> Failures:
    """``blocklist_x=value`` and ``--set blocklist_x=value`` anywhere: a value the option
    takes (its type, its choices)."""
    options = addon_options()
    failures = []
    for line in all_lines():
        for match in SETTING.finditer(line.text):
            name, value = match[1], match[2]
            if name in options and (error := value_error(name, value)):
                failures.append((line, match[0], f"{match[0]}: {error}"))
    return failures


def test_every_setting_named_takes_its_value() -> None:
    """A setting written as ``blocklist_intercept=never`` is one the option accepts."""
    report("setting", setting_failures())


@per_docs
def yaml_failures() -> Failures:
    """Keys of YAML blocks that are proxy configs (--config FILE): known options, values of
    their type."""
    from mitmproxy import optmanager
    from mitmproxy.utils import typecheck

    opts = mitmproxy_options()
    failures = []
    for lines in fenced_blocks("yaml"):
        loaded = optmanager.parse("\n".join(line.text for line in lines))
        if not isinstance(loaded, dict):
            continue  # alert rules and the like: a list, not options
        for key, value in loaded.items():
            line = next((x for x in lines if re.match(rf"\s*{key}\s*:", x.text)), lines[0])
            if key not in opts:
                failures.append((line, key, f"{key}: no such mitmproxy option"))
                continue
            option = opts._options[key]
            try:
                typecheck.check_option_type(key, value, option.typespec)
            except TypeError as exc:
                failures.append((line, key, f"{key}: {exc}"))
                continue
            if option.choices and value not in option.choices:
                failures.append((line, key, f"{key}: {value!r} not one of {option.choices}"))
    return failures


def test_yaml_proxy_configs_name_options() -> None:
    """A proxy config the docs show loads: every key an option, every value of its type."""
    report("yaml", yaml_failures())


#: The doc whose table lists every option.
OPTIONS_DOC = ROOT / "docs" / "proxy.md"


def table(doc: Path, header: str) -> list[tuple[Line, list[str]]]:
    """The rows (line, cells) of the doc's table whose header row starts with ``header``."""
    rows: list[tuple[Line, list[str]]] = []
    inside = False
    for line in doc_lines(doc):
        if line.fence is not None:
            continue
        if not inside:
            inside = line.text.startswith(header)
        elif not line.text.startswith("|"):
            break
        elif not re.match(r"\|\s*-", line.text):
            rows.append((line, [c.strip() for c in line.text.strip().strip("|").split("|")]))
    return rows


def options_table(doc: Path) -> dict[str, tuple[Line, str]]:
    """docs/proxy.md's options table: option -> (its row, its default column)."""
    rows: dict[str, tuple[Line, str]] = {}
    for line, cells in table(doc, "| option | default |"):
        for name in re.findall(r"`(blocklist_[a-z0-9_]+)`", cells[0]):
            rows[name] = (line, cells[1])
    return rows


def test_every_option_is_in_the_options_table() -> None:
    """Every option the addon registers has a row in docs/proxy.md's table."""
    assert not (missing := table_missing()), (
        f"{rel(OPTIONS_DOC)}'s options table lacks {len(missing)}: {missing}"
    )


def table_missing() -> list[str]:
    """The options without a row in OPTIONS_DOC's table."""
    rows = options_table(OPTIONS_DOC)
    assert rows, f"{rel(OPTIONS_DOC)}: no options table (| option | default | what it does |)"
    return sorted(set(addon_options()) - set(rows))


@per_docs
def table_default_failures() -> Failures:
    """Rows whose default column starts with a literal (a number, true/false, `word`)
    that is not the option's default."""
    options = addon_options()
    failures = []
    for name, (line, cell) in options_table(OPTIONS_DOC).items():
        first = cell.split(" ", 1)[0]
        said = first.strip("`")
        if name not in options or not (
            first.startswith("`") or re.search(r"\d", said) or said in {"true", "false", "empty"}
        ):
            continue  # a description (embedded store, data dir), not a value
        said = "" if said == "empty" else said
        default = options[name].default
        actual = str(default).lower() if isinstance(default, bool) else str(default)
        if said != actual:
            failures.append(
                (line, name, f"{name}: the table says default {said}, it is {actual!r}")
            )
    return failures


def test_options_table_defaults() -> None:
    """The table's defaults are the options' defaults (where the column gives a value)."""
    report("default", table_default_failures())


# -- 3. metrics -------------------------------------------------------------------------------


@functools.cache
def code_metrics() -> frozenset[str]:
    """Every metric the code exports: the proxy's counters and its lists' gauges (as its
    /metrics names them), blocklist-sync's and blocklist-divert run's metrics files."""
    from blocklist_addon.addon import BlocklistAddon
    from blocklist_addon.ops.metrics import COUNTERS
    from divert import runreport
    from sync import metrics as sync_metrics

    addon = BlocklistAddon()
    gauges = addon.lists.gauges() + addon.images.hashes.gauges()
    return frozenset(
        [*COUNTERS, *(g.name for g in gauges), *sync_metrics.METRICS, *runreport.METRICS]
    )


@per_docs
def metric_failures() -> Failures:
    return [
        (line, name, f"{name}: no such metric in the code (nor an option)")
        for line, name, metric in unknown_names()
        if metric
    ]


#: Labels: name -> label -> its constant values in the code, or None where one is computed.
Labels = dict[str, dict[str, set[str] | None]]


@functools.cache
def counter_labels() -> Labels:
    """The labels the proxy's counters are bumped with: the keywords of every
    ``metrics.inc("name", ..., label=value)`` in blocklist_addon (``**kind.labels``: kind)."""
    out: Labels = {}
    for source in (ROOT / "blocklist_addon").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "inc"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            labels = out.setdefault(node.args[0].value, {})
            for keyword in node.keywords:
                label = keyword.arg or "kind"  # **self.kind.labels: {"kind": "hashes"} or {}
                seen = labels.get(label, set())
                if keyword.arg and isinstance(keyword.value, ast.Constant) and seen is not None:
                    labels[label] = seen | {str(keyword.value.value)}
                else:
                    labels[label] = None  # computed: any value
    return out


SELECTOR = re.compile(r"(?<![\w-])(blocklist_[a-z0-9_]+)\{([^}]*)\}")


@per_docs
def label_failures() -> Failures:
    """``name{label,...}`` and ``name{label="value"}`` in the docs: labels the counter is
    bumped with, and a value it can have where the code's values are all constants."""
    known = counter_labels()
    failures = []
    for line in all_lines():
        for match in SELECTOR.finditer(line.text):
            name = match[1]
            if name not in known:
                continue  # gauges and the metrics files: their labels are not read here
            for part in match[2].split(","):
                label = re.match(r"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)?\s*\"?([\w.-]*)", part)
                if label is None:
                    continue
                values = known[name].get(label[1], set())
                if label[1] not in known[name]:
                    why = f"{match[0]}: {name} has no label {label[1]} ({sorted(known[name])})"
                    failures.append((line, match[0], why))
                elif label[2] == "=" and values is not None and label[3] not in values:
                    why = f"{match[0]}: {name}'s {label[1]} is one of {sorted(values)}"
                    failures.append((line, match[0], why))
    return failures


def test_every_metric_label_named_exists() -> None:
    """A label a query or alert selects on is one the counter carries."""
    report("label", label_failures())


def test_every_metric_named_exists() -> None:
    """A metric a dashboard or alert is written from must be one the code exports."""
    report("metric", metric_failures())


def test_every_metric_is_documented() -> None:
    """Every metric the code exports is named (in full) somewhere in the docs."""
    missing = undocumented_metrics()
    assert not missing, f"{len(missing)} metric(s) named in no doc: {missing}"


def undocumented_metrics() -> list[str]:
    """The code's metrics no doc names in full (a prefix pattern names none)."""
    documented = {name for line in all_lines() for name in named(line)}
    return sorted(code_metrics() - documented)


# -- configuration files -----------------------------------------------------------------------


def fenced_blocks(fence: str) -> Iterator[list[Line]]:
    """Each fenced block of one kind (python, toml, ...), as its lines."""
    for doc in DOCS:
        block: list[Line] = []
        for line in doc_lines(doc):
            if line.fence == fence and block and block[-1].number == line.number - 1:
                block.append(line)
            elif line.fence == fence:
                if block:
                    yield block
                block = [line]
        if block:
            yield block


@per_docs
def toml_failures() -> Failures:
    """TOML blocks are sync.toml or divert.toml text (whole, or keys to add): each loads
    with the command's own config reader (unknown keys and bad values are errors there)."""
    from blocklist_addon.ops.config import ConfigError
    from divert import config as divert_config
    from sync import config as sync_config

    sync_keys = {f.name for f in dataclasses.fields(sync_config.SyncConfig)}
    divert_keys = {f.name for f in dataclasses.fields(divert_config.DivertConfig)}
    failures = []
    for block in fenced_blocks("toml"):
        first, text = block[0], "\n".join(line.text for line in block)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            failures.append((first, text, f"not TOML: {exc}"))
            continue
        if raw and all(isinstance(v, dict) and "mutant" in v for v in raw.values()):
            continue  # mutate/equivalent.toml's format, read by mutate/mutate.py
        try:
            if set(raw) <= sync_keys:
                with tempfile.TemporaryDirectory() as directory:
                    path = Path(directory) / "sync.toml"
                    path.write_text(text)
                    sync_config.load_config(path)
            elif set(raw) <= divert_keys:
                divert_config.from_mapping(raw)
            else:
                unknown = sorted(set(raw) - sync_keys - divert_keys)
                failures.append((first, text, f"TOML keys of no config: {unknown}"))
        except ConfigError as exc:
            failures.append((first, text, f"the config reader refuses it: {exc}"))
    return failures


def test_config_examples_load() -> None:
    """A sync.toml or divert.toml the docs show is one the commands accept."""
    report("toml", toml_failures())


# -- the library examples ----------------------------------------------------------------------

OURS = ("blocklist_addon", "sync", "divert", "testlab")
#: A comment that shows a value (``# 'http://...'``, ``# Match(...)``, ``# None: why``),
#: not one that explains.
OUTPUT = re.compile(r"(None|True|False)\b|['\"\[{\d-]|[A-Z]\w*\(")


def shown(comment: str) -> str | None:
    """The value an output comment shows (``None: a sibling...`` shows None), else None."""
    text = comment.lstrip("#").strip()
    if not (match := OUTPUT.match(text)):
        return None
    return match[1] or text


def same(expected: str, actual: str) -> bool:
    """``actual`` is what ``expected`` shows, its ``…`` and ``...`` standing for anything."""
    pattern = ".*".join(re.escape(part) for part in re.split(r"…|\.\.\.", expected))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def outputs(source: str, tree: ast.Module) -> dict[int, tuple[int, str]]:
    """Statement index -> (line, the value its output comment shows): the comment on its
    last line or on the comment lines right after it."""
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found: dict[int, tuple[int, str]] = {}
    for index, node in enumerate(tree.body):
        end = node.end_lineno or node.lineno
        following = tree.body[index + 1].lineno if index + 1 < len(tree.body) else end + 99
        for row in range(end, following):
            if row in comments and (value := shown(comments[row])) is not None:
                found[index] = (row, value)
                break
    return found


@per_docs
def python_failures() -> Failures:
    """Python examples: what they import from this project exists, with the attributes
    used on it; one that needs no store (no ``.load(``) runs, and each value an output
    comment shows is what the line gives."""
    failures = []
    for block in fenced_blocks("python"):
        source = "\n".join(line.text for line in block)
        first = block[0]
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            failures.append((first, source, f"python example: {exc}"))
            continue
        imported: dict[str, object] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OURS:
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    line = block[node.lineno - 1]
                    if not hasattr(module, alias.name):
                        why = f"python example: {node.module} has no {alias.name}"
                        failures.append((line, alias.name, why))
                    else:
                        imported[alias.asname or alias.name] = getattr(module, alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and not hasattr(imported[node.value.id], node.attr)
            ):
                name = f"{node.value.id}.{node.attr}"
                line = block[node.lineno - 1]
                failures.append((line, name, f"python example: no {name}"))
        shows = outputs(source, tree)
        if ".load(" in source or not shows or any(f[0] in block for f in failures):
            continue  # it needs a store, shows nothing to compare, or cannot run
        namespace: dict[str, object] = {}
        for index, node in enumerate(tree.body):
            line = block[node.lineno - 1]
            try:
                if isinstance(node, ast.Expr) and index in shows:
                    value = eval(
                        compile(ast.Expression(node.value), rel(first.doc), "eval"), namespace
                    )
                    row, expected = shows[index]
                    if not same(expected, repr(value)):
                        why = f"python example shows {expected}, it gives {value!r}"
                        failures.append((block[row - 1], expected, why))
                else:
                    exec(compile(ast.Module([node], []), rel(first.doc), "exec"), namespace)
            except Exception as exc:
                failures.append((line, line.text, f"python example fails: {exc!r}"))
                break
    return failures


def test_python_examples_run_as_shown() -> None:
    """A reader pastes the library examples: the names exist, the values are as shown."""
    report("python", python_failures())


# -- 4. repository paths and links ------------------------------------------------------------

TOP = "deploy|tests|bench|docs|testlab|blocklist_addon|divert|sync|samples|fuzz|mutate"
PATH = re.compile(rf"(?<![\w./@~$-])(?:{TOP})/[\w./@*-]*")


@per_docs
def path_failures() -> Failures:
    failures = []
    for line in all_lines():
        for match in PATH.finditer(line.text):
            path = match[0].rstrip(".,:;")
            if "*" in path:
                if not glob.glob(path, root_dir=ROOT):
                    failures.append((line, path, f"{path}: matches no file in the repository"))
            elif not (ROOT / path).exists() or (path.endswith("/") and not (ROOT / path).is_dir()):
                failures.append((line, path, f"{path}: no such file in the repository"))
        for match in SUBPATH.finditer(line.text):
            if not any(f.endswith(f"/{match[0]}") for f in source_files()):
                why = f"{match[0]}: no such file in blocklist_addon/, sync/ or divert/"
                failures.append((line, match[0], why))
    return failures


#: A source file named inside its package (``urls/snapshot.py``, ``planes/bird.py``).
SUBPATH = re.compile(rf"(?<![\w./-])(?!(?:{TOP})/)(?:[a-z_]+/)+[a-z_]\w*\.(?:py|c)\b")


@functools.cache
def source_files() -> frozenset[str]:
    """The project's source files, as paths from the repository's root."""
    return frozenset(
        str(path.relative_to(ROOT))
        for package in ("blocklist_addon", "sync", "divert")
        for path in (ROOT / package).rglob("*")
        if path.suffix in {".py", ".c"}
    )


def test_every_repository_path_exists() -> None:
    """A file the docs point at (deploy/..., tests/..., bench/...) is there."""
    report("path", path_failures())


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation but - and _ dropped,
    spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(doc: Path) -> frozenset[str]:
    """The anchors GitHub makes for the doc's headings (repeats get -1, -2, ...), and
    explicit <a id=...> / <a name=...>."""
    seen: dict[str, int] = {}
    out = set()
    for line in doc_lines(doc):
        if line.fence is not None:
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line.text)
        if heading:
            base = slug(heading[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line.text))
    return frozenset(out)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@per_docs
def link_failures() -> Failures:
    failures = []
    for line in all_lines():
        if line.fence is not None:
            continue
        prose = re.sub(r"`[^`]*`", "", line.text)  # code spans hold no links
        for match in LINK.finditer(prose):
            target = match[1]
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (line.doc.parent / path).resolve() if path else line.doc
            if not file.exists():
                failures.append((line, target, f"link {target}: no such file"))
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                failures.append(
                    (line, target, f"link {target}: no heading #{anchor} in {path or 'this doc'}")
                )
    return failures


def test_every_link_resolves() -> None:
    """A relative link goes to a file that exists and, with #anchor, to one of its headings."""
    report("link", link_failures())


def test_slug_follows_github() -> None:
    """The anchors as GitHub makes them (checked against headings of this repository's
    docs as GitHub renders them)."""
    assert slug("Store URLs and Redis Sentinel") == "store-urls-and-redis-sentinel"
    assert slug("4. A small ISP: `blocklist-divert` (two-stage)") == (
        "4-a-small-isp-blocklist-divert-two-stage"
    )
    assert slug("The gates, and the config") == "the-gates-and-the-config"
    assert slug("blocklist_store & [links](x.md)") == "blocklist_store--links"


# -- the mutation table ------------------------------------------------------------------------


def mutation_table(doc: Path) -> dict[str, set[str]]:
    """docs/mutation.md's table: module -> the test files its row names (first column's
    first path; the second column's paths)."""
    rows: dict[str, set[str]] = {}
    for _, cells in table(doc, "| module | its tests"):
        if module := re.search(r"`([\w/]+\.py)`", cells[0]):
            rows[module[1]] = set(re.findall(r"`(tests/[\w/]+\.py)`", cells[1]))
    return rows


def test_mutation_table_is_mutate_py_s() -> None:
    """docs/mutation.md's table of modules and their tests is mutate/mutate.py's MODULES."""
    spec = importlib.util.spec_from_file_location("mutate_table", ROOT / "mutate" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # constants and functions only: main() is not called
    code = {name: set(tests) for name, tests in module.MODULES.items()}
    assert mutation_table(ROOT / "docs" / "mutation.md") == code


# -- the known findings -----------------------------------------------------------------------


def test_known_findings_still_fail() -> None:
    """Each KNOWN entry still fails: a fixed doc's entry is to be removed, not kept."""
    failing = (
        found(
            "command",
            command_failures()
            + inline_make_failures()
            + inline_command_failures()
            + script_flag_failures(),
        )
        | found("option", option_failures())
        | found("setting", setting_failures())
        | found("yaml", yaml_failures())
        | found("default", table_default_failures())
        | found("metric", metric_failures())
        | found("label", label_failures())
        | found("python", python_failures())
        | found("toml", toml_failures())
        | found("path", path_failures())
        | found("link", link_failures())
    )
    fixed = sorted(set(KNOWN) - failing)
    assert not fixed, f"fixed, remove from KNOWN: {fixed}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: rel(d))
def test_docs_have_no_unclosed_fence(doc: Path) -> None:
    """An unclosed ``` would hide the rest of a doc from every check above."""
    count = sum(1 for raw in doc.read_text().splitlines() if re.match(r"\s*(```|~~~)", raw))
    assert count % 2 == 0, f"{rel(doc)}: {count} fence lines, one is not closed"


#: A doc with one break of each kind, and the line each check must name.
BROKEN = """\
# Broken

```sh
blocklist-sync --no-such-flag
blocklist-divert export --format json --family 5
blocklist-proxy --set blocklist_intercept=sometimes
make no-such-target
```

`blocklist_no_such_option`, `blocklist_no_such_total`, `blocklist_log_url=maybe`, `make nope`,
`blocklist-divert resolve --quite`, `blocklist-sync suppress` (a fragment: no failure),
`blocklist_tls_total{verdict}`, `blocklist_uploads_checked_total{file="audio"}`,
`.venv/bin/python bench/proxy.py --no-such-flag`

See `deploy/no-such-file.conf`, `urls/no_such.py`, [gone](no-such.md), [gone](#nowhere).

```yaml
blocklist_store: 1
no_such_mitmproxy_option: true
```

| option | default | what it does |
| --- | --- | --- |
| `blocklist_poll` | 7 | a wrong default |

```python
from blocklist_addon import NoSuchThing, canonicalize

canonicalize.no_such_attribute
```

```python
from blocklist_addon import canonicalize

canonicalize("HTTP://Example.COM/a/../b")  # 'http://example.com/a/../b'
```

```toml
[feeds.hotline]
url = "https://feed.example.net/list.csv"
fromat = "csv"
```

```toml
next_hop = ["not-an-address"]
```

```toml
no_such_setting = 1
```
"""


def test_each_check_catches_a_broken_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check above can fail, naming the doc and line (a doc broken on purpose)."""
    doc = tmp_path / "broken.md"
    doc.write_text(BROKEN)
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [doc], raising=True)
    monkeypatch.setattr(sys.modules[__name__], "OPTIONS_DOC", doc, raising=True)

    def lines(failures: Failures) -> list[str]:
        return sorted(line.where for line, _, _ in failures)

    assert lines(command_failures()) == ["broken.md:4", "broken.md:5", "broken.md:6", "broken.md:7"]
    assert lines(inline_make_failures()) == ["broken.md:10"]
    assert lines(inline_command_failures()) == ["broken.md:11"]
    assert lines(script_flag_failures()) == ["broken.md:13"]
    assert lines(option_failures()) == ["broken.md:10"]
    assert lines(setting_failures()) == ["broken.md:10", "broken.md:6"]  # prose and --set
    assert lines(metric_failures()) == ["broken.md:10"]
    assert lines(label_failures()) == ["broken.md:12", "broken.md:12"]
    assert lines(path_failures()) == ["broken.md:15", "broken.md:15"]
    assert lines(link_failures()) == ["broken.md:15", "broken.md:15"]
    assert lines(yaml_failures()) == ["broken.md:18", "broken.md:19"]
    assert lines(table_default_failures()) == ["broken.md:24"]
    assert lines(toml_failures()) == ["broken.md:39", "broken.md:45", "broken.md:49"]
    assert lines(python_failures()) == ["broken.md:27", "broken.md:29", "broken.md:35"]
    assert "blocklist_image_threshold" in table_missing()
    assert "blocklist_lookups_total" in undocumented_metrics()
    with pytest.raises(AssertionError, match=r"broken\.md:4: `blocklist-sync --no-such-flag`"):
        report("command", command_failures())
