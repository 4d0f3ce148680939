"""Whether stylecam's environment should (re)install torch, for installer/setup_venv.sh.

    python installer/torch_wanted.py SPEC [--explicit]

SPEC is the pip arguments of the wanted build (``torch==V --index-url .../cu130``: what
installer/pick_torch.sh prints, or the user's STYLECAM_TORCH). Prints one line and exits 0:

* ``install``            torch does not import in this Python;
* ``keep``               the installed build will do;
* ``replace: <why>``     it will not: setup_venv.sh uninstalls it and installs SPEC.

The rule. A build the user named (``--explicit``: STYLECAM_TORCH, or the desktop installer's
choice) replaces an installed torch of another version or another build (the local version
label, ``2.13.0+cpu``, against the index's last path part, ``.../whl/cu130``). A build picked
for this machine replaces only a CPU build with a CUDA one: the NVIDIA driver came after the
first set-up, which is what the doctor's GPU fix tells the user to re-run the set-up for; it
never swaps a CUDA build the user chose for a CPU one. Standard library only (it runs before
stylecam's dependencies are installed).
"""

from __future__ import annotations

import re
import sys

_PIN = re.compile(r"(?:^|\s)torch==(\S+)")
_INDEX = re.compile(r"--(?:extra-)?index-url[= ](\S+)")


def wanted_build(spec: str) -> tuple[str | None, str | None]:
    """(pinned version without its local label, build) named by SPEC; None where it names none."""
    pin = _PIN.search(spec)
    index = _INDEX.search(spec)
    version = pin.group(1).partition("+")[0] if pin else None
    build = index.group(1).rstrip("/").rsplit("/", 1)[-1] if index else None
    return version, build


def decide(spec: str, installed: str | None, explicit: bool) -> str:
    """What to do with the installed torch (its ``__version__``, None when it does not import)."""
    if installed is None:
        return "install"
    base, _, label = installed.partition("+")
    version, build = wanted_build(spec)
    if explicit:
        if version is not None and version != base:
            return f"replace: torch {installed} is installed, {version} is asked for"
        if build is not None and build != label:
            return f"replace: the installed torch {installed} is not the {build} build asked for"
        return "keep"
    if label == "cpu" and build is not None and build.startswith("cu"):
        return (f"replace: torch {installed} is the CPU build and this machine now has an NVIDIA "
                f"driver for the {build} build")
    return "keep"


def installed_version() -> str | None:
    try:
        import torch
    except Exception:  # missing, or broken: either way a fresh install is what helps
        return None
    return str(torch.__version__)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--explicit"]
    if len(args) != 1:
        print("usage: torch_wanted.py SPEC [--explicit]", file=sys.stderr)
        return 2
    print(decide(args[0], installed_version(), "--explicit" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
