"""Seeded demo scenes with known truth: :mod:`landfuse.core.demo_scene`, run as a script.

Usage: python scripts/demo_data.py OUT_DIR [--size 768] [--seed 1]
"""

import sys

from landfuse.core.demo_scene import *  # noqa: F403 (the scripts and tests load this file)
from landfuse.core.demo_scene import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
