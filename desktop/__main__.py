"""``python -m stylecam.desktop``: the tray app (the same as ``stylecam-tray``)."""

import sys

from .app import main

sys.exit(main())
