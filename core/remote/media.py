"""The video tracks both sides send: frames handed over from another thread, newest first.

Imports aiortc and PyAV; only :mod:`.server` and :mod:`.client` import this module, inside the
functions that need it.
"""

from __future__ import annotations

import asyncio
import collections
import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .protocol import CLOCK

TIME_BASE = fractions.Fraction(1, CLOCK)


class FrameQueueTrack(MediaStreamTrack):
    """A video track fed with ``push(image, pts)`` from the event loop's thread. It holds at
    most ``depth`` frames: when the encoder falls behind the oldest is dropped and counted
    (a live picture is worth more than a complete one)."""

    kind = "video"

    def __init__(self, depth: int = 2):
        super().__init__()
        self._frames: collections.deque = collections.deque()
        self._depth = max(1, depth)
        self._ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0

    def push(self, image: np.ndarray, pts: int) -> None:
        if self.readyState != "live":
            return
        if len(self._frames) >= self._depth:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append((image, pts))
        self._ready.set()

    async def recv(self):
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        image, pts = self._frames.popleft()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = TIME_BASE
        self.sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def to_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB uint8 (H, W, 3)."""
    return frame.to_ndarray(format="rgb24")
