"""Frame sources. Each delivers RGB uint8 ``(H, W, 3)`` frames at its native size.

The ``--source`` grammar is parsed by :func:`open_source`; each kind registers a parser with
:func:`register_source`, so later kinds (screen, camera) plug into the same grammar.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from typing import Callable

import cv2
import numpy as np

from .frames import as_rgb

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source cannot be opened or read. The message says what to do."""


class Source:
    """A producer of frames.

    ``read()`` returns the next frame, or ``None`` when the source has ended (a file without
    loop). ``live`` sources (screen, camera, pattern) produce frames in real time whether or not
    anyone keeps up, so the runner drops the oldest frame when the stylizer falls behind; a
    non-live source (a file) is read only as fast as it is consumed, so nothing is dropped.

    Contract: ``open``, ``read`` and ``close`` are called from the runner's capture thread only
    (mss and some camera drivers are bound to the thread that opened them); ``read`` may block
    for up to a frame period and returns a new array each time (the runner keeps references);
    any layout :func:`~.frames.as_rgb` accepts is fine. Failures to open raise
    :class:`SourceError` with what to do; a source that loses its device mid-stream says so with
    ``connected`` and keeps returning its last frame while it reconnects.
    """

    live: bool = True
    #: Native frame rate if known (a file's or a camera's), else None.
    fps: float | None = None
    name: str = "source"
    #: Called with a one-sentence message when the source hits a problem it gets past (a
    #: damaged stretch of a clip); the CLI prints it, anything else finds it in the log.
    on_warning: Callable[[str], None] | None = None

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        if self.on_warning is not None:
            try:
                self.on_warning(message)
            except Exception:  # a broken listener must not stop the frames
                log.debug("on_warning failed", exc_info=True)

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
    """A video file read with OpenCV; ``loop`` restarts it at the end (a stand-in for a camera).

    A still image, or a file or pipe that yields no frame, is refused at open with one message.
    A damaged stretch mid-clip is skipped with a warning naming the frame (OpenCV reports it as
    the end of the clip, which would silently cut the run short).
    """

    live = False
    #: Unreadable frames in a row before a damaged clip is taken to end there.
    MAX_SKIP = 50

    def __init__(self, path: str, loop: bool = False):
        self.path = path
        self.loop = loop
        self.name = f"file:{path}"
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self.frame_count = 0
        self.position = 0  # frames read or skipped so far in this pass
        #: Frames that could not be decoded and were skipped.
        self.skipped = 0
        self._warned: set[int] = set()  # a looping clip says it once per damaged place

    def open(self) -> None:
        if not os.path.exists(self.path):
            raise SourceError(f"video file not found: {self.path}")
        if os.path.isdir(self.path):
            raise SourceError(f"{self.path} is a folder; give a video file such as clip.mp4")
        if os.path.isfile(self.path) and cv2.haveImageReader(self.path):
            raise SourceError(f"{self.path} is a still image, not a video; give a video file (or demo "
                              "for the bundled clip)")
        # FFmpeg only: OpenCV would otherwise try one backend after another, each opening the
        # path again, and a pipe whose writer has left blocks the next open for ever.
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot read {self.path} as video (unsupported or corrupt file)")
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"{self.path} holds no readable video frames")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 1000 else 30.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and 0 < count < 2**31 else 0
        # The first frame is kept, not re-read after a seek: a pipe cannot seek back.
        self._first = first
        self.position = 0
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            self.open()
        if self._first is not None:
            img, self._first = self._first, None
            self.position = 1
            return as_rgb(img, order="bgr")
        img = self._next()
        if img is None and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.position = 0
            img = self._next()
        return None if img is None else as_rgb(img, order="bgr")

    def _next(self) -> np.ndarray | None:
        ok, img = self._cap.read()
        if ok and img is not None:
            self.position += 1
            return img
        if not self.frame_count or self.position >= self.frame_count - 1:
            return None  # the end (the header's frame count may be one too many)
        # The container says more frames follow: a damaged stretch. Skip to the next frame
        # that decodes, and say where.
        damaged_at = self.position
        for tries in range(1, self.MAX_SKIP + 1):
            self.position += 1
            self.skipped += 1
            ok, img = self._cap.read()
            if ok and img is not None:
                self.position += 1
                if damaged_at not in self._warned:
                    self._warned.add(damaged_at)
                    self.warn(f"{self.path}: frame {damaged_at + 1} of {self.frame_count} cannot be decoded "
                              f"(damaged data); skipped {tries} frame{'s' if tries > 1 else ''} and went on")
                return img
            if self.position >= self.frame_count:
                break
        self.warn(f"{self.path}: nothing decodes from frame {damaged_at + 1} of {self.frame_count} on "
                  "(damaged data); the clip ends there")
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._first = None


class ScreenSource(Source):
    """A monitor or a rectangle of the screen, captured with mss at ``fps``.

    ``monitor`` follows mss: 1 is the first monitor, 0 all monitors together. ``region`` is
    ``(x, y, w, h)`` in desktop coordinates (the space mss's monitor 0 spans). The mss instance
    is created in :meth:`open`, in the capture thread: on X11 and Windows it holds handles that
    belong to the thread that made them.
    """

    live = True

    def __init__(self, monitor: int = 1, region: tuple[int, int, int, int] | None = None,
                 fps: float = 30.0):
        self.monitor = monitor
        self.region = region
        self.fps = float(fps)
        self.name = "screen:" + (",".join(map(str, region)) if region else str(monitor))
        self._sct = None
        self._box: dict | None = None
        self._t0: float | None = None
        self._n = 0

    def open(self) -> None:
        import mss

        from .fix_texts import screen_fix

        try:
            # mss >= 10.2 spells it MSS; older releases only have the mss() factory.
            sct = (getattr(mss, "MSS", None) or mss.mss)()
            monitors = sct.monitors
        except Exception as e:  # mss raises ScreenShotError, or OSError from ctypes loading
            raise SourceError(screen_fix(e)) from e
        try:
            self._box = self._resolve_box(monitors)
        except SourceError:
            sct.close()
            raise
        self._sct = sct
        self._t0, self._n = None, 0

    def _resolve_box(self, monitors: list[dict]) -> dict:
        listing = "; ".join(f"{i}: {m['width']}x{m['height']} at {m['left']},{m['top']}"
                            for i, m in enumerate(monitors))
        if self.region is None:
            if not 0 <= self.monitor < len(monitors):
                raise SourceError(f"no monitor {self.monitor}: this desktop has {len(monitors) - 1} "
                                  f"(screen:0 is all of them together; {listing})")
            m = monitors[self.monitor]
            return {"left": m["left"], "top": m["top"], "width": m["width"], "height": m["height"]}
        x, y, w, h = self.region
        desk = monitors[0]
        if (x < desk["left"] or y < desk["top"] or x + w > desk["left"] + desk["width"]
                or y + h > desk["top"] + desk["height"]):
            raise SourceError(f"region {x},{y},{w},{h} (x,y,width,height) reaches outside the desktop "
                              f"({desk['width']}x{desk['height']} at {desk['left']},{desk['top']}); "
                              f"monitors: {listing}")
        return {"left": x, "top": y, "width": w, "height": h}

    def read(self) -> np.ndarray:
        if self._sct is None:
            self.open()
        _pace(self)
        try:
            shot = self._sct.grab(self._box)
        except Exception as e:
            raise SourceError(f"screen capture failed: {e}") from e
        # mss hands back BGRA; as_rgb drops alpha and swaps to RGB in one copy.
        return as_rgb(np.asarray(shot), order="bgr")

    def close(self) -> None:
        if self._sct is not None:
            self._sct.close()
            self._sct = None


def _pace(source) -> None:
    """Sleep until the next frame of ``source`` is due on an absolute schedule.

    A capture that ran late by more than a frame restarts the schedule from now: a live source
    must not burst to catch up on frames nobody wants any more.
    """
    now = time.monotonic()
    if source._t0 is None:
        source._t0, source._n = now, 0
    due = source._t0 + source._n / source.fps
    if due > now:
        time.sleep(due - now)
    elif now - due > 1.0 / source.fps:
        source._t0, source._n = now, 0
    source._n += 1


class CameraSource(Source):
    """A webcam (index or device path) or a video file read as if it were a camera, via OpenCV.

    A camera that fails mid-run (unplugged, driver hiccup, file gone) does not end the stream:
    :meth:`read` keeps returning the last good frame at ``fps`` while the device is reopened with
    exponential backoff, and live frames resume once it is back. Only at start does a missing or
    busy camera raise :class:`SourceError`. A file behaves like a camera: it plays in real time
    at its own rate and starts again at its end.
    """

    live = True

    #: First retry delay and cap, in seconds, for reopening a lost camera.
    BACKOFF = (0.25, 2.0)

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = None,
                 fps: float | None = None):
        self.device = device
        self.request_size = size
        self.request_fps = fps
        self.name = f"camera:{device}"
        self.fps = fps
        self.reconnects = 0
        self.loops = 0
        #: Frames returned while the camera was lost (repeats of the last good frame).
        self.repeated = 0
        self._cap: cv2.VideoCapture | None = None
        self._last: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._is_file = False
        self._retry_at = 0.0
        self._backoff = self.BACKOFF[0]
        self._t0: float | None = None
        self._n = 0

    @property
    def connected(self) -> bool:
        return self._cap is not None

    def open(self) -> None:
        from .fix_texts import camera_fix

        error = self._try_open()
        if error is not None:
            raise SourceError(camera_fix(self.device, error))
        self._t0, self._n = None, 0

    def present(self) -> bool | None:
        """Whether the device (or file) is there now, without opening it; None when that cannot
        be known cheaply (camera indices on Windows and macOS)."""
        return self._exists()

    def _exists(self) -> bool | None:
        """Cheap presence test before the (possibly slow) open; None when it cannot be known."""
        if isinstance(self.device, str):
            return os.path.exists(self.device)
        if sys.platform.startswith("linux"):
            return os.path.exists(f"/dev/video{self.device}")
        return None

    def _try_open(self) -> str | None:
        """Open the capture and read its first frame; return why it failed, or None."""
        if self._exists() is False:
            return "missing"
        is_file = isinstance(self.device, str) and os.path.isfile(self.device)
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            return "unopenable"
        if not is_file:
            if self.request_size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.request_size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.request_size[1])
            if self.request_fps:
                cap.set(cv2.CAP_PROP_FPS, self.request_fps)
        # A camera another app holds often opens fine and only fails to deliver: read one frame
        # so "busy" is caught here, at start, and not as an endless reconnect loop.
        ok, img = cap.read()
        if not ok or img is None:
            cap.release()
            return "no-frames"
        if self.fps is None:
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and math.isfinite(fps) and 1 <= fps <= 240 else 30.0
        self._cap = cap
        self._is_file = is_file
        self._pending = as_rgb(img, order="bgr")
        self._backoff = self.BACKOFF[0]
        return None

    def read(self) -> np.ndarray | None:
        if self._cap is None and self._last is None:
            self.open()
        if self._cap is None and time.monotonic() >= self._retry_at:
            if self._try_open() is None:
                self.reconnects += 1
                log.info("%s is back", self.name)
            else:
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.BACKOFF[1])
        frame = self._next_frame()
        if frame is None:
            # Lost: keep the stream alive with the last good picture, at the camera's rate.
            _pace(self)
            self.repeated += 1
            return self._last
        if self._is_file:
            _pace(self)  # a device paces itself; a file would otherwise play as fast as it decodes
        self._last = frame
        return frame

    def _next_frame(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            return None
        ok, img = self._cap.read()
        if ok and img is not None:
            return as_rgb(img, order="bgr")
        self._cap.release()
        self._cap = None
        if self._is_file and os.path.isfile(self.device) and self._try_open() is None:
            self.loops += 1  # a file at its end starts again, like a camera that never stops
            return self._next_frame()
        log.warning("%s stopped delivering frames; repeating the last frame while reconnecting", self.name)
        if self._try_open() is None:  # a glitch that one reopen cures
            self.reconnects += 1
            return self._next_frame()
        self._retry_at = time.monotonic() + self._backoff
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._last = self._pending = None


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
    _check_spec(spec or "")
    kind, _, arg = (spec or "").partition(":")
    factory = _SOURCES.get(kind.strip().lower())
    if factory is None:
        raise ValueError(f"unknown source {_shown(spec)}: expected one of {', '.join(_source_forms())}")
    return factory(arg if _ else None, options)


#: The longest spec accepted: a path of the usual 4096-byte limit and its kind.
MAX_SPEC = 4200


def _shown(spec: str | None, limit: int = 80) -> str:
    text = repr(spec)
    return text if len(text) <= limit else text[:limit - 5] + "...'"


def _check_spec(spec: str) -> None:
    """Refuse specs no device or file can have: specs also come from hand-edited settings files."""
    if len(spec) > MAX_SPEC:
        raise ValueError(f"source {_shown(spec)} is {len(spec)} characters long; give a path of at most 4096")
    bad = next((c for c in spec if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"source {_shown(spec)} holds a control character ({bad!r}); give a plain device "
                         "number or path, e.g. camera:0 or file:clip.mp4")


def _source_forms() -> list[str]:
    forms = {"pattern": "pattern", "file": "file:PATH", "demo": "demo (the bundled clip)",
             "screen": "screen[:N | :X,Y,W,H]", "camera": "camera[:N | :PATH]"}
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


def _screen(arg: str | None, options: dict) -> Source:
    fps = options.get("fps") or 30.0
    arg = (arg or "").strip()
    if not arg:
        return ScreenSource(monitor=1, fps=fps)
    if re.fullmatch(r"\d+", arg):
        return ScreenSource(monitor=int(arg), fps=fps)
    m = re.fullmatch(r"\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", arg)
    if not m:
        raise ValueError(f"bad screen source 'screen:{arg}': expected screen (first monitor), "
                         "screen:N (monitor N, 0 = all) or screen:X,Y,W,H (a region in pixels)")
    x, y, w, h = map(int, m.groups())
    if w < 16 or h < 16:
        raise ValueError(f"screen region {w}x{h} is too small: give a width and height of 16 or more")
    return ScreenSource(region=(x, y, w, h), fps=fps)


def _camera(arg: str | None, options: dict) -> Source:
    arg = (arg or "").strip()
    device: int | str = 0 if not arg else int(arg) if arg.isdigit() else os.path.expanduser(arg)
    return CameraSource(device, size=options.get("size"), fps=options.get("fps"))


register_source("screen", _screen)
register_source("camera", _camera)
