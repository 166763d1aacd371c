"""Every command the documentation tells a user to type is one the code accepts.

The README and ``docs/`` hold several hundred commands: the quick start, the CLI pages and, in
the results pages, the command that regenerates each figure. Options get renamed and arms
removed; a page that keeps the old spelling is a figure nobody can regenerate. This test collects
every ``gcl ...`` (also as ``python -m gcl`` or ``torchrun ... -m gcl.cli.main``),
``python experiments/....py ...`` and ``python benchmarks/....py ...`` command from fenced shell
blocks (``\\`` continuations joined) and inline code spans (joined across a paragraph's lines),
then

- parses each ``gcl`` command with the real parser (``gcl.cli.main.build_parser``), and for
  ``gcl train`` also loads its ``key=value`` overrides against ``TrainConfig`` (the named config
  when it is one of ``configs/``, which must exist; the defaults for a user's own file);
- runs each script up to its ``argparse`` call and stops there (``parse_args`` is wrapped to
  raise once it has parsed), so nothing trains or reads data; a script without ``argparse`` is
  refused unrun. The arms named for ``experiments/results_table.py`` and
  ``experiments/loss_search.py`` must be arms of the script (they are checked after parsing).

A command in prose may be part of one (``gcl soup``, ``gcl evaluate --model``, ``[--data SRC]``):
it is parsed whole too, and only an error a part or a placeholder explains (a missing argument,
``N`` where a number goes) falls back to checking that its ``--options`` exist.

A failure names the page, the line and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
SCRIPT = re.compile(r"(?:experiments|benchmarks)/\w+\.py")
WRAPPERS = {"time": 0, "/usr/bin/time": 0, "nohup": 0, "exec": 0, "env": 0, "do": 0, "then": 0, "nice": 0}
SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}
# an error that a partial command or a placeholder explains, not a wrong spelling
PARTIAL = re.compile(r"required|expected (one|at least one|\d+) arguments?|invalid \w+ value: '[A-Z][A-Z_]*'"
                     r"|invalid choice: '[A-Z][A-Z_|]*'")


@cache
def subcommands() -> frozenset[str]:
    from gcl.cli.main import build_parser

    return frozenset(_subparsers(build_parser()))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command(words: list[str]) -> list[str] | None:
    """``["gcl", ...]`` or ``["python", "experiments/x.py", ...]`` for one simple shell command,
    without its environment assignments and wrappers (``time``, ``nice -n 10``, ``for ...; do``);
    None when it is neither."""
    while words:
        head = words[0]
        if re.fullmatch(r"[A-Za-z_]\w*=.*", head):
            words = words[1:]
        elif head in WRAPPERS:
            words = words[1:]
            while words and words[0].startswith("-"):  # time -v, nice -n 10
                words = words[2:] if words[0] in ("-n",) else words[1:]
        else:
            break
    if not words:
        return None
    if words[0] in ("python", "python3", "torchrun"):
        if "-m" in words:
            i = words.index("-m")
            if i + 1 < len(words) and words[i + 1] in ("gcl", "gcl.cli.main"):
                words = ["gcl", *words[i + 2:]]
        elif len(words) > 1 and SCRIPT.fullmatch(words[1]):
            return words
    elif SCRIPT.fullmatch(words[0]):  # a script named in prose without `python`
        return ["python", *words]
    if words[0] == "gcl" and len(words) > 1 and words[1] in subcommands():
        return words
    return None


def commands_in(text: str) -> list[list[str]]:
    """The commands in a piece of shell: split at ``&&``, ``;``, ``|``; comments, redirections and
    ``$(...)`` substitutions taken out, quotes respected."""
    text = re.sub(r"\$\([^()]*\)", "SUBST", text)
    text = re.sub(r"(?<=\s)\d+(?=[<>])", "", text)  # the 2 of 2>&1: a file descriptor, not a word
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unclosed quote: prose, not a command
        return []
    out, words, redirected = [], [], False
    for tok in [*tokens, ";"]:
        if tok in SEPARATORS:
            cmd = _command(words)
            out += [cmd] if cmd else []
            words, redirected = [], False
        elif set(tok) <= set("<>&") and tok:  # >, >>, >&, &>
            redirected = True
        elif not redirected:
            words.append(tok)
        else:
            redirected = tok.startswith("&") or tok.isdigit()  # the target word of a redirection
    return out


def documented_commands(page: Path) -> list[tuple[int, list[str], bool]]:
    """``(line, argv, whole)`` for every command on ``page``: fenced shell blocks (``whole``: meant
    to be typed as is), then inline code, a paragraph at a time (``whole`` False)."""
    found: list[tuple[int, list[str], bool]] = []
    fence: str | None = None
    block: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []
    prose: list[list[tuple[int, str]]] = []
    for no, line in enumerate([*page.read_text(encoding="utf-8").splitlines(), ""], 1):
        if line.lstrip().startswith("```"):
            prose.append(paragraph)
            paragraph = []
            if fence is None:
                fence, block = line.strip()[3:].strip(), []
                continue
            if fence in SHELL_LANGS:
                found += _block_commands(block)
            fence = None
        elif fence is not None:
            block.append((no, line))
        elif line.strip():
            paragraph.append((no, line))
        else:
            prose.append(paragraph)
            paragraph = []
    for para in filter(None, prose):
        text = "\n".join(line for _, line in para)
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
            no = para[text.count("\n", 0, m.start())][0]
            found += [(no, cmd, False) for cmd in commands_in(m.group(1).replace("\n", " "))]
    return found


def _block_commands(block: list[tuple[int, str]]) -> list[tuple[int, list[str], bool]]:
    found, start, joined = [], None, ""
    for no, text in [*block, (None, "")]:
        start = no if start is None else start
        if text.rstrip().endswith("\\"):
            joined += text.rstrip()[:-1].strip() + " "
            continue
        found += [(start, cmd, True) for cmd in commands_in(joined + text.strip())]
        start, joined = None, ""
    return found


class _Parsed(BaseException):
    """Raised by the wrapped ``parse_args`` once it has parsed: the script does nothing else."""

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace | None):
        self.parser, self.namespace = parser, args  # not .args: BaseException's


def _experiment(name: str):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "experiments"))


def _results_table_arms(args: argparse.Namespace) -> list[str]:
    return [a for a in (args.arms or "").split(",") if a and a not in _experiment("results_table").ARMS]


def _loss_search_arms(args: argparse.Namespace) -> list[str]:
    ls = _experiment("loss_search")
    return [a for a in (args.arms or []) if a not in ls.ARMS and a not in ls.CURRICULA]


ARM_CHECKS = {"experiments/results_table.py": _results_table_arms, "experiments/loss_search.py": _loss_search_arms}


def _leaf(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that ``argv``'s leading words name: ``index build`` → its own parser."""
    subs = _subparsers(parser)
    return _leaf(subs[argv[0]], argv[1:]) if argv and argv[0] in subs else parser


def _unknown_flags(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """That every ``--flag`` shown (also as ``[--flag`` in a synopsis) exists; argparse also takes
    a unique prefix of a long option."""
    known = _leaf(parser, argv)._option_string_actions
    flags = [a.strip("[]|").split("=")[0] for a in argv]
    bad = [f for f in flags if re.fullmatch(r"-[a-zA-Z]|--[a-zA-Z][-\w]*", f)
           and f not in known and sum(k.startswith(f) for k in known if f.startswith("--")) != 1]
    return f"no such option {', '.join(bad)}" if bad else None


def _last_line(err: io.StringIO, code) -> str:
    lines = err.getvalue().strip().splitlines()
    return lines[-1] if lines else f"exit {code}"


def _is_key(dotted: str) -> bool:
    """Whether ``a.b`` is a ``TrainConfig`` key (for ``seed=$s``: the shell gives the value)."""
    from gcl.config import to_dict
    from gcl.training.config import TrainConfig

    node = to_dict(TrainConfig())
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_gcl(argv: list[str], whole: bool = True) -> str | None:
    from gcl.cli.main import build_parser
    from gcl.config import load_config
    from gcl.errors import GCLError
    from gcl.training.config import TrainConfig

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0
        if exc.code == 0:
            return None
        why = _last_line(err, exc.code)
        return _unknown_flags(build_parser(), argv) if not whole and PARTIAL.search(why) else why
    if args.command == "train":
        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config:
            config, overrides = None, [config, *overrides]
        overrides = [o for o in overrides if "$" not in o or not _is_key(o.split("=", 1)[0])]
        if config is not None and not config.startswith("configs/"):
            config = None  # a user's own file or a shell variable: the overrides against the defaults
        elif config is not None and not (ROOT / config).exists():
            return f"no such config {config}"
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
        try:
            parsed = real(self, args, namespace)
        except SystemExit:
            if whole or not PARTIAL.search(err.getvalue()):
                raise
            parsed = None
        raise _Parsed(self, parsed)

    err = io.StringIO()
    environ = dict(os.environ)
    with monkeypatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        mp.setattr(sys, "argv", [str(path), *argv])
        mp.syspath_prepend(str(path.parent))
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(str(path), run_name="__main__")
        except _Parsed as parsed:
            ns = parsed.namespace
            unknown = ARM_CHECKS[script](ns) if ns is not None and script in ARM_CHECKS else []
            if unknown:
                return f"no such arm {', '.join(unknown)}"
            return None if ns is not None else _unknown_flags(parsed.parser, argv)
        except SystemExit as exc:
            if exc.code == 0 and ("-h" in argv or "--help" in argv):
                return None
            return _last_line(err, exc.code)
        except Exception as exc:  # an import it needs, or a bug before parsing: this command fails, not the page
            return f"{type(exc).__name__}: {exc}"
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return "ran to the end without parsing its arguments"


def _synopsis(argv: list[str]) -> bool:
    """A usage line in prose (``[--kind exact|hnsw]``, ``...``): not a command to parse whole."""
    return any(re.search(r"[\[\]]|^\.\.\.$|^\|$", a) for a in argv)


def _check(argv: list[str], whole: bool, monkeypatch) -> str | None:
    if not whole and _synopsis(argv):
        if argv[0] == "gcl":
            from gcl.cli.main import build_parser

            return _unknown_flags(build_parser(), argv[1:])
        argv = [a for a in argv if not _synopsis([a])]
    if argv[0] == "gcl":
        return _check_gcl(argv[1:], whole)
    return _check_script(argv[1], argv[2:], monkeypatch, whole)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_is_accepted(page, monkeypatch):
    bad = []
    for no, argv, whole in documented_commands(page):
        why = _check(argv, whole, monkeypatch)
        if why:
            bad.append(f"{page.relative_to(ROOT)}:{no}: {shlex.join(argv)}\n    {why}")
    assert not bad, "documented commands the code refuses:\n" + "\n".join(bad)


def test_the_pages_hold_the_commands_they_should():
    """A collector that silently found nothing would pass every page."""
    counts = {p.relative_to(ROOT).as_posix(): documented_commands(p) for p in PAGES}
    assert sum(map(len, counts.values())) > 500
    readme = [shlex.join(argv) for _, argv, _ in counts["README.md"]]
    assert "gcl evaluate" in readme and "gcl train configs/homedepot_gcl.yaml optim.steps=500 --evaluate" in readme
    assert "gcl train configs/homedepot_gcl.yaml" in readme  # the torchrun line, as gcl
    results = [argv[1] for _, argv, _ in counts["docs/results.md"] if argv[0] == "python"]
    assert results.count("experiments/results_table.py") > 20


def test_the_collector_finds_commands_in_every_form(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "Run `gcl evaluate --bm25` first, then `python experiments/loss_search.py\n"
        "--report` (a span over two lines), or `experiments/stop_step.py --help`.\n"
        "\n"
        "```bash\n"
        "gcl train configs/homedepot_gcl.yaml \\\n"
        "    optim.steps=5 seed=1   # a comment\n"
        "OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --queries 10 > out.txt 2>&1 && gcl index info --index x\n"
        'gcl search --index x "a > b; c #2" | head\n'
        "X=$(mktemp -d) /usr/bin/time -v python -m gcl evaluate --bm25 --cache-dir $X\n"
        "for s in 0 1; do nice -n 10 gcl train seed=$s; done\n"
        "torchrun --nproc_per_node 2 -m gcl.cli.main train configs/homedepot_gcl.yaml\n"
        "pip install -e .\n"
        "```\n"
        "```text\n"
        "gcl train not-a-command-in-an-output-block\n"
        "```\n"
        "```\n"
        "gcl          0.6618   0.5703\n"  # an output table: not a subcommand
        "```\n")
    assert [(no, shlex.join(argv), whole) for no, argv, whole in documented_commands(page)] == [
        (5, "gcl train configs/homedepot_gcl.yaml optim.steps=5 seed=1", True),
        (7, "python benchmarks/bench_metrics.py --queries 10", True),
        (7, "gcl index info --index x", True),
        (8, "gcl search --index x 'a > b; c #2'", True),
        (9, "gcl evaluate --bm25 --cache-dir '$X'", True),
        (10, "gcl train 'seed=$s'", True),
        (11, "gcl train configs/homedepot_gcl.yaml", True),
        (1, "gcl evaluate --bm25", False),
        (1, "python experiments/loss_search.py --report", False),
        (2, "python experiments/stop_step.py --help", False),
    ]


def test_a_wrong_command_is_caught(monkeypatch):
    assert "unrecognized arguments: --no-such-flag" in _check_gcl(["evaluate", "--no-such-flag"])
    assert "config" in _check_gcl(["train", "configs/homedepot_gcl.yaml", "optim.no_such_key=1"])
    assert "config" in _check_gcl(["train", "my_own.yaml", "optim.no_such_key=1"])
    assert _check_gcl(["train", "configs/homedepot_gcl_fsat.yaml"]) == "no such config configs/homedepot_gcl_fsat.yaml"
    assert _check_gcl(["train", "configs/homedepot_gcl.yaml", "optim.steps=5"]) is None
    # prose: a part of a command, or a placeholder, is fine; a wrong option or choice is not
    assert _check_gcl(["soup"], whole=False) is None
    assert _check_gcl(["serve", "--threads", "N"], whole=False) is None
    assert _check(["gcl", "evaluate", "[--model", "DIR", "|", "--bm25]", "[--data", "SRC]"], False, monkeypatch) is None
    assert _check(["gcl", "evaluate", "[--no-such-flag]"], False, monkeypatch) == "no such option --no-such-flag"
    assert _check(["gcl", "evaluate", "[--no-such-flag]"], True, monkeypatch)  # in a shell block: parsed whole
    assert _check_gcl(["train", "seed=$s", "out_dir=runs/x-$s"]) is None  # the shell gives the values
    assert "config" in _check_gcl(["train", "sed=$s"])
    assert "invalid choice" in _check_gcl(["evaluate", "--protocol", "bogus"], whole=False)
    assert "invalid choice: 'bugdet'" in _check_script("experiments/results_table.py", ["--profile", "bugdet"],
                                                       monkeypatch, whole=False)
    assert "no-such-arm" in _check_script("experiments/results_table.py", ["--arms", "gcl,no-such-arm"], monkeypatch)
    assert "no-such-arm" in _check_script("experiments/loss_search.py", ["--arms", "gcl", "no-such-arm"], monkeypatch)
    assert "unrecognized arguments" in _check_script("experiments/loss_search.py", ["--no-such-flag"], monkeypatch)
    assert _check_script("experiments/loss_search.py", ["--report"], monkeypatch) is None
    assert _check_script("experiments/no_such.py", [], monkeypatch) == "no such script experiments/no_such.py"
