"""The ``gcl`` command line (filled in by gcl.cli.main)."""


def main(argv=None):  # pragma: no cover - replaced below
    from gcl.cli.main import main as _main

    return _main(argv)
