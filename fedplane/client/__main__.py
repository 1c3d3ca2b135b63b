import sys

from fedplane.client.cli import main

sys.exit(main())
