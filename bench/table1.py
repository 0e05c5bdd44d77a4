"""Reproduce CVPR 2015 Table 1 (HOG, HOGb, DSIFT inversion error) on the bundled photos.

Same as ``pyinvert reproduce table1``; extra arguments go to it, e.g. ``--steps 200``.
"""

import sys

from pyinvert.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table1", *sys.argv[1:]]))
