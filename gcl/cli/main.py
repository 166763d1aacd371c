"""``gcl`` command line: ``main(argv)`` is callable from tests and returns the exit code.

User mistakes (bad data, bad config, missing files) print one clear ``error:`` line on stderr and
exit with status 2; nothing else is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import sys

from gcl import __version__
from gcl.errors import GCLError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from gcl.cli import calibrate, evaluate, export, index, serve, soup, split, train

    parser = argparse.ArgumentParser(prog="gcl", description="Generalized Contrastive Learning: train and evaluate graded retrieval models.")
    parser.add_argument("--version", action="version", version=f"gcl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate.add_parser(sub)
    train.add_parser(sub)
    split.add_parser(sub)
    index.add_parser(sub)  # gcl index build|info, gcl search
    serve.add_parser(sub)  # gcl serve
    calibrate.add_parser(sub)  # gcl calibrate
    export.add_parser(sub)  # gcl export
    soup.add_parser(sub)  # gcl soup
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
