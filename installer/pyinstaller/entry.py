"""Entry point of the frozen app: one program, started by two names.

The name it was started by picks the program: ``stylecam-tray`` is the tray app, anything else
(``stylecam``) the command line. So both share one analysed set of modules (torch analysed
once), and on Linux and macOS ``stylecam`` is only a link to ``stylecam-tray``. On Windows they
are two executables, because only a console executable gets a console there.
"""

import multiprocessing
import os
import sys


def main() -> int:
    # argv[0], not sys.executable: the bootloader resolves links, the name typed is in argv[0].
    name = os.path.basename(sys.argv[0] or sys.executable).lower()
    if name.startswith("stylecam-tray"):
        from stylecam.desktop.app import main as program
    else:
        from stylecam.core.cli import main as program
    return program()


if __name__ == "__main__":
    # A frozen program that (through torch or a DataLoader) starts worker processes must hand
    # them back to multiprocessing here, or each child would start the whole app again.
    multiprocessing.freeze_support()
    sys.exit(main())
