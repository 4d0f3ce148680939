"""The server's stylizer: one thread that owns the backends and paints every session's frames.

Contract: :meth:`Hub.put` takes a session's frame (any thread) into that session's own bounded
slot — when the slot is full its oldest frame is dropped and counted, so a session that sends
faster than the GPU paints only ever waits for its newest frames and never delays another
session. The hub thread takes frames of sessions that share a style (and frame size) into one
batch, up to the backend's batch size, round-robin over those sessions; it runs the batch
through the same :class:`~..stylize.base.Backend` ``stylecam run`` uses and hands each output to
its own session's ``deliver(image, tag)``, in the order that session's frames arrived. A paused
session's frames go back unpainted, in order (after its frames already being painted). Style
switches are applied by the hub thread between batches; one that cannot be applied keeps the
previous style and is reported to the session through ``notify``.

Batches in flight: the hub drives the backend's ``submit``/``collect`` protocol as the runner
does — while a batch is being painted and frames are already waiting, the next batch is
submitted before the previous one is collected, up to the backend's ``max_inflight`` (the
diffusion backend on CUDA encodes batch k+1 on a side stream while batch k denoises, so one
batch at a time would leave the GPU idle between batches). Batches are collected in the order
they were submitted, so every session's frames still leave in order. A batch for another
backend or another frame size waits until those in flight are back (a backend's buffers change
size only with none in flight).

Backends are created in the hub thread (a diffusion backend's CUDA context and streams belong
to the thread that made them), one per backend kind, and switched between styles per batch.

Temporal state is per session. A style whose output depends on earlier frames (a stabilizer, the
diffusion engine's feedback...: ``Backend.temporal``) never mixes sessions in one batch, and
before a batch of another session than the last one the hub detaches the backend's temporal
state, keeps it with the session it belongs to, and attaches the new session's own
(``Backend.detach_temporal``/``attach_temporal``; a fresh one for a new session, after a pause,
or after a style or size change). So each session's frames follow its own earlier frames only,
exactly as if it ran alone, and no caller's picture leaks into another's. The swap happens at
submit, in submit order, with batches in flight. Styles without temporal state share batches.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..frames import fit
from ..runner import engine_size
from ..styles import Style
from ..stylize.base import Backend, BackendError

log = logging.getLogger(__name__)

#: Frames a session's slot holds: one being painted's successor plus the newest.
DEFAULT_DEPTH = 2
#: The most a client may ask for (a client that sends a file waits for its frames).
MAX_DEPTH = 16
#: Whose temporal state a backend holds before the hub first attaches one: its warm-up's.
_WARMUP = object()


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    #: (time out, seconds from arrival to output) of recent frames.
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=240))
    batch_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    #: Sizes of the recent batches this session's frames were in, and how many of them held
    #: frames of other sessions too.
    batch_sizes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    shared_batches: int = 0

    def summary(self, queue: int) -> dict:
        now = time.perf_counter()
        window = [(t, lat) for t, lat in self.recent if now - t <= 2.0]
        fps = 0.0
        if len(window) > 1:
            span = window[-1][0] - window[0][0]
            fps = (len(window) - 1) / span if span > 0 else 0.0
        lat = [lat for _, lat in window] or [lat for _, lat in list(self.recent)[-30:]]
        return {
            "fps": round(fps, 1),
            "gpu_ms": round(float(np.median(self.batch_ms)), 2) if self.batch_ms else None,
            "queue": queue,
            "latency_ms": round(1000 * float(np.median(lat)), 1) if lat else None,
            "batch": round(float(np.mean(self.batch_sizes)), 2) if self.batch_sizes else None,
            "shared_batches": self.shared_batches,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "errors": self.errors,
        }


class HubSession:
    """A session as the hub sees it. ``deliver`` and ``notify`` are called from the hub thread."""

    def __init__(self, sid: str, style: Style, deliver: Callable[[np.ndarray, object], None],
                 notify: Callable[[dict], None] | None, depth: int):
        self.id = sid
        self.style = style
        self.deliver = deliver
        self.notify = notify or (lambda message: None)
        self.depth = max(1, min(MAX_DEPTH, depth))
        self.paused = False
        self.size: tuple[int, int] | None = None
        self.pending_style: Style | None = None
        #: (image, tag, arrival time), oldest first.
        self.slot: collections.deque = collections.deque()
        self.stats = SessionStats()
        self.failing = False
        #: The session's temporal state while another session's is in the backend (hub thread):
        #: (backend kind, style name, frame shape, state), or None.
        self.saved_temporal: tuple | None = None
        #: The next frame does not follow the last one (a pause): start its state afresh.
        self.restart = False

    @property
    def key(self) -> tuple:
        return (self.style.name, self.size)


@dataclass
class _InFlight:
    """A batch submitted to a backend and not collected yet."""

    style: Style
    backend: Backend
    #: (session, image, tag, arrival time) per frame, in batch order.
    batch: list
    ticket: object
    #: What ``set_style`` or ``submit`` raised (the batch then goes back unpainted, in order).
    error: Exception | None
    t_submit: float

    @property
    def key(self) -> tuple:
        image = self.batch[0][1]
        return (self.style.backend, image.shape)


class Hub:
    """See the module docstring. ``backend_factory(style)`` returns a ready backend for
    ``style.backend`` (the server passes :func:`~..runner.start_backend`). ``size`` fixes the
    engine size of every session (None: each session's from its first frame). ``gather``: how
    long, in seconds, a batch waits for the other sessions of its style to deliver a frame."""

    def __init__(self, backend_factory: Callable[[Style], Backend], *, size: tuple[int, int] | None = None,
                 batch_size: int | None = None, gather: float = 0.01):
        self._factory = backend_factory
        self.size = size
        self.batch_size = batch_size
        self.gather = max(0.0, gather)
        self._sessions: dict[str, HubSession] = {}
        self._backends: dict[str, Backend] = {}
        self._backend_style: dict[str, str] = {}
        self._unavailable: dict[str, str] = {}
        self.default_style: Style | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._work: collections.deque = collections.deque()  # callables for the hub thread
        self.batches = 0
        self.shared_batches = 0
        self.max_batch = 0
        #: How many batches of each size were formed, and the most ever in flight at once.
        self.batch_sizes: collections.Counter = collections.Counter()
        self.max_inflight_seen = 0
        #: Milliseconds each recent batch kept the backend busy (see ``_finish``).
        self.batch_ms: collections.deque = collections.deque(maxlen=256)
        self._pending: collections.deque[_InFlight] = collections.deque()  # hub thread only
        self._last_done = 0.0
        #: backend kind -> (session, style name, frame shape) whose temporal state the backend
        #: holds (None: a fresh or stateless stream; absent: its warm-up's). Hub thread only.
        self._stream: dict[str, object] = {}

    # -- life cycle --------------------------------------------------------------------------

    def start(self, style: Style, timeout: float | None = None) -> None:
        """Start the hub thread and create the backend ``style`` needs there; raises what
        creating it raised (a missing bundle, no GPU memory...)."""
        self.default_style = style
        self._thread = threading.Thread(target=self._run, name="stylecam-hub", daemon=True)
        self._thread.start()
        done = threading.Event()
        result: list = [None]

        def make():
            try:
                self._backend_for(style)
            except BaseException as e:  # handed to the caller's thread
                result[0] = e
            done.set()

        self._call(make)
        if not done.wait(timeout):
            raise TimeoutError("the stylizer did not start in time")
        if result[0] is not None:
            raise result[0]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- sessions (any thread) ---------------------------------------------------------------

    def add(self, sid: str, style: Style, deliver, notify=None, depth: int = DEFAULT_DEPTH) -> HubSession:
        session = HubSession(sid, style, deliver, notify, depth)
        with self._cond:
            self._sessions[sid] = session
        return session

    def remove(self, sid: str) -> None:
        with self._cond:
            self._sessions.pop(sid, None)
            self._cond.notify_all()

    def put(self, sid: str, image: np.ndarray, tag) -> None:
        with self._cond:
            session = self._sessions.get(sid)
            if session is None:
                return
            if session.size is None:
                session.size = self.size or engine_size(image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != session.size:
            image = fit(image, session.size)  # outside the lock: it costs a resize
        with self._cond:
            session.stats.frames_in += 1
            if len(session.slot) >= session.depth:
                session.slot.popleft()
                session.stats.dropped += 1
            session.slot.append((image, tag, time.perf_counter()))
            self._cond.notify_all()

    def set_style(self, sid: str, style: Style) -> None:
        """Applied by the hub thread before the session's next batch."""
        with self._cond:
            session = self._sessions.get(sid)
            if session is not None:
                session.pending_style = style
                self._cond.notify_all()

    def set_paused(self, sid: str, paused: bool) -> None:
        with self._cond:
            session = self._sessions.get(sid)
            if session is not None:
                if session.paused != bool(paused):
                    session.restart = True  # the frames in between were not painted
                session.paused = bool(paused)
                self._cond.notify_all()

    def session_stats(self, sid: str) -> dict | None:
        with self._cond:
            session = self._sessions.get(sid)
            if session is None:
                return None
            out = session.stats.summary(len(session.slot))
            out["style"] = session.style.name
            out["paused"] = session.paused
            return out

    def stats(self) -> dict:
        """Counters over the server's life: batches, how many held several sessions' frames,
        the sizes formed (``{size: count}``), the most batches in flight at once, and the median
        backend-busy milliseconds per batch over recent batches."""
        with self._cond:
            return {"sessions": len(self._sessions), "batches": self.batches,
                    "shared_batches": self.shared_batches, "max_batch": self.max_batch,
                    "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                    "max_inflight": self.max_inflight_seen,
                    "batch_ms_p50": round(float(np.median(self.batch_ms)), 2) if self.batch_ms else None,
                    "backends": sorted(self._backends)}

    # -- the hub thread ----------------------------------------------------------------------

    def _call(self, fn) -> None:
        with self._cond:
            self._work.append(fn)
            self._cond.notify_all()

    def _run(self) -> None:
        pending = self._pending
        try:
            while True:
                with self._cond:
                    # With a batch in flight there is no waiting here: either the next batch is
                    # ready to go in beside it, or the one in flight is collected at once.
                    while not self._closed and not self._work and not pending and not self._ready():
                        self._cond.wait(0.25)
                    if self._closed:
                        return
                    work = list(self._work)
                    self._work.clear()
                for fn in work:
                    fn()
                self._apply_styles()
                self._pass_paused()
                taken = self._take_batch()
                if taken is not None:
                    self._submit(*taken)
                elif pending:
                    self._finish(pending.popleft())
        finally:
            self._drain(lambda item: True, quiet=True)
            for backend in self._backends.values():
                try:
                    backend.close()
                except Exception:
                    log.warning("closing the %s backend failed", backend.name, exc_info=True)
            self._backends.clear()

    def _drain(self, until, quiet: bool = False) -> None:
        """Collect batches in flight, oldest first, while ``until(oldest)`` holds."""
        while self._pending and until(self._pending[0]):
            item = self._pending.popleft()
            try:
                self._finish(item)
            except Exception:
                if not quiet:
                    raise
                log.debug("finishing a batch while stopping failed", exc_info=True)

    def _ready(self) -> bool:
        return any(s.slot or s.pending_style is not None for s in self._sessions.values())

    def unavailable(self, style: Style) -> str | None:
        """Why ``style`` cannot run here (its backend failed to start before), or None."""
        return self._unavailable.get(style.backend)

    def _backend_for(self, style: Style) -> Backend:
        backend = self._backends.get(style.backend)
        if backend is None:
            if style.backend in self._unavailable:
                raise BackendError(self._unavailable[style.backend])
            try:
                backend = self._factory(style)
            except Exception as e:
                # Remembered: a missing bundle or GPU does not appear between two batches.
                self._unavailable[style.backend] = f"the {style.backend} stylizer cannot start here: {e}"
                raise BackendError(self._unavailable[style.backend]) from e
            self._backends[style.backend] = backend
            self._backend_style[style.backend] = style.name
        return backend

    def _apply_styles(self) -> None:
        with self._cond:
            pending = [(s, s.pending_style) for s in self._sessions.values() if s.pending_style is not None]
            for s, _ in pending:
                s.pending_style = None
        for session, style in pending:
            try:
                backend = self._backend_for(style)
                self._park(style.backend, backend)  # set_style may reset the stream it holds
                backend.set_style(style)  # fails here, not mid-stream, for params it cannot run
                self._backend_style[style.backend] = style.name
            except Exception as e:
                log.warning("session %s: style %s cannot be used: %s", session.id, style.name, e)
                session.notify({"type": "error", "message": f"style {style.name!r} cannot be used here ({e}); "
                                f"keeping {session.style.name!r}"})
                continue
            session.style = style
            session.notify({"type": "style", "name": style.name})

    def _pass_paused(self) -> None:
        with self._cond:
            items = []
            for s in self._sessions.values():
                if s.paused and s.slot:
                    items.append((s, list(s.slot)))
                    s.slot.clear()
        if not items:
            return
        # Frames of these sessions still being painted are older: they leave first.
        ids = {id(s) for s, _ in items}
        while any(id(f[0]) in ids for item in self._pending for f in item.batch):
            self._finish(self._pending.popleft())
        for session, frames in items:
            for image, tag, t_in in frames:
                self._deliver(session, image, tag, t_in)

    def _take_batch(self) -> tuple[Style, list[tuple[HubSession, np.ndarray, object, float]]] | None:
        with self._cond:
            waiting = [s for s in self._sessions.values() if s.slot and not s.paused]
            if not waiting:
                return None
            first = min(waiting, key=lambda s: s.slot[0][2])  # the oldest frame goes first
            key, style = first.key, first.style
            backend = self._backends.get(style.backend)
            limit = self.batch_size or (backend.batch_size if backend is not None else 1)
            if self._temporal(backend, style):
                group = [first]  # its frames follow its own earlier frames only: a batch of its own
            else:
                group = [s for s in self._sessions.values() if s.key == key and not s.paused]
            # Wait a moment for the other sessions of this style, so their frames share the
            # batch instead of each paying a batch of its own.
            deadline = first.slot[0][2] + self.gather
            while (len(group) > 1 and any(not s.slot for s in group) and sum(len(s.slot) for s in group) < limit
                   and not self._closed):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                group = [s for s in self._sessions.values() if s.key == key and not s.paused]
            batch = []
            while len(batch) < limit:
                took = False
                for s in group:
                    if s.slot and len(batch) < limit:
                        image, tag, t_in = s.slot.popleft()
                        batch.append((s, image, tag, t_in))
                        took = True
                if not took:
                    break
            return (style, batch) if batch else None

    def _submit(self, style: Style, batch: list) -> None:
        """Start painting ``batch``; collects the oldest batches in flight when the backend
        holds no more (its ``max_inflight``)."""
        images = [image for _, image, _, _ in batch]
        try:
            backend = self._backend_for(style)
        except BackendError as e:
            # The style's stylizer cannot run here: its sessions go on with the server's default
            # style (this batch goes back unpainted, after what is in flight).
            self._drain(lambda item: True)
            for session in {id(s): s for s, _, _, _ in batch}.values():
                if session.style is style and self.default_style is not None:
                    session.style = self.default_style
                    session.notify({"type": "error", "message": f"{e}; using {self.default_style.name!r}"})
                    session.notify({"type": "style", "name": self.default_style.name})
            for session, image, tag, t_in in batch:
                self._deliver(session, image, tag, t_in)
            return
        item = _InFlight(style, backend, batch, None, None, 0.0)
        # Another backend or frame size: what is in flight comes back first.
        self._drain(lambda old: old.key != item.key)
        try:
            joining = self._leave_stream(backend, style, batch)
            if self._backend_style.get(style.backend) != style.name:
                backend.set_style(style)  # applies from this batch; those in flight keep theirs
                self._backend_style[style.backend] = style.name
            if joining is not None:
                self._join_stream(backend, style, *joining)
            item.t_submit = time.perf_counter()
            item.ticket = backend.submit(images)
        except Exception as e:  # goes back unpainted, in its turn
            item.error = e
        self._pending.append(item)
        with self._cond:
            self.max_inflight_seen = max(self.max_inflight_seen, len(self._pending))
        limit = max(1, int(getattr(backend, "max_inflight", 1) or 1))
        while len(self._pending) >= limit:
            self._finish(self._pending.popleft())

    # -- temporal state per session (hub thread) ---------------------------------------------

    def _temporal(self, backend: Backend | None, style: Style) -> bool:
        """Whether ``style`` keeps state from frame to frame on ``backend`` (not made yet: assume so)."""
        if backend is None:
            return True
        try:
            return bool(backend.temporal(style))
        except Exception:  # a style it cannot check is refused by set_style; never mix on a guess
            log.debug("backend %s cannot say whether %s is temporal", backend.name, style.name, exc_info=True)
            return True

    def _leave_stream(self, backend: Backend, style: Style, batch: list) -> tuple | None:
        """Before ``batch`` is submitted (and before ``set_style``): unless it continues the
        stream the backend holds, park that stream (:meth:`_park`). Returns what
        :meth:`_join_stream` needs after ``set_style``, or None when nothing changes hands."""
        kind, shape = style.backend, batch[0][1].shape
        owner = batch[0][0] if self._temporal(backend, style) else None
        if owner is not None and any(s is not owner for s, _, _, _ in batch):
            raise RuntimeError("internal: a batch of a style with temporal state mixes sessions")
        restart = False
        if owner is not None:
            with self._cond:
                restart, owner.restart = owner.restart, False
            if restart:
                owner.saved_temporal = None
        held = self._stream.get(kind, _WARMUP)
        if owner is None and held is None:
            return None  # a stateless batch on a backend that holds no session's state
        if owner is not None and not restart and held == (owner, style.name, shape):
            return None  # the next batch of the stream it holds
        self._park(kind, backend, drop=owner if restart else None)
        return owner, shape, restart

    def _park(self, kind: str, backend: Backend, drop: HubSession | None = None) -> None:
        """Detach the temporal state the backend holds and keep it with its session (unless that
        session is gone, or is ``drop``); the backend then holds a fresh stream. Called before
        anything (a batch of another stream, a ``set_style``) would change or read it."""
        held = self._stream.get(kind, _WARMUP)
        if held is None:
            return
        state = backend.detach_temporal()
        self._stream[kind] = None
        if isinstance(held, tuple):
            session, name, shape = held
            with self._cond:
                live = self._sessions.get(session.id) is session
            if live and session is not drop and state is not None:
                session.saved_temporal = (kind, name, shape, state)

    def _join_stream(self, backend: Backend, style: Style, owner: HubSession | None, shape: tuple,
                     restart: bool) -> None:
        """After ``set_style``: attach ``owner``'s own state (a fresh one where it kept none for
        this style and frame size, or restarts); a stateless batch leaves the backend fresh."""
        if owner is None:
            return
        saved, owner.saved_temporal = owner.saved_temporal, None
        state = None
        if saved is not None and not restart and saved[:3] == (style.backend, style.name, shape):
            state = saved[3]
        backend.attach_temporal(state)
        self._stream[style.backend] = (owner, style.name, shape)

    def _finish(self, item: _InFlight) -> None:
        """Collect a batch (the oldest in flight) and hand each frame to its session."""
        batch, error = item.batch, item.error
        images = [image for _, image, _, _ in batch]
        outputs = images
        if error is None:
            try:
                outputs = item.backend.collect(item.ticket)
                if len(outputs) != len(images):
                    raise RuntimeError(f"the {item.backend.name} backend returned {len(outputs)} frames "
                                       f"for {len(images)}")
            except Exception as e:
                outputs, error = images, e
        if error is not None:  # the frames go back unpainted; the next batch tries again
            log.warning("a batch of %d frames failed (%s); sending them back unpainted", len(images), error)
        now = time.perf_counter()
        # The time this batch kept the backend to itself: from its submit, or from the moment
        # the batch before it came back if that was later. With batches overlapping on the GPU
        # that is the GPU time per batch; with one at a time, submit to collect.
        ms = 1000 * (now - max(item.t_submit or now, self._last_done))
        self._last_done = now
        sessions = {id(s) for s, _, _, _ in batch}
        with self._cond:
            self.batches += 1
            self.max_batch = max(self.max_batch, len(batch))
            self.batch_sizes[len(batch)] += 1
            self.batch_ms.append(ms)
            if len(sessions) > 1:
                self.shared_batches += 1
        seen = set()
        for (session, _, tag, t_in), out in zip(batch, outputs):
            st = session.stats
            if id(session) not in seen:
                seen.add(id(session))
                st.batch_ms.append(ms)
                st.batch_sizes.append(len(batch))
                if len(sessions) > 1:
                    st.shared_batches += 1
                if error is not None:
                    st.errors += 1
                    if not session.failing:
                        session.notify({"type": "error", "message": f"the stylizer failed ({error}); "
                                        "frames come back unpainted while it is retried"})
                session.failing = error is not None
            self._deliver(session, out, tag, t_in)

    def _deliver(self, session: HubSession, image: np.ndarray, tag, t_in: float) -> None:
        now = time.perf_counter()
        session.stats.frames_out += 1
        session.stats.recent.append((now, now - t_in))
        try:
            session.deliver(image, tag)
        except Exception:  # a closed session's track: nothing to do
            log.debug("delivering to session %s failed", session.id, exc_info=True)
