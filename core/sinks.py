"""Frame sinks: where stylized frames go.

The ``--sink`` grammar is parsed by :func:`open_sink`; each kind registers a parser with
:func:`register_sink` so later kinds (virtual camera, MJPEG) use the same grammar. A sink is
opened with the output size and rate, then gets frames one by one in order.
"""

from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np

from .frames import Frame


class SinkError(RuntimeError):
    """A sink cannot be opened or written. The message says what to do."""


class Sink:
    name: str = "sink"

    def open(self, size: tuple[int, int], fps: float) -> None:
        """Prepare for frames of ``size`` = (W, H) at ``fps``."""

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NullSink(Sink):
    """Discards frames (benchmarks, soak tests); counts them."""

    name = "null"

    def __init__(self):
        self.count = 0

    def write(self, frame: Frame) -> None:
        self.count += 1


class FileSink(Sink):
    """An ``.mp4`` (or ``.avi``) video, or a folder of lossless PNG frames (a path ending in /)."""

    def __init__(self, path: str):
        self.path = path
        self.name = f"file:{path}"
        self.is_dir = path.endswith(("/", os.sep)) or os.path.isdir(path)
        ext = os.path.splitext(path)[1].lower()
        if not self.is_dir and ext not in (".mp4", ".avi", ".mkv"):
            raise ValueError(f"file sink {path!r}: give a video path ending in .mp4 or a folder ending in /")
        self._writer: cv2.VideoWriter | None = None
        self.count = 0

    def open(self, size: tuple[int, int], fps: float) -> None:
        self.size = size
        if self.is_dir:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise SinkError(f"cannot create output folder {self.path}: {e.strerror}") from e
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise SinkError(f"cannot create folder {parent}: {e.strerror}") from e
        ext = os.path.splitext(self.path)[1].lower()
        # mp4v (MPEG-4 part 2) is the codec OpenCV's bundled FFmpeg can always write; MJPG in AVI.
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(self.path, fourcc, float(fps), size)
        if not writer.isOpened():
            raise SinkError(f"cannot write video {self.path} (is the folder writable?)")
        self._writer = writer

    def write(self, frame: Frame) -> None:
        img = frame.image
        if (img.shape[1], img.shape[0]) != self.size:
            raise SinkError(f"frame of size {img.shape[1]}x{img.shape[0]} given to a sink opened at "
                            f"{self.size[0]}x{self.size[1]}")
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if self.is_dir:
            out = os.path.join(self.path, f"frame_{self.count:06d}.png")
            # Compression level 1: lossless either way, and several times faster than the default.
            if not cv2.imwrite(out, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise SinkError(f"cannot write {out} (disk full or folder not writable?)")
        else:
            self._writer.write(bgr)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# ---- the --sink grammar -------------------------------------------------------------------

_SINKS: dict[str, Callable[[str | None, dict], Sink]] = {}


def register_sink(kind: str, factory: Callable[[str | None, dict], Sink]) -> None:
    _SINKS[kind] = factory


def sink_kinds() -> list[str]:
    return sorted(_SINKS)


def open_sink(spec: str, **options) -> Sink:
    """Build (not open) the sink that ``spec`` names, e.g. ``null``, ``file:out.mp4``, ``file:frames/``."""
    kind, _, arg = (spec or "").partition(":")
    factory = _SINKS.get(kind.strip().lower())
    if factory is None:
        raise ValueError(f"unknown sink {spec!r}: expected one of {', '.join(_sink_forms())}")
    return factory(arg if _ else None, options)


def _sink_forms() -> list[str]:
    forms = {"null": "null", "file": "file:PATH.mp4 | file:DIR/"}
    return [forms.get(k, k) for k in sink_kinds()]


def _null(arg: str | None, options: dict) -> Sink:
    if arg:
        raise ValueError(f"'null' takes no argument, got null:{arg}")
    return NullSink()


def _file(arg: str | None, options: dict) -> Sink:
    if not arg:
        raise ValueError("'file' needs a path: file:OUT.mp4 or file:DIR/")
    return FileSink(os.path.expanduser(arg))


register_sink("null", _null)
register_sink("file", _file)
