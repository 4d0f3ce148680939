"""What the command line and its subcommands share: the user-error type, argument types and the
style lookup.

Contract: every function raises :class:`UsageError` (or argparse's ``ArgumentTypeError`` inside
a parser) with one line that says what was wrong and what would work; ``cli.main`` prints it and
exits 2. Subcommand modules (bench, gallery, doctor, models) import these from here, never from
``cli``, which loads them by name: nothing imports ``cli`` back.
"""

from __future__ import annotations

import argparse
import os
import sys


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one :class:`UsageError` line, not usage + error."""

    def error(self, message):
        raise UsageError(message)


def size(text: str):
    """``WxH`` -> ``(width, height)``, for argparse's ``type=``."""
    from .frames import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    """A whole number >= 1, for argparse's ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of 1 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A rate in (0, 1000], for argparse's ``type=``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1000, got {value}")
    return value


def resolve_style(style_name: str | None, backend: str | None):
    """The Style to run: by name, or the default for the backend. Raises UsageError."""
    from .styles import StyleError, find_style, load_styles

    styles, warnings = load_styles()
    for w in warnings:
        print(f"stylecam: warning: {w}", file=sys.stderr)
    if style_name is None:
        wanted = backend or "classic"
        candidates = [s for s in styles.values() if s.backend == wanted]
        if not candidates:
            raise UsageError(f"no style uses the {wanted} backend")
        style_name = "oil" if wanted == "classic" and "oil" in styles else candidates[0].name
    try:
        style = find_style(style_name, styles)
    except StyleError as e:
        raise UsageError(str(e)) from None
    if backend and style.backend != backend:
        raise UsageError(f"style {style.name!r} uses the {style.backend} backend, not {backend}; "
                         f"pick a {backend} style (see `stylecam styles`)")
    return style


#: What OpenCV writes pictures as (``cv2.imwrite`` picks the format by the extension).
PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def check_output(path: str | None, flag: str, *, folder: bool = False,
                 extensions: tuple[str, ...] | None = None) -> None:
    """Refuse (UsageError) an output that cannot be written, before any work: a results file or
    picture (``folder`` False) whose folder is missing or not writable, or that is a folder; a
    folder of pictures (made where missing) where a file is. What a command measures for minutes must not end in a
    traceback at the last step."""
    if not path:
        return
    if folder:  # made, with its parents, where missing
        place = os.path.abspath(path)
        while not os.path.exists(place):
            place = os.path.dirname(place)
        if not os.path.isdir(place):
            raise UsageError(f"{flag} {path}: {place} is a file, not a folder")
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if extensions and not path.lower().endswith(extensions):
        raise UsageError(f"{flag} {path}: give a picture file name ({', '.join(extensions)})")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path}: cannot be written (no permission)")
