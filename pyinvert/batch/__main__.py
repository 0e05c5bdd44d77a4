"""``python -m pyinvert.batch MANIFEST --out DIR`` (also under ``torchrun ... -m``)."""

import sys

from pyinvert.batch.command import main

sys.exit(main())
