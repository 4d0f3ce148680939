"""File outputs: a video (H.264 in fragmented MP4 through PyAV, so every moment written
plays however the run ends; OpenCV's writer for other containers or without PyAV) or a folder of
lossless PNG frames (each written to a temporary name, then renamed).

Nothing is overwritten by surprise (:class:`OutputRefused`); a full disk stops the file at its
last whole fragment and says how much was kept.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from fractions import Fraction

import cv2
import numpy as np

from .frames import Frame
from .sink_base import Sink, SinkError

log = logging.getLogger(__name__)


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


