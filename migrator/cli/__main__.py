"""`python -m migrator.cli ...`: the same as the `migrator` command."""

import sys

from . import main

sys.exit(main())
