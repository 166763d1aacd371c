"""``python -m gcl``: the ``gcl`` command line."""

import sys

from gcl.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
