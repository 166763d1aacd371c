"""Every command the documentation tells a user to type is one the code accepts.

The README and ``docs/`` hold a few hundred commands: the quick start, the CLI pages and, in the
results pages, the command that regenerates each figure. Options get renamed and arms removed;
a page that keeps the old spelling is a figure nobody can regenerate. This test collects every
``gcl ...``, ``python experiments/....py ...`` and ``python benchmarks/....py ...`` command from
fenced shell blocks (``\\`` continuations joined) and inline code spans, then

- parses each ``gcl`` command with the real parser (``gcl.cli.main.build_parser``), and for
  ``gcl train`` also loads the config with its ``key=value`` overrides (unknown keys are errors);
- runs each script up to its ``argparse`` call and stops there (``parse_args`` is wrapped to
  raise once it has parsed), so nothing trains or reads data; a script without ``argparse`` is
  refused unrun.

A command named in prose (inline code) may be part of one (``gcl soup``, ``gcl evaluate
--model``): there only its ``--options`` must exist.

A failure names the page, the line and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SUBCOMMANDS = ("evaluate", "train", "split", "index", "search", "serve", "calibrate", "export", "soup")
COMMAND = re.compile(
    r"^(?:[A-Z_]+=\S+\s+)*(?P<cmd>gcl (?:%s)\b.*|python (?:experiments|benchmarks)/\w+\.py\b.*)$"
    % "|".join(SUBCOMMANDS))
SHELL_LANGS = ("", "bash", "sh", "shell", "console")


def _cut(text: str) -> list[str]:
    """The commands in one shell line: split at ``&&`` / ``;``, without comments, pipes and
    redirections."""
    out = []
    for part in re.split(r"&&|;", re.split(r"\s#", text, maxsplit=1)[0]):
        part = re.split(r"\s\|\s|\s\d?>>?\s?\S", part.strip(), maxsplit=1)[0].strip()
        if part.startswith("$ "):
            part = part[2:]
        m = COMMAND.match(part)
        if m:
            out.append(m.group("cmd"))
    return out


def documented_commands(page: Path) -> list[tuple[int, str, bool]]:
    """``(line, command, whole)`` for every command on ``page``: fenced shell blocks (``whole``:
    meant to be typed as is), then inline code (prose that may name a command by part of it:
    ``gcl soup``, ``gcl evaluate --model``)."""
    found: list[tuple[int, str, bool]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    fence: str | None = None
    block: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    for no, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, block = line.strip()[3:].strip(), []
                continue
            if fence in SHELL_LANGS:
                start, joined = None, ""
                for bno, text in block:
                    start = bno if start is None else start
                    if text.rstrip().endswith("\\"):
                        joined += text.rstrip()[:-1].strip() + " "
                        continue
                    found += [(start, c, True) for c in _cut(joined + text.strip())]
                    start, joined = None, ""
            fence = None
        elif fence is not None:
            block.append((no, line))
        else:
            prose.append((no, line))
    for no, line in prose:
        for span in re.findall(r"`([^`]+)`", line):
            found += [(no, c, False) for c in _cut(span)]
    return found


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _leaf(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that ``argv``'s leading words name: ``index build`` → its own parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and argv and argv[0] in action.choices:
            return _leaf(action.choices[argv[0]], argv[1:])
    return parser


def _unknown_flags(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """For a command named in prose: only that every ``--flag`` it shows exists (argparse also
    takes a unique prefix)."""
    known = _leaf(parser, argv)._option_string_actions
    bad = [f for f in (a.split("=")[0] for a in argv if re.match(r"-[-a-zA-Z]", a))
           if f not in known and sum(k.startswith(f) for k in known if f.startswith("--")) != 1]
    return f"no such option {', '.join(bad)}" if bad else None


def _check_gcl(argv: list[str], whole: bool = True) -> str | None:
    from gcl.cli.main import build_parser
    from gcl.config import load_config
    from gcl.errors import GCLError
    from gcl.training.config import TrainConfig

    if not whole:
        return _unknown_flags(build_parser(), argv)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    if args.command == "train":
        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config:
            config, overrides = None, [config, *overrides]
        if config is not None and not (ROOT / config).exists():
            return None  # a user's own config file, named as an example
        try:
            load_config(TrainConfig, ROOT / config if config else None, overrides)
        except GCLError as exc:
            return f"config: {exc}"
    return None


def _check_script(script: str, argv: list[str], monkeypatch, whole: bool = True) -> str | None:
    path = ROOT / script
    if not path.exists():
        return f"no such script {script}"
    if "argparse" not in path.read_text(encoding="utf-8"):  # never run a script to find out
        return "takes its arguments without argparse: no --help, no checked options"
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        if whole:
            real(self, args, namespace)
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    monkeypatch.syspath_prepend(str(path.parent))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
    except _Parsed as parsed:
        return None if whole else _unknown_flags(parsed.parser, argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return None
        return (err.getvalue().strip().splitlines() or [f"exit {exc.code} before parsing"])[-1]
    finally:
        monkeypatch.undo()
    return "ran to the end without parsing its arguments"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_is_accepted(page, monkeypatch):
    bad = []
    for no, cmd, whole in documented_commands(page):
        argv = shlex.split(cmd)
        if argv[0] == "gcl":
            why = _check_gcl(argv[1:], whole)
        else:
            why = _check_script(argv[1], argv[2:], monkeypatch, whole)
        if why:
            bad.append(f"{page.relative_to(ROOT)}:{no}: {cmd}\n    {why}")
    assert not bad, "documented commands the code refuses:\n" + "\n".join(bad)


def test_the_collector_finds_commands_in_every_form(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "Run `gcl evaluate --bm25` first, then `python experiments/loss_search.py --report`.\n"
        "```bash\n"
        "gcl train configs/homedepot_gcl.yaml \\\n"
        "    optim.steps=5 seed=1   # a comment\n"
        "OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --queries 10 > out.txt && gcl index info --index x\n"
        "pip install -e .\n"
        "```\n"
        "```text\n"
        "gcl train not-a-command-in-an-output-block\n"
        "```\n"
        "```\n"
        "gcl          0.6618   0.5703\n"  # an output table: not a subcommand
        "```\n")
    assert documented_commands(page) == [
        (3, "gcl train configs/homedepot_gcl.yaml optim.steps=5 seed=1", True),
        (5, "python benchmarks/bench_metrics.py --queries 10", True),
        (5, "gcl index info --index x", True),
        (1, "gcl evaluate --bm25", False),
        (1, "python experiments/loss_search.py --report", False),
    ]


def test_a_wrong_command_is_caught(monkeypatch):
    assert "unrecognized arguments: --no-such-flag" in _check_gcl(["evaluate", "--no-such-flag"])
    assert "config" in _check_gcl(["train", "configs/homedepot_gcl.yaml", "optim.no_such_key=1"])
    assert _check_gcl(["train", "configs/homedepot_gcl.yaml", "optim.steps=5"]) is None
    assert "unrecognized arguments" in _check_script("experiments/loss_search.py", ["--no-such-flag"], monkeypatch)
    assert _check_script("experiments/loss_search.py", ["--report"], monkeypatch) is None
    assert _check_script("experiments/no_such.py", [], monkeypatch) == "no such script experiments/no_such.py"
