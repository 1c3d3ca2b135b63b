"""`python -m fedplane` runs the `fedplane` command."""

import sys

from fedplane.cli import main

sys.exit(main())
