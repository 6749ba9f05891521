"""`python -m didray`: the same command line as `didray`."""

import sys

from didray.cli import main

sys.exit(main())
