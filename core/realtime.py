"""Play a file at its own frame rate, as a camera would deliver it.

A file source is read as fast as it is consumed: right for converting a clip to a file (every
frame, as fast as the stylizer goes), wrong for anything watched live — an MJPEG viewer or a
virtual camera would see the clip in fast-forward and the stream would end after a second or
two. :class:`RealtimeSource` paces a non-live source to its own rate and reports itself as
live, so the runner treats it like a camera (it drops stale frames instead of queueing them).
The CLI wraps a file or demo source in it when a live sink is among the outputs; the tray app
always does (``desktop/worker.py``).
"""

from __future__ import annotations

import time

from .sources import Source

#: The rate assumed for a source that does not know its own.
DEFAULT_FPS = 30.0


class Pace:
    """A schedule of frame times at ``fps``: :meth:`wait_turn` sleeps until the next one is due.

    A read that ran late by more than a frame (a slow decode) restarts the schedule from now
    rather than bursting frames to catch up.
    """

    def __init__(self):
        self._t0: float | None = None
        self._n = 0

    def reset(self) -> None:
        self._t0, self._n = None, 0

    def wait_turn(self, fps: float | None) -> None:
        fps = fps if fps and fps > 0 else DEFAULT_FPS
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._n = now, 0
        due = self._t0 + self._n / fps
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0 / fps:
            self._t0, self._n = now, 0
        self._n += 1


class RealtimeSource(Source):
    """``inner`` (a file, the demo clip) paced to its own ``fps``; a live source passes as it is.

    ``rate`` (frames a second, below the clip's own) sends fewer frames with the clip at its own
    speed, as a camera set to a lower rate would: the frames between two sent ones are skipped.
    """

    live = True

    def __init__(self, inner: Source, rate: float | None = None):
        self.inner = inner
        self.name = inner.name
        self.rate = rate
        self.fps = inner.fps
        self._pace = Pace() if not inner.live else None
        self._read = 0  # clip frames read
        self._next = 0.0  # the clip frame (index, fractional) to send next

    def open(self) -> None:
        self.inner.open()
        self.fps = self._sent_fps()
        self._read, self._next = 0, 0.0
        if self._pace is not None:
            self._pace.reset()

    def _sent_fps(self) -> float | None:
        own = self.inner.fps
        if self._pace is not None and self.rate and own and self.rate < own:
            return self.rate
        return own  # a live source (a camera) keeps its own rate

    def read(self):
        if self._pace is None:
            return self.inner.read()
        fps = self._sent_fps()
        self._pace.wait_turn(fps)
        own = self.inner.fps
        if not (own and fps and fps < own):
            return self.inner.read()
        img = None
        for _ in range(max(1, int(self._next) + 1 - self._read)):
            img = self.inner.read()
            self._read += 1
            if img is None:
                return None
        self._next += own / fps
        return img

    def close(self) -> None:
        self.inner.close()
