"""`python -m hwgen` runs the CLI."""

import sys

from hwgen.cli import main

sys.exit(main())
