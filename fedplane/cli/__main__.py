"""`python -m fedplane.cli` runs the `fedplane` command, as `python -m fedplane` does."""

import sys

from fedplane.cli import main

sys.exit(main())
