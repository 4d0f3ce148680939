"""Just-in-time submission for the latency operating point: when to start the next batch.

With two batches in flight and a source that always has a new frame (a 60 fps camera in front
of a 150 fps stylizer, a screen capture), the runner submits batch k+1 as soon as batch k-1 is
collected. Batch k+1's side-stream work (upload, resize, TAESD encode) then takes S ms and its
results wait for batch k's U-Net and decode (M ms) to free the main stream: every frame spends
about M - S ms queued on the GPU, and its capture-to-output latency is two periods, not one
pass (Little's law: two frames in the system at all times). Holding the submit back by
``M - S`` keeps the main stream just as busy, so the frame rate stays, while each frame, taken
from the camera ``M - S`` ms later, is that much fresher when it comes out.

:class:`SubmitPacer` learns that delay from what the GPU reports for each collected batch (the
engine's CUDA events): ``queued``, how long the batch's side results waited for the main stream
(the delay is too short by that much), and ``idle``, how long the main stream stood waiting for
the batch (too long by that much). Batches differ by what runs on their side stream (the
conditioning encoder every ``refresh`` batches, LLLite's every ``lllite_refresh``), so each
kind of place in those cycles (``key``, :func:`cycle_position`) keeps its own delay. A small
``slack`` of queueing is the aim: jitter of the host thread then costs a little latency instead
of a main-stream bubble.

Contract: plain Python, no torch; :meth:`delay` and :meth:`observe` from one thread (the
runner's); delays in seconds, observations in milliseconds (CUDA's ``elapsed_time`` unit).
"""

from __future__ import annotations

#: Queueing aimed for, ms: the margin that absorbs the host thread's jitter.
SLACK_MS = 0.4
#: Idle main-stream time tolerated before the delay is shortened, ms.
IDLE_MS = 0.1
#: Fraction of each observed error corrected per batch (damps the loop; 0.5 settles in ~5 batches).
GAIN = 0.5
#: The longest hold, seconds: past it something else is wrong (a hiccup measured as queueing).
MAX_DELAY_S = 0.05


def cycle_position(due: bool, since: int):
    """A batch's place in one refresh cycle, as far as its side-stream work differs: ``"due"``
    (the encoder runs, or its frames are copied for a deferred run), 1 (the batch after it: a
    deferred encoder runs beside its U-Net) or 2 (any later batch, all doing the same work).

    Why not the position itself: with the vision refresh every 64 frames at B=1, a delay per
    position was learned once every 64 frames, so 480 frames of a benchmark (or the first
    half-minute of a call) never settled it; later positions share one delay that settles in a
    few batches."""
    return "due" if due else min(since, 2)


class SubmitPacer:
    """Per-key submit delays learned from queueing and idle times (see the module docstring)."""

    def __init__(self, slack_ms: float = SLACK_MS, gain: float = GAIN):
        self.slack_ms = slack_ms
        self.gain = gain
        self._delay_ms: dict[object, float] = {}
        self.observed = 0

    def delay(self, key) -> float:
        """Seconds to hold the next batch (of cycle position ``key``) back."""
        return self._delay_ms.get(key, 0.0) / 1000.0

    def observe(self, key, queued_ms: float, idle_ms: float) -> None:
        """A collected batch of position ``key``: its side results waited ``queued_ms`` for the
        main stream, which had stood ``idle_ms`` waiting for them."""
        error = max(0.0, queued_ms) - self.slack_ms
        if idle_ms > IDLE_MS:  # the main stream waited: the batch came too late
            error = min(error, -(idle_ms - IDLE_MS))
        d = self._delay_ms.get(key, 0.0) + self.gain * error
        self._delay_ms[key] = min(max(d, 0.0), MAX_DELAY_S * 1000.0)
        self.observed += 1

    def reset(self) -> None:
        """Forget what was learned (the work per batch changed: a new style, new sizes)."""
        self._delay_ms.clear()

    def as_dict(self) -> dict:
        """The learned delays, ms, for reports."""
        return {str(k): round(v, 3) for k, v in sorted(self._delay_ms.items(), key=lambda kv: str(kv[0]))}


__all__ = ["GAIN", "IDLE_MS", "MAX_DELAY_S", "SLACK_MS", "SubmitPacer", "cycle_position"]
