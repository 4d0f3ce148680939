"""What a run measures: :class:`Metrics`, its counters and per-frame latencies, and the summary
apps and benchmarks show. No stylecam imports: a leaf.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np

#: How many per-frame latencies the metrics keep (a long soak must not grow memory).
LATENCY_WINDOW = 4096


@dataclass
class Metrics:
    """Counters and per-frame capture→output latency; ``summary()`` is what apps and benchmarks show."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    #: Frames that reached the sinks unstyled because the stylizer failed on their batch.
    passthrough: int = 0
    backend_errors: int = 0
    sink_errors: int = 0
    #: Frames from the source that were not pictures (skipped).
    bad_frames: int = 0
    stalls: int = 0
    #: CPU seconds of the runner's loop thread and of the capture thread (read, convert, hand
    #: off), set when each ends: the host cost of the path, per frame in ``summary()``.
    cpu_loop_s: float | None = None
    cpu_capture_s: float | None = None
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
            "passthrough": self.passthrough,
            "backend_errors": self.backend_errors,
            "sink_errors": self.sink_errors,
            "bad_frames": self.bad_frames,
            "stalls": self.stalls,
            "cpu_loop_ms_per_frame": _per_frame(self.cpu_loop_s, self.frames_out),
            "cpu_capture_ms_per_frame": _per_frame(self.cpu_capture_s, self.frames_in),
        }


def _per_frame(seconds: float | None, frames: int) -> float | None:
    return round(seconds * 1000.0 / frames, 3) if seconds is not None and frames else None
