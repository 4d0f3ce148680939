"""Frame sinks: where stylized frames go.

The ``--sink`` grammar is parsed by :func:`open_sink`; each kind registers a parser with
:func:`register_sink` so later kinds (virtual camera, MJPEG) use the same grammar. A sink is
opened with the output size and rate, then gets frames one by one in order.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable

import numpy as np

from .frames import Frame, fit, parse_size
# Every kind of output is importable from here (one import for the runner, the CLI and tests).
from .mjpeg import MjpegSink, _host_allowed, _unspecified  # noqa: F401
from .recording import FileSink, OutputRefused, _have_pyav  # noqa: F401
from .sink_base import Sink, SinkError  # noqa: F401

log = logging.getLogger(__name__)


class NullSink(Sink):
    """Discards frames (benchmarks, soak tests); counts them."""

    name = "null"

    def __init__(self):
        self.count = 0

    def write(self, frame: Frame) -> None:
        self.count += 1


#: Cameras whose sender thread hung: kept referenced so pyvirtualcam's __del__ never closes them
#: under a running send.
_ABANDONED: list = []


class VirtualCameraSink(Sink):
    """A virtual webcam (pyvirtualcam: v4l2loopback on Linux, OBS on Windows/macOS).

    The camera has its own fixed size and rate (default 1280x720 at 30 fps): frames of another
    size are letterboxed into it, and a :class:`~stylecam.core.pacer.Pacer` sends the newest
    frame at the camera's rate from its own thread, repeating it when the stylizer is slower and
    sending a neutral grey before the first frame. ``backend`` / ``device`` pick a pyvirtualcam
    backend (e.g. ``v4l2loopback``, ``obs``, ``unitycapture``) and a device (``/dev/video4``,
    ``OBS Virtual Camera``); None lets pyvirtualcam try each.
    """

    name = "virtualcam"
    #: After a failure the runner may close and open it again: a new camera loses nothing.
    reopenable = True

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0, *, mirror: bool = False,
                 backend: str | None = None, device: str | None = None):
        w, h = size
        if w % 2 or h % 2 or w < 16 or h < 16:
            raise ValueError(f"virtual camera size {w}x{h}: give even sides of 16 or more (e.g. 1280x720); "
                             "camera formats store colour per pair of pixels")
        if not 1 <= fps <= 120:
            raise ValueError(f"virtual camera rate {fps} fps: give 1 to 120 (e.g. virtualcam:1280x720@30)")
        self.size = (w, h)
        self.fps = float(fps)
        self.mirror = mirror
        self.backend = backend
        self.device = device
        self.camera_device: str | None = None  # what the backend actually opened
        self.backend_name: str | None = None
        self._camera = None
        self._pacer = None

    def _create_camera(self):
        import pyvirtualcam

        from .fix_texts import virtualcam_fix

        if self.backend is not None and self.backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(sorted(pyvirtualcam.camera.BACKENDS)) or "none"
            raise SinkError(f"virtual camera backend {self.backend!r} does not exist on this system "
                            f"(available: {known})")
        try:
            return pyvirtualcam.Camera(self.size[0], self.size[1], self.fps,
                                       fmt=pyvirtualcam.PixelFormat.RGB,
                                       device=self.device, backend=self.backend)
        except Exception as e:  # pyvirtualcam raises RuntimeError naming every backend that failed
            raise SinkError(virtualcam_fix(error=e)) from e

    def check(self) -> None:
        """Open and close the camera once, so a missing driver is reported before any work starts."""
        self._create_camera().close()

    def start(self) -> None:
        """Open the camera and start sending (neutral frames until the first write)."""
        if self._camera is not None:
            return
        from .pacer import Pacer, neutral_frame

        self._camera = self._create_camera()
        self.backend_name = self._camera.backend
        self.camera_device = self._camera.device
        self._pacer = Pacer(self._camera.send, self.fps, neutral_frame(self.size),
                            name="stylecam-virtualcam").start()

    def open(self, size: tuple[int, int], fps: float) -> None:
        # The runner's size and rate are the stream's; the camera keeps its own, fixed ones.
        self.start()

    def write(self, frame: Frame) -> None:
        if self._pacer is None:
            self.start()
        if self._pacer.error is not None:
            raise SinkError(f"the virtual camera stopped accepting frames: {self._pacer.error}")
        img = fit(frame.image, self.size, mode="contain")
        img = np.ascontiguousarray(img[:, ::-1] if self.mirror else img)
        # No copy of a frame already at the camera's size, although the pacer sends it later from
        # its own thread: no one writes into a frame's pixels after it is made (the Sink and
        # Backend contracts), and a copy per frame is a 2.7 MB memcpy at 720p on the runner's
        # thread for a camera that sends one frame in eight at B=16.
        self._pacer.submit(img)

    @property
    def stats(self) -> dict:
        p = self._pacer
        return {"sent": p.sent, "repeats": p.repeats, "skipped": p.skipped} if p else {}

    def close(self) -> None:
        stuck = False
        if self._pacer is not None:
            self._pacer.stop()
            stuck = self._pacer.running
            self._pacer = None
        if self._camera is not None:
            if stuck:  # closing a driver mid-send can crash in native code; exit releases it
                log.warning("the virtual camera did not return from a send; leaving it open")
                _ABANDONED.append(self._camera)  # a dropped reference would close it in __del__
            else:
                self._camera.close()
            self._camera = None


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
    forms = {"null": "null", "file": "file:PATH.mp4 | file:DIR/",
             "virtualcam": "virtualcam[:WxH@FPS,mirror,backend=NAME,device=DEV]",
             "mjpeg": "mjpeg[:PORT,bind=ADDR,quality=Q,viewers=N]"}
    return [forms.get(k, k) for k in sink_kinds()]


def _null(arg: str | None, options: dict) -> Sink:
    if arg:
        raise ValueError(f"'null' takes no argument, got null:{arg}")
    return NullSink()


def _file(arg: str | None, options: dict) -> Sink:
    if not arg:
        raise ValueError("'file' needs a path: file:OUT.mp4 or file:DIR/")
    return FileSink(os.path.expanduser(arg), overwrite=bool(options.get("overwrite", False)))


register_sink("null", _null)
register_sink("file", _file)


def _spec_options(kind: str, arg: str | None, usage: str) -> tuple[list[str], dict[str, str]]:
    """Split ``a,b,key=value`` into bare words and key=value pairs."""
    words, pairs = [], {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if eq:
            if not value.strip():
                raise ValueError(f"'{kind}' option {key}= needs a value; usage: {usage}")
            pairs[key.strip().lower()] = value.strip()
        else:
            words.append(part)
    return words, pairs


def _virtualcam(arg: str | None, options: dict) -> Sink:
    usage = "virtualcam[:WxH@FPS,mirror,backend=NAME,device=DEV], e.g. virtualcam:1280x720@30,mirror"
    words, pairs = _spec_options("virtualcam", arg, usage)
    size, fps, mirror = (1280, 720), options.get("fps") or 30.0, False
    for word in words:
        m = re.fullmatch(r"(\d+\s*[xX]\s*\d+)?(?:@(\d+(?:\.\d+)?))?", word)
        if word.lower() == "mirror":
            mirror = True
        elif m and (m.group(1) or m.group(2)):
            if m.group(1):
                size = parse_size(m.group(1))
            if m.group(2):
                fps = float(m.group(2))
        else:
            raise ValueError(f"unknown virtualcam option {word!r}; usage: {usage}")
    unknown = set(pairs) - {"backend", "device"}
    if unknown:
        raise ValueError(f"unknown virtualcam option {sorted(unknown)[0]}=; usage: {usage}")
    sink = VirtualCameraSink(size, fps, mirror=mirror, backend=pairs.get("backend"), device=pairs.get("device"))
    if options.get("check", True):
        sink.check()
    return sink


def _mjpeg(arg: str | None, options: dict) -> Sink:
    usage = "mjpeg[:PORT,bind=ADDR,quality=Q,viewers=N], e.g. mjpeg:8090 (0 = any free port)"
    words, pairs = _spec_options("mjpeg", arg, usage)
    port = 8090
    for word in words:
        if not word.isdigit():
            raise ValueError(f"unknown mjpeg option {word!r}; usage: {usage}")
        port = int(word)
    unknown = set(pairs) - {"bind", "quality", "viewers"}
    if unknown:
        raise ValueError(f"unknown mjpeg option {sorted(unknown)[0]}=; usage: {usage}")
    quality = pairs.get("quality", "80")
    if not quality.isdigit():
        raise ValueError(f"mjpeg quality={quality}: give a number 10-100")
    viewers = pairs.get("viewers", "16")
    if not viewers.isdigit():
        raise ValueError(f"mjpeg viewers={viewers}: give a number 1-1000 (viewers watching at once)")
    sink = MjpegSink(port, host=pairs.get("bind", "127.0.0.1"), quality=int(quality), max_viewers=int(viewers))
    if options.get("start", True):
        sink.start()  # bind now: a taken port is reported before any work starts
    return sink


register_sink("virtualcam", _virtualcam)
register_sink("mjpeg", _mjpeg)
