"""``python -m jaxprune ...`` == the ``jaxprune`` console script (see :mod:`jaxprune.cli`)."""

import sys

from jaxprune.cli import main

if __name__ == "__main__":
    sys.exit(main())
