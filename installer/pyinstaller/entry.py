"""Entry point of the frozen app: one program, two executables.

PyInstaller runs this file as ``__main__`` in both executables of the bundle; the executable's
own name picks the program, so the tray app and the command line share one analysed set of
modules (torch is analysed once, not twice).
"""

import multiprocessing
import os
import sys


def main() -> int:
    name = os.path.basename(sys.executable).lower()
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
