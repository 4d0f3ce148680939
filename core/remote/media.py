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


# -- a frame is complete at its last packet --------------------------------------------------
#
# aiortc's video jitter buffer hands a frame to the decoder only when the first packet of the
# *next* frame arrives, ignoring the RTP marker bit that every sender (aiortc's own, OBS,
# browsers) sets on a frame's last packet. Over a round trip that costs two frame intervals
# (66 ms at 30 fps) and holds the last frame of a burst until something else is sent. The
# subclass below also completes a frame at a marker packet when every packet before it is there.

_installed = False

#: VP8 bit rates (bits/s): where a connection starts and the most congestion control may raise
#: it to. aiortc's own (0.5 and 1.5 Mbit/s) blur a painting's edges and texture even at 640x360;
#: a congested link still brings the rate down to aiortc's minimum.
START_BITRATE = 2_000_000
MAX_BITRATE = 6_000_000


def tune_aiortc() -> None:
    """Process-wide aiortc settings for this app: frames complete at their marker packet (see
    above) and higher VP8 bit rates. Idempotent; called before a peer connection is made."""
    global _installed
    if _installed:
        return
    from aiortc.codecs import vpx

    vpx.DEFAULT_BITRATE = START_BITRATE
    vpx.MAX_BITRATE = MAX_BITRATE
    from aiortc import rtcrtpreceiver
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class MarkerJitterBuffer(JitterBuffer):
        def _remove_frame(self, sequence_number: int):
            if self._origin is not None:
                packets = []
                timestamp = None
                for count in range(self.capacity):
                    packet = self._packets[(self._origin + count) % self.capacity]
                    if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                        break  # a gap, or the next frame: the original rule decides
                    timestamp = packet.timestamp
                    packets.append(packet)
                    if packet.marker:
                        self.remove(count + 1)
                        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)
            return super()._remove_frame(sequence_number)

    original = rtcrtpreceiver.JitterBuffer

    def make(capacity: int, prefetch: int = 0, is_video: bool = False):
        if is_video:
            return MarkerJitterBuffer(capacity=capacity, prefetch=prefetch, is_video=True)
        return original(capacity=capacity, prefetch=prefetch, is_video=is_video)

    rtcrtpreceiver.JitterBuffer = make
    _installed = True
