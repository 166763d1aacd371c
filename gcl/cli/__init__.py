"""The ``gcl`` command line: :func:`main` runs ``gcl COMMAND ...`` (defined in :mod:`gcl.cli.main`,
imported on the first call so that importing this package stays cheap)."""


def main(argv=None):
    from gcl.cli.main import main as run

    return run(argv)
