"""What client and server say to each other besides the video, and how a returned frame is
matched with the frame that was sent.

**Data channel** (label :data:`CHANNEL`, ordered, JSON text, at most :data:`MAX_MESSAGE` bytes):

client -> server: ``{"type": "style", "name": "sketch"}``, ``{"type": "pause", "paused": true}``

server -> client: ``{"type": "hello", "session": ID, "style": NAME, "device": TEXT}`` once,
``{"type": "style", "name": NAME}`` when a switch was applied, ``{"type": "error", "message": TEXT}``
when a request was refused, and ``{"type": "metrics", ...}`` every :data:`METRICS_INTERVAL`
seconds (fps, GPU ms per batch, queue depth, latency on the server; see ``hub.SessionStats``).
The metrics double as the heartbeat: a client that hears nothing for a few seconds treats the
server as gone.

**Frame identity.** RTP carries a 90 kHz timestamp per frame, and the server sends each stylized
frame back with the timestamp its input arrived with. Each side's RTP sender adds its own random
offset, so the client gets ``sent + K (mod 2**32)`` with ``K`` unknown but constant for the
connection. :class:`FrameMatcher` finds ``K`` by voting: the client's timestamps carry a random
jitter, so only the true offset is proposed by every returned frame.
"""

from __future__ import annotations

import collections
import json
import random

CHANNEL = "stylecam"
MAX_MESSAGE = 4096
METRICS_INTERVAL = 0.5
#: RTP video clock.
CLOCK = 90_000
_WRAP = 1 << 32


class ProtocolError(ValueError):
    """A data-channel message that is not one of ours."""


def encode(message: dict) -> str:
    text = json.dumps(message, separators=(",", ":"))
    if len(text) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(text)} bytes is over the {MAX_MESSAGE}-byte limit")
    return text


def decode(text) -> dict:
    """A message as a dict with a ``type``; raises :class:`ProtocolError` for anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not UTF-8 text") from None
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise ProtocolError("message too long or not text")
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        raise ProtocolError("message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("message has no type")
    return message


class PtsClock:
    """Timestamps for the frames a client sends: 90 kHz, increasing by at least
    :data:`MIN_STEP` plus a random jitter of up to 10 ms, so that :class:`FrameMatcher` can
    tell frames apart even after the decoders' rounding (PyAV's VP8 decoder may return a
    timestamp one tick early: up to two ticks over a round trip)."""

    JITTER = 900  # 10 ms at 90 kHz: invisible to the encoder's rate control
    MIN_STEP = 32

    def __init__(self, seed: int | None = None, fps: float | None = None):
        self._rng = random.Random(seed)
        self._last = -self.MIN_STEP
        #: With ``fps``, timestamps advance by one frame at that rate per frame whatever the
        #: clock says: a file sent in bursts must still look like video at its own rate to the
        #: encoder's rate control, which otherwise starves frames that seem to come too fast.
        self._step = int(CLOCK / fps) if fps else None

    def next(self, t: float) -> int:
        """The timestamp of a frame captured at ``t`` seconds (any monotonic clock)."""
        if self._step is not None:
            now = self._last + self._step
        else:
            # The jitter is added to the later of "now" and "the last one": frames that come
            # in a burst still differ by random steps, never by a regular one.
            now = max(int(t * CLOCK), self._last + self.MIN_STEP)
        pts = now + self._rng.randrange(self.JITTER)
        self._last = pts
        return pts


class FrameMatcher:
    """Remembers the last ``window`` sent timestamps and finds, for each returned timestamp,
    the sent frame it belongs to (or None while the offset is not yet known, or for a frame the
    matcher has forgotten). Timestamps match within :data:`TOLERANCE` ticks."""

    #: Votes the winning offset needs; it must also have twice the votes of any other.
    MIN_VOTES = 2
    TOLERANCE = 4

    def __init__(self, window: int = 256):
        self._sent: collections.OrderedDict[int, object] = collections.OrderedDict()
        self._window = window
        self._votes: collections.Counter[int] = collections.Counter()
        self._voters = 0
        self.offset: int | None = None
        self._misses = 0

    def sent(self, pts: int, payload) -> None:
        self._sent[pts % _WRAP] = payload
        while len(self._sent) > self._window:
            self._sent.popitem(last=False)

    def _lookup(self, p: int):
        for d in (0, -1, 1, -2, 2, -3, 3, -4, 4):
            payload = self._sent.get((p + d) % _WRAP)
            if payload is not None:
                return payload
        return None

    def _score(self, c: int) -> int:
        return sum(self._votes.get((c + d) % _WRAP, 0) for d in range(-self.TOLERANCE, self.TOLERANCE + 1))

    def match(self, returned_pts: int):
        v = returned_pts % _WRAP
        if self.offset is not None:
            payload = self._lookup((v - self.offset) % _WRAP)
            if payload is not None:
                self._misses = 0
                return payload
            self._misses += 1
            if self._misses < 8:
                return None
            # Several misses in a row: the offset changed (a new sender); learn it again.
            self.offset, self._votes, self._voters = None, collections.Counter(), 0
        # Candidates from the most recent sent frames only: old ones have long come back.
        candidates = {(v - p) % _WRAP for p in list(self._sent)[-64:]}
        self._votes.update(candidates)
        self._voters += 1
        scored = sorted(((self._score(c), c) for c in candidates), reverse=True)
        if len(candidates) == 1 and self._voters == 1:
            # The first frame back while one frame was ever sent: it can only be that one.
            (self.offset,) = candidates
            self._votes.clear()
            return self._lookup((v - self.offset) % _WRAP)
        if scored:
            best_score, best = scored[0]
            runner_up = max((s for s, c in scored[1:] if abs(((c - best + _WRAP // 2) % _WRAP) - _WRAP // 2)
                             > 2 * self.TOLERANCE), default=0)
            if best_score >= self.MIN_VOTES and best_score >= 2 * runner_up:
                self.offset = best
                self._votes.clear()
                return self._lookup((v - best) % _WRAP)
        if self._voters > 64:  # keep the tally bounded while nothing wins
            self._votes, self._voters = collections.Counter(), 0
        return None


def unwrap(previous: int | None, pts: int) -> int:
    """``pts`` (mod 2**32) as a 64-bit timestamp that keeps increasing past the wrap."""
    if previous is None:
        return pts % _WRAP
    base = previous - previous % _WRAP
    candidate = base + pts % _WRAP
    if candidate < previous - _WRAP // 2:
        candidate += _WRAP
    elif candidate > previous + _WRAP // 2:
        candidate -= _WRAP
    return candidate
