"""A fixed-rate sender between the stylizer and a device that wants frames on a clock.

A virtual camera is a clock-driven device: apps reading it (Zoom, Chrome, OBS) expect a frame
every 1/fps seconds and show a frozen or black picture, or drop the device, when frames stop.
The stylizer, on the other hand, delivers frames whenever a batch finishes — in bursts of B
frames, sometimes slower than the camera. The pacer decouples the two: ``submit`` stores the
newest frame (never queues), and the pacer's own thread sends whatever is newest at each tick,
re-sending it when nothing new came. Before the first frame it sends a neutral frame, so a
reader never sees nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: The colour sent before the first real frame: a flat dark grey reads as "starting", where
#: black reads as "broken camera".
NEUTRAL_RGB = (48, 48, 48)


def neutral_frame(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), NEUTRAL_RGB, np.uint8)


class Pacer:
    """Calls ``send(image)`` at ``fps`` from its own thread with the newest submitted image.

    ``send`` errors stop the pacer; the error is kept in ``error`` (the sink reports it on its
    next write). The schedule is absolute (``t0 + k / fps`` on the monotonic clock), so sleep
    jitter does not accumulate into drift; when a send runs late by more than a whole period the
    schedule restarts from now instead of bursting to catch up (a burst of stale frames is worse
    for a live camera than a skipped tick).
    """

    def __init__(self, send: Callable[[np.ndarray], None], fps: float, first: np.ndarray,
                 name: str = "stylecam-pacer"):
        if not fps > 0:
            raise ValueError(f"pacer fps must be positive, got {fps}")
        self._send = send
        self.period = 1.0 / float(fps)
        self.fps = float(fps)
        self._latest = first
        self._seq = 0  # bumped on each submit; tells a fresh frame from a repeat
        self._sent_seq = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        #: Sends in total, sends of a frame already sent (repeats), ticks skipped by resyncs.
        self.sent = 0
        self.repeats = 0
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Pacer":
        self._thread.start()
        return self

    def submit(self, image: np.ndarray) -> None:
        """Make ``image`` the frame sent from the next tick on. The caller must not modify it later."""
        with self._lock:
            self._latest = image
            self._seq += 1

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        t0 = time.monotonic()
        k = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    image, seq = self._latest, self._seq
                self._send(image)
                self.sent += 1
                if seq == self._sent_seq:
                    self.repeats += 1
                self._sent_seq = seq
                k += 1
                due = t0 + k * self.period
                now = time.monotonic()
                if now - due > self.period:
                    missed = int((now - due) / self.period)
                    self.skipped += missed
                    t0, k = now, 0
                    due = now
                if self._stop.wait(max(0.0, due - now)):
                    break
        except BaseException as e:  # kept for the owner to report in its own thread
            self.error = e
            log.warning("pacer stopped: %s", e)
