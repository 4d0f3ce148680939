"""The frame loop: source -> (resize once) -> backend in batches -> sinks, with metrics.

Two threads: a capture thread that owns the source (mss and some camera drivers must be used
from the thread that opened them) and the runner's own loop, which batches frames, runs the
backend and writes sinks. Between them sits a bounded hand-off: for a live source it drops the
oldest frame when full (a stale frame is worth nothing to a live camera), for a file it blocks
(every frame of a clip is wanted).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .frames import Frame, as_rgb, fit
from .sinks import Sink
from .sources import Source
from .styles import Style
from .stylize.base import Backend

log = logging.getLogger(__name__)

#: How many per-frame latencies the metrics keep (a long soak must not grow memory).
LATENCY_WINDOW = 4096


class Handoff:
    """A bounded, thread-safe FIFO between capture and stylizer.

    ``lossy`` mode drops the oldest item when full (live sources); otherwise ``put`` waits for
    room. ``close()`` wakes every waiter; ``get`` then drains what is left and returns None.
    """

    def __init__(self, capacity: int, lossy: bool):
        self.capacity = max(1, capacity)
        self.lossy = lossy
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item) -> bool:
        with self._cond:
            while not self.lossy and len(self._items) >= self.capacity and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_batch(self, n: int, timeout: float | None = None) -> list:
        """Wait for at least one item, then take up to ``n`` without waiting further."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(0.1 if remaining is None else min(0.1, remaining))
            batch = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            self._cond.notify_all()
            return batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass
class Metrics:
    """Counters and per-frame capture→output latency; ``summary()`` is what apps and benchmarks show."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    t_first_out: float | None = None
    t_last_out: float | None = None
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    batch_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))

    def summary(self) -> dict:
        now = time.perf_counter()
        elapsed = max(1e-9, (self.t_last_out or now) - self.t_start)
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000.0
        bt = np.asarray(self.batch_times, dtype=np.float64) * 1000.0
        out_span = (self.t_last_out or now) - (self.t_first_out or self.t_start)
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "seconds": round(elapsed, 3),
            "fps_in": round(self.frames_in / elapsed, 2),
            # Output rate over the span between first and last output, so start-up (model load,
            # first compile) does not hide the steady rate.
            "fps_out": round((self.frames_out - 1) / out_span, 2) if self.frames_out > 1 and out_span > 0 else 0.0,
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
            "batch_p50_ms": round(float(np.percentile(bt, 50)), 2) if bt.size else None,
        }


class RunnerError(RuntimeError):
    """The run failed; the message is for the user."""


class Runner:
    """Moves frames from ``source`` through ``backend`` to ``sinks``.

    ``size`` is the engine size (W, H); None takes the source's native size (rounded down to
    even sides, which video encoders and virtual cameras need). ``max_frames`` stops after that
    many source frames. ``run()`` blocks until the source ends, ``max_frames`` is reached or
    ``stop()`` is called, and returns the metrics summary.
    """

    def __init__(self, source: Source, backend: Backend, sinks: list[Sink], *, size=None, fps=None,
                 max_frames: int | None = None, batch_size: int | None = None):
        self.source = source
        self.backend = backend
        self.sinks = list(sinks)
        self.size = size
        self.fps = fps
        self.max_frames = max_frames
        self.batch_size = max(1, batch_size or backend.batch_size)
        self.metrics = Metrics()
        self._stop = threading.Event()
        self._paused = False
        self._pending_style: Style | None = None
        self._style_lock = threading.Lock()
        # Capacity: one batch being filled plus one waiting, so the backend never starves and a
        # live source never builds a backlog of stale frames.
        self._handoff = Handoff(2 * self.batch_size, lossy=source.live)
        self._capture_error: BaseException | None = None
        self._capture_thread: threading.Thread | None = None
        self._sinks_open = False

    # -- control, callable from any thread ---------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._handoff.close()

    def set_style(self, style: Style) -> None:
        """Takes effect at the next batch (the runner's thread applies it)."""
        with self._style_lock:
            self._pending_style = style

    def set_paused(self, paused: bool) -> None:
        """While paused, frames pass through unstylized: the camera keeps getting pictures."""
        self._paused = bool(paused)

    @property
    def paused(self) -> bool:
        return self._paused

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> dict:
        self.metrics = Metrics()
        self._capture_thread = threading.Thread(target=self._capture, name="stylecam-capture", daemon=True)
        self._capture_thread.start()
        try:
            self._loop()
        finally:
            self.stop()
            self._capture_thread.join(timeout=2.0)
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as e:  # a failing close must not hide the run's result
                    log.warning("closing %s failed: %s", sink.name, e)
        if self._capture_error is not None:
            raise RunnerError(str(self._capture_error)) from self._capture_error
        return self.metrics.summary()

    def _capture(self) -> None:
        n = 0
        try:
            self.source.open()
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    break
                raw = self.source.read()
                t = time.perf_counter()
                if raw is None:
                    break
                img = as_rgb(raw)
                if self.size is None:
                    h, w = img.shape[:2]
                    self.size = (max(2, w - w % 2), max(2, h - h % 2))
                img = fit(img, self.size)
                if not self._handoff.put(Frame(img, n, t)):
                    break
                n += 1
                self.metrics.frames_in = n
        except BaseException as e:  # reported by run() in the caller's thread
            self._capture_error = e
        finally:
            try:
                self.source.close()
            finally:
                self._handoff.close()

    def _loop(self) -> None:
        while True:
            batch = self._handoff.get_batch(self.batch_size)
            if not batch:
                if self._handoff.closed:
                    return
                continue
            self._apply_style()
            t0 = time.perf_counter()
            images = [f.image for f in batch]
            outputs = images if self._paused else self.backend.process(images)
            if len(outputs) != len(batch):
                raise RunnerError(f"backend {self.backend.name} returned {len(outputs)} frames for {len(batch)}")
            t1 = time.perf_counter()
            self.metrics.batch_times.append(t1 - t0)
            for frame, out in zip(batch, outputs):
                self._emit(Frame(out, frame.index, frame.t_capture))
            self.metrics.dropped = self._handoff.dropped

    def _apply_style(self) -> None:
        with self._style_lock:
            style, self._pending_style = self._pending_style, None
        if style is not None:
            self.backend.set_style(style)

    def _emit(self, frame: Frame) -> None:
        if not self._sinks_open:
            fps = self.fps or self.source.fps or 30.0
            for sink in self.sinks:
                sink.open(frame.size, fps)
            self._sinks_open = True
        for sink in self.sinks:
            sink.write(frame)
        now = time.perf_counter()
        m = self.metrics
        m.frames_out += 1
        m.latencies.append(now - frame.t_capture)
        if m.t_first_out is None:
            m.t_first_out = now
        m.t_last_out = now
