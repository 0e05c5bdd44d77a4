"""``python -m pyinvert``: the command line (see pyinvert.cli)."""

import sys

from pyinvert.cli import main

sys.exit(main())
