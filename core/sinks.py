"""Frame sinks: where stylized frames go.

The ``--sink`` grammar is parsed by :func:`open_sink`; each kind registers a parser with
:func:`register_sink` so later kinds (virtual camera, MJPEG) use the same grammar. A sink is
opened with the output size and rate, then gets frames one by one in order.
"""

from __future__ import annotations

import collections
import errno
import io
import ipaddress
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from fractions import Fraction
from typing import Callable

import cv2
import numpy as np

from .frames import Frame, fit, parse_size

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A sink cannot be opened or written. The message says what to do."""


class Sink:
    """Where frames go: a file, a virtual camera, an MJPEG server, the tray's preview.

    Contract: ``open``, ``write`` and ``close`` are called from the runner's thread only, in that
    order (``open`` again after a failure for ``reopenable`` sinks). ``write`` gets each output
    frame once, in order, at the size ``open`` was given; it must not modify the pixels, may keep
    a reference (backends never reuse an output buffer), and must not block the stream for long
    (outputs that pace or serve hand frames to a thread of their own). Failures raise
    :class:`SinkError` (or an ``OSError``) with a message that says what to do; the runner then
    switches the output off and tells the user, and the other outputs go on.
    """

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


class OutputRefused(SinkError):
    """An output that would overwrite something by surprise (an existing file, a non-empty
    folder, a symbolic link, the input itself). The message says what is there."""


#: errno values that mean "no more room here" (full disk, quota, file-size limit).
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _why(e: OSError) -> str:
    if e.errno in _NO_ROOM:
        return "disk full"
    return e.strerror or str(e)


class _FullWriter:
    """A raw file that writes every byte or raises: PyAV drops the rest of a short write
    (a disk filling up mid-fragment), which would leave a fragment with a hole in it."""

    def __init__(self, path: str):
        self._f = open(path, "wb", buffering=0)
        self.written = 0

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            if not n:  # a raw write that stored nothing raises nowhere else
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
            self.written += n
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()


class _Mp4Writer:
    """H.264 in fragmented MP4 through PyAV: an empty ``moov`` first, then a self-contained
    fragment (``moof`` + ``mdat``) per keyframe, one keyframe a second. Whatever stops the
    writer (a kill, a crash, a full disk), the file up to its last whole fragment plays.

    ``flush_packets`` hands every fragment to the kernel as soon as it is complete, so a killed
    process loses at most the fragment it was filling. ``zerolatency`` makes x264 emit each
    frame's packet at once (no lookahead, no B-frames): frames muxed = frames encoded.
    """

    def __init__(self, path: str, size: tuple[int, int], fps: float):
        import av

        self.path = path
        # yuv420p stores colour per 2x2 block: an odd side loses its last row or column.
        self.size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        rate = Fraction(fps).limit_denominator(1001)
        self.fps = float(rate)
        self.frames = 0  # frames handed to the muxer
        self.kept = 0  # frames in whole fragments already in the file
        self._boundary = 0  # file size at the end of the last whole fragment
        self._muxed = 0  # packets (one a frame) handed to the muxer
        self._file = _FullWriter(path)
        try:
            self._container = av.open(self._file, "w", format="mp4", container_options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
            stream = self._container.add_stream("libx264", rate=rate)
            stream.width, stream.height = self.size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = max(1, round(self.fps))  # a fragment a second
            stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "21"}
        except Exception:
            self._file.close()
            raise
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        import av

        w, h = self.size
        if rgb.shape[1] != w or rgb.shape[0] != h:
            rgb = np.ascontiguousarray(rgb[:h, :w])
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            key = packet.is_keyframe
            self._container.mux(packet)
            if key:
                # Muxing a keyframe wrote out the fragment before it, whole, or raised.
                self._boundary = self._file.tell()
                self.kept = self._muxed
            self._muxed += 1

    def close(self) -> None:
        """Flush the last fragment and close; raises OSError if that write failed (the file
        is then cut back to its last whole fragment)."""
        try:
            self._mux(self._stream.encode(None))
            self._container.close()
        except Exception:
            self.abort()
            raise
        self.kept = self._muxed
        self._file.close()

    def abort(self) -> None:
        """Cut the file back to its last whole fragment and release it."""
        try:
            self._container.close()
        except Exception:  # the muxer's last writes fail the same way; the cut below decides
            pass
        try:
            os.ftruncate(self._file.fileno(), self._boundary)
        except OSError as e:
            log.warning("cannot cut %s back to its last whole fragment: %s", self.path, e)
        self._file.close()


class FileSink(Sink):
    """A video file, or a folder of lossless PNG frames (a path ending in /).

    ``.mp4`` is H.264 in fragmented MP4 (:class:`_Mp4Writer`, through PyAV): it plays in
    browsers and players, and every moment of it is playable however the run ends (Ctrl-C,
    SIGTERM, SIGKILL, a crash, a full disk). Without PyAV, and for ``.avi``/``.mkv``, OpenCV's
    writer is used (MPEG-4 part 2 / MJPG), which writes its index only at close; it stops
    while ``RESERVE_BYTES`` are still free so that the index finds room.

    PNG frames are written under a temporary name and renamed, so a folder never holds a
    half-written frame. Nothing is overwritten by surprise: an existing file, a folder that
    holds files, or a symbolic link is refused (:class:`OutputRefused`) unless ``overwrite``.

    On a full disk (or quota, or file-size limit) the sink raises :class:`SinkError` saying how
    much was kept; the MP4 is cut back to its last whole fragment.
    """

    RESERVE_BYTES = 1 << 20  # OpenCV's writer flushes up to 256 KiB at a time, then the index
    RESERVE_PER_FRAME = 64  # its index grows with every frame

    def __init__(self, path: str, overwrite: bool = False):
        self.path = path
        self.name = f"file:{path}"
        self.overwrite = overwrite
        self.is_dir = path.endswith(("/", os.sep)) or os.path.isdir(path)
        ext = os.path.splitext(path)[1].lower()
        if not self.is_dir and ext not in (".mp4", ".avi", ".mkv"):
            raise ValueError(f"file sink {path!r}: give a video path ending in .mp4 or a folder ending in /")
        self._writer = None
        self._mp4: _Mp4Writer | None = None
        self.count = 0
        #: What went wrong with the file, for the user (None while all is well).
        self.failure: str | None = None
        self.check_target()

    def check_target(self) -> None:
        """Refuse (:class:`OutputRefused`) to replace what is already at the path, unless
        ``overwrite``. Called at construction, so the user hears it before any work starts."""
        if self.overwrite:
            return
        bare = self.path.rstrip("/" + os.sep) or self.path
        if os.path.islink(bare):
            raise OutputRefused(f"output {self.path} is a symbolic link (to {os.readlink(bare)}); "
                                "writing would replace what it points to")
        if self.is_dir:
            try:
                entries = os.listdir(bare) if os.path.isdir(bare) else []
            except OSError:
                entries = []  # open() says why the folder cannot be used
            if entries:
                raise OutputRefused(f"output folder {self.path} is not empty ({len(entries)} entries)")
        elif os.path.lexists(self.path):
            kind = "a folder" if os.path.isdir(self.path) else "a file"
            raise OutputRefused(f"output {self.path} already exists ({kind})")

    def open(self, size: tuple[int, int], fps: float) -> None:
        self.size = size
        self.fps = float(fps)
        if self.is_dir:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise SinkError(f"cannot create output folder {self.path}: {e.strerror}") from e
            self._clear_partial_frames()
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise SinkError(f"cannot create folder {parent}: {e.strerror}") from e
        ext = os.path.splitext(self.path)[1].lower()
        if ext == ".mp4" and _have_pyav():
            try:
                self._mp4 = _Mp4Writer(self.path, size, fps)
            except OSError as e:
                raise SinkError(f"cannot write video {self.path}: {_why(e)}") from e
            return
        if ext == ".mp4":
            log.warning("PyAV is not installed: %s is written with OpenCV (MPEG-4 part 2, not fragmented: "
                        "a run that is killed leaves it unplayable); pip install av", self.path)
        self._check_space(0)
        # mp4v (MPEG-4 part 2) is the codec OpenCV's bundled FFmpeg can always write; MJPG in AVI.
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(self.path, fourcc, float(fps), size)
        if not writer.isOpened():
            raise SinkError(f"cannot write video {self.path} (is the folder writable, and the name "
                            "short enough?)")
        self._writer = writer

    def _clear_partial_frames(self) -> None:
        # A run that was killed may have left a frame under its temporary name; with
        # overwrite, frames of an older run would mix with this one's.
        for entry in os.listdir(self.path):
            if entry.startswith(".frame_") and entry.endswith(".png.part") or (
                    self.overwrite and re.fullmatch(r"frame_\d{6,}\.png", entry)):
                try:
                    os.remove(os.path.join(self.path, entry))
                except OSError:
                    pass

    def write(self, frame: Frame) -> None:
        img = frame.image
        if (img.shape[1], img.shape[0]) != self.size:
            raise SinkError(f"frame of size {img.shape[1]}x{img.shape[0]} given to a sink opened at "
                            f"{self.size[0]}x{self.size[1]}")
        if self.is_dir:
            self._write_png(img)
        elif self._mp4 is not None:
            try:
                self._mp4.write(np.ascontiguousarray(img))
            except OSError as e:
                self._mp4_failed(e)
        else:
            self._check_space(0)
            self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.count += 1

    def _write_png(self, img: np.ndarray) -> None:
        name = f"frame_{self.count:06d}.png"
        out = os.path.join(self.path, name)
        part = os.path.join(self.path, f".{name}.part")
        # Compression level 1: lossless either way, and several times faster than the default.
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise SinkError(f"cannot encode frame {self.count} as PNG")
        try:
            with open(part, "wb") as f:
                f.write(buf.tobytes())
            os.replace(part, out)  # a frame is in the folder whole, or not at all
        except OSError as e:
            try:
                os.remove(part)
            except OSError:
                pass
            self.failure = f"cannot write {out} ({_why(e)}); {self.count} frames were written"
            raise SinkError(self.failure) from e

    def _mp4_failed(self, error: OSError) -> None:
        mp4, self._mp4 = self._mp4, None
        mp4.abort()
        self.failure = self._kept_message(_why(error), mp4)
        raise SinkError(self.failure) from error

    def _kept_message(self, why: str, mp4: "_Mp4Writer") -> str:
        hint = "; free some space or write elsewhere" if why == "disk full" else ""
        return (f"{why} writing {self.path} at frame {mp4.frames}: the video keeps its first "
                f"{mp4.kept / mp4.fps:.1f} s ({mp4.kept} frames), all playable{hint}")

    def _check_space(self, next_bytes: int) -> None:
        folder = self.path if self.is_dir else os.path.dirname(os.path.abspath(self.path))
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return  # cannot tell (e.g. a network share): let the write itself fail
        need = self.RESERVE_BYTES + self.RESERVE_PER_FRAME * self.count + next_bytes
        if free < need:
            self.failure = (f"disk full: {free // 1024} KiB left where {self.path} is written; stopped at "
                            f"frame {self.count} so what was written stays readable; free some space or "
                            "write elsewhere")
            raise SinkError(self.failure)

    def close(self) -> None:
        if self._mp4 is not None:
            mp4, self._mp4 = self._mp4, None
            try:
                mp4.close()
            except OSError as e:
                self.failure = self._kept_message(_why(e), mp4)
                raise SinkError(self.failure) from e
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


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
        if self.mirror:
            img = np.ascontiguousarray(img[:, ::-1])
        elif img is frame.image:
            # The pacer sends from another thread, later: it must own its pixels, never a buffer
            # the backend may reuse for the next batch.
            img = img.copy()
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


_MJPEG_BOUNDARY = "stylecamframe"

_MJPEG_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>stylecam</title>
<style>body{{margin:0;background:#111;color:#ccc;font:14px sans-serif}}img{{display:block;max-width:100vw;max-height:92vh;margin:auto}}p{{text-align:center}}</style>
</head><body><img src="/stream.mjpg" alt="stylecam stream">
<p>stylecam stream: <code>{url}</code> &mdash; in OBS add a Media Source, untick "Local File" and give this URL as Input.</p>
</body></html>
"""


class MjpegSink(Sink):
    """Serves the stream as MJPEG over HTTP (multipart/x-mixed-replace) on 127.0.0.1.

    ``GET /stream.mjpg`` is the stream (OBS Media Source or Browser Source, a browser, ffmpeg and
    OpenCV read it), ``GET /`` a page that shows it; every other path is 404. Requests whose
    ``Host`` header names anything but this machine are refused (403): a web page on another
    site could otherwise reach the stream through DNS rebinding.

    Each client has its own thread and only ever gets the newest frame, so a slow client skips
    frames and never holds up the stream or the other clients; a client that accepts nothing for
    ``send_timeout`` seconds is dropped. JPEG encoding happens once per frame, lazily, in the
    first client thread that needs it: with nobody watching, ``write`` costs one copy.

    Any local process can connect, so nothing a client does may lock others out: a request must
    arrive whole within ``header_timeout`` seconds (a client that dribbles a byte at a time is
    dropped); at most ``max_pending`` connections may be sending their request at once, and a
    new one pushes out the oldest of them (a real viewer sends its request at once, a slow one
    is the one that waits); at most ``max_viewers`` watch at once (the next gets 503). So the
    server holds a bounded number of sockets and threads whatever arrives, and never runs out
    of file descriptors. Connections that end abnormally are one debug line, never a traceback.

    ``port`` 0 picks a free port; :attr:`port` and :attr:`url` tell the real one once started.
    """

    #: After a failure the runner may close and open it again (clients reconnect to the same port).
    reopenable = True

    #: Connections the kernel keeps waiting for ``accept`` (Python's default of 5 resets bursts).
    BACKLOG = 512
    #: The longest request head read (browsers send 1-2 KiB).
    MAX_HEAD = 16 << 10

    def __init__(self, port: int = 8090, *, host: str = "127.0.0.1", quality: int = 80,
                 send_timeout: float = 5.0, max_viewers: int = 16, header_timeout: float = 5.0,
                 max_pending: int = 64):
        if not 0 <= port <= 65535:
            raise ValueError(f"mjpeg port {port}: give 1-65535, or 0 for any free port")
        if not 10 <= quality <= 100:
            raise ValueError(f"mjpeg quality {quality}: give 10-100")
        if not 1 <= max_viewers <= 1000:
            raise ValueError(f"mjpeg viewers={max_viewers}: give 1-1000")
        self.max_viewers = max_viewers
        self.header_timeout = header_timeout
        self.max_pending = max(1, max_pending)
        self._conn_lock = threading.Lock()
        self._pending: collections.OrderedDict = collections.OrderedDict()  # sending their request
        self._viewers: set = set()
        #: Connections pushed out while still sending their request, and viewers turned away.
        self.evicted = 0
        self.refused = 0
        self.host = host
        self.port = port
        self.quality = quality
        self.send_timeout = send_timeout
        self.name = f"mjpeg:{port}"
        self.frames_written = 0
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._encode_lock = threading.Lock()
        self._clients: set = set()
        self._closing = False
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if _unspecified(self.host):  # bound to every interface: this machine reaches it on loopback
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/stream.mjpg"

    @property
    def clients(self) -> int:
        """Open connections (viewers and requests still arriving)."""
        return len(self._clients)

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _admit(self, conn) -> None:
        """A new connection: it may send its request; past ``max_pending`` the oldest that is
        still sending one is pushed out (its thread sees the socket end and leaves)."""
        with self._conn_lock:
            self._pending[conn] = None
            while len(self._pending) > self.max_pending:
                old, _ = self._pending.popitem(last=False)
                self.evicted += 1
                try:
                    old.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _request_done(self, conn) -> None:
        with self._conn_lock:
            self._pending.pop(conn, None)

    def _add_viewer(self, conn) -> bool:
        with self._conn_lock:
            if len(self._viewers) >= self.max_viewers:
                self.refused += 1
                return False
            self._viewers.add(conn)
            return True

    def _forget(self, conn) -> None:
        with self._conn_lock:
            self._pending.pop(conn, None)
            self._viewers.discard(conn)
        self._clients.discard(conn)

    def start(self) -> None:
        """Bind the port and start serving (idempotent). Raises SinkError if the port is taken."""
        if self._server is not None:
            return
        import http.server

        handler = _mjpeg_handler(self)

        sink = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            # SO_REUSEADDR lets a restart rebind past TIME_WAIT on POSIX; on Windows it would let
            # a second process bind the same port, so it stays off there.
            allow_reuse_address = os.name != "nt"
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            request_queue_size = self.BACKLOG

            def process_request(self, request, client_address):
                sink._clients.add(request)
                sink._admit(request)
                super().process_request(request, client_address)

            def handle_error(self, request, client_address):
                # A client that vanished mid-request is normal on a network: one debug line.
                log.debug("mjpeg %s: connection ended: %s", client_address[0], sys.exc_info()[1])

        try:
            self._server = Server((self.host, self.port), handler)
        except OSError as e:
            hint = ("pick another with mjpeg:PORT, or mjpeg:0 for any free port"
                    if e.errno in (98, 48, 10048) else "check the bind address")
            raise SinkError(f"cannot serve MJPEG on {self.host}:{self.port}: {e.strerror or e}; {hint}") from e
        self.port = self._server.server_address[1]
        self.name = f"mjpeg:{self.port}"
        self._closing = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="stylecam-mjpeg", daemon=True)
        self._thread.start()
        log.info("MJPEG stream at %s", self.url)

    def open(self, size: tuple[int, int], fps: float) -> None:
        self.start()

    def write(self, frame: Frame) -> None:
        if self._server is None:
            self.start()
        image = frame.image.copy()  # the backend may reuse its output buffer for the next batch
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()
        self.frames_written += 1

    def _wait_frame(self, after: int, timeout: float | None = None) -> tuple[int, bytes] | None | bool:
        """Block until a frame newer than ``after`` exists; return (seq, jpeg), None on close,
        or False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq <= after and not self._closing:
                remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closing:
                return None
            seq, image = self._seq, self._image
        with self._encode_lock:
            if self._jpeg is None or self._jpeg[0] < seq:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise SinkError("JPEG encoding failed")
                self._jpeg = (seq, buf.tobytes())
            return self._jpeg

    def close(self) -> None:
        if self._server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        # Client threads blocked in a send to a stalled reader wake only when their socket dies.
        for conn in list(self._clients):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        deadline = time.monotonic() + 2.0
        while self._clients and time.monotonic() < deadline:  # let client threads say goodbye
            time.sleep(0.01)
        self._server = None


def _host_allowed(host_header: str | None, bind_host: str) -> bool:
    """True when a request's Host names this machine (DNS-rebinding guard).

    Loopback names and addresses always pass. When the server was bound to a non-loopback address
    on purpose, any IP literal passes too (a LAN client typing the address): rebinding needs a
    host *name* the attacker controls, never a bare address.
    """
    if not host_header:
        return True  # HTTP/1.0 clients send none; browsers (the rebinding vector) always do
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    try:
        return not ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        return False


def _mjpeg_handler(sink: MjpegSink):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "stylecam"
        sys_version = ""

        def log_message(self, fmt, *args):  # requests go to the debug log, not stderr
            log.debug("mjpeg %s: " + fmt, self.client_address[0], *args)

        def setup(self):
            super().setup()
            # A stalled reader makes send() raise after this long instead of blocking forever.
            self.connection.settimeout(sink.send_timeout)

        def handle(self):
            # One request per connection, read whole within the deadline before http.server
            # parses it (its line-by-line reads have no overall deadline).
            head = self._read_head()
            if head is None:
                self.close_connection = True
                return
            self.rfile = io.BytesIO(head)
            self.handle_one_request()

        def _read_head(self) -> bytes | None:
            conn = self.connection
            deadline = time.monotonic() + sink.header_timeout
            data = b""
            try:
                while b"\r\n\r\n" not in data and b"\n\n" not in data:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.debug("mjpeg %s: request not complete within %g s; dropped",
                                  self.client_address[0], sink.header_timeout)
                        return None
                    if len(data) > sink.MAX_HEAD:
                        log.debug("mjpeg %s: request head over %d bytes; dropped", self.client_address[0],
                                  sink.MAX_HEAD)
                        return None
                    conn.settimeout(remaining)
                    chunk = conn.recv(4096)
                    if not chunk:
                        log.debug("mjpeg %s: connection closed before a whole request", self.client_address[0])
                        return None
                    data += chunk
            except TimeoutError:  # socket.timeout: the deadline passed inside recv
                log.debug("mjpeg %s: request not complete within %g s; dropped", self.client_address[0],
                          sink.header_timeout)
                return None
            except OSError as e:
                log.debug("mjpeg %s: connection ended before a whole request: %s", self.client_address[0], e)
                return None
            finally:
                sink._request_done(conn)
                try:
                    conn.settimeout(sink.send_timeout)
                except OSError:
                    pass
            return data

        def finish(self):
            sink._forget(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if not _host_allowed(self.headers.get("Host"), sink.host):
                self._reply(403, b"forbidden: this stream is served to localhost only\n")
                return
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._reply(200, _MJPEG_INDEX.format(url=sink.url).encode(), "text/html; charset=utf-8")
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._reply(404, b"not found: the stream is at /stream.mjpg\n")

        def _stream(self):
            if not sink._add_viewer(self.connection):
                self.send_response(503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Retry-After", "5")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(f"busy: {sink.max_viewers} viewers are watching already\n".encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_MJPEG_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            try:
                while True:
                    got = sink._wait_frame(seq, timeout=1.0)
                    if got is None:
                        return
                    if got is False:  # no new frame: a viewer that left must not keep its place
                        if _peer_gone(self.connection):
                            log.debug("mjpeg %s: viewer left", self.client_address[0])
                            break
                        continue
                    seq, jpeg = got
                    head = (f"--{_MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
            except (OSError, socket.timeout) as e:  # the client went away or stopped reading
                log.debug("mjpeg client %s left: %s", self.client_address[0], e)
            self.close_connection = True

    return Handler


def _peer_gone(conn) -> bool:
    """True when the other end closed ``conn`` (without reading or waiting)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


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


def _unspecified(host: str) -> bool:
    """True for the all-interfaces address of either family."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
