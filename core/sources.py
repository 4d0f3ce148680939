"""Frame sources. Each delivers RGB uint8 ``(H, W, 3)`` frames at its native size.

The ``--source`` grammar is parsed by :func:`open_source`; each kind registers a parser with
:func:`register_source`, so later kinds (screen, camera) plug into the same grammar.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import cv2
import numpy as np

from .frames import as_rgb


class SourceError(RuntimeError):
    """A source cannot be opened or read. The message says what to do."""


class Source:
    """A producer of frames.

    ``read()`` returns the next frame, or ``None`` when the source has ended (a file without
    loop). ``live`` sources (screen, camera, pattern) produce frames in real time whether or not
    anyone keeps up, so the runner drops the oldest frame when the stylizer falls behind; a
    non-live source (a file) is read only as fast as it is consumed, so nothing is dropped.
    """

    live: bool = True
    #: Native frame rate if known (a file's or a camera's), else None.
    fps: float | None = None
    name: str = "source"

    def open(self) -> None:
        """Acquire the device/file. Called in the thread that will call ``read``."""

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device/file. Safe to call twice."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


class PatternSource(Source):
    """A moving synthetic test card: colour bars, a sweeping circle, a ramp and a frame counter.

    Paced to ``fps`` in real time when ``realtime`` (a stand-in for a camera), else as fast as
    it is read. Needs no hardware, so it is what tests and the soak use.
    """

    name = "pattern"

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0, realtime: bool = True):
        self.size = size
        self.fps = fps
        self.live = realtime
        self._n = 0
        self._t0: float | None = None
        w, h = size
        # The static background is drawn once; only the moving parts are drawn per frame.
        bars = np.array([[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0],
                         [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]], np.uint8)
        cols = (np.arange(w) * len(bars) // w)
        self._background = np.repeat(bars[cols][None, :, :], h, axis=0)
        ramp = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)
        self._background[h * 3 // 4:, :, :] = ramp[None, :, None]

    def read(self) -> np.ndarray:
        if self.live:
            now = time.perf_counter()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self._n / self.fps
            if due > now:
                time.sleep(due - now)
        img = self._background.copy()
        w, h = self.size
        t = self._n / self.fps
        cx = int(w * (0.5 + 0.35 * math.sin(t * 1.3)))
        cy = int(h * (0.4 + 0.2 * math.cos(t * 0.9)))
        cv2.circle(img, (cx, cy), max(4, h // 6), (240, 80, 40), -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), max(4, h // 6), (20, 20, 20), max(1, h // 120), cv2.LINE_AA)
        scale = max(0.4, h / 360)
        cv2.putText(img, f"stylecam {self._n:06d}", (w // 20, h // 8), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
        self._n += 1
        return img


class FileSource(Source):
    """A video file read with OpenCV; ``loop`` restarts it at the end (a stand-in for a camera)."""

    live = False

    def __init__(self, path: str, loop: bool = False):
        self.path = path
        self.loop = loop
        self.name = f"file:{path}"
        self._cap: cv2.VideoCapture | None = None
        self.frame_count = 0

    def open(self) -> None:
        if not os.path.exists(self.path):
            raise SourceError(f"video file not found: {self.path}")
        if os.path.isdir(self.path):
            raise SourceError(f"{self.path} is a folder; give a video file such as clip.mp4")
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot read {self.path} as video (unsupported or corrupt file)")
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"{self.path} holds no readable video frames")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            self.open()
        ok, img = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self._cap.read()
        if not ok or img is None:
            return None
        return as_rgb(img, order="bgr")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# ---- the --source grammar -------------------------------------------------------------------

#: kind -> factory(argument or None, options) -> Source
_SOURCES: dict[str, Callable[[str | None, dict], Source]] = {}


def register_source(kind: str, factory: Callable[[str | None, dict], Source]) -> None:
    _SOURCES[kind] = factory


def source_kinds() -> list[str]:
    return sorted(_SOURCES)


def open_source(spec: str, **options) -> Source:
    """Build (not open) the source that ``spec`` names, e.g. ``pattern`` or ``file:clip.mp4``.

    ``options`` carries run settings a source may use (``size``, ``fps``, ``loop``).
    Raises ``ValueError`` for a spec that does not parse.
    """
    kind, _, arg = (spec or "").partition(":")
    factory = _SOURCES.get(kind.strip().lower())
    if factory is None:
        raise ValueError(f"unknown source {spec!r}: expected one of {', '.join(_source_forms())}")
    return factory(arg if _ else None, options)


def _source_forms() -> list[str]:
    forms = {"pattern": "pattern", "file": "file:PATH", "demo": "demo (the bundled clip)"}
    return [forms.get(k, k) for k in source_kinds()]


def _pattern(arg: str | None, options: dict) -> Source:
    if arg:
        raise ValueError(f"'pattern' takes no argument, got pattern:{arg}")
    return PatternSource(size=options.get("size") or (1280, 720), fps=options.get("fps") or 30.0,
                         realtime=options.get("realtime", True))


def _file(arg: str | None, options: dict) -> Source:
    if not arg:
        raise ValueError("'file' needs a path: file:PATH")
    return FileSource(os.path.expanduser(arg), loop=bool(options.get("loop", False)))


def demo_clip_path() -> str:
    """The clip bundled with stylecam (DAVIS-2017 blackswan, CC BY 4.0; see core/data/README.md)."""
    from importlib import resources

    return str(resources.files("stylecam.core").joinpath("data/blackswan.mp4"))


def _demo(arg: str | None, options: dict) -> Source:
    if arg:
        raise ValueError(f"'demo' takes no argument, got demo:{arg}")
    return FileSource(demo_clip_path(), loop=bool(options.get("loop", False)))


register_source("pattern", _pattern)
register_source("file", _file)
register_source("demo", _demo)
