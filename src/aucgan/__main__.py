"""``python -m aucgan``: the command line."""

import sys

from aucgan.cli import main

sys.exit(main())
