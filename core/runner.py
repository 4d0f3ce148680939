"""The frame loop: source -> (resize once) -> backend in batches -> sinks, with metrics.

Two threads: a capture thread that owns the source (mss and some camera drivers must be used
from the thread that opened them) and the runner's own loop, which batches frames, runs the
backend and writes sinks. Between them sits a bounded hand-off: for a live source it drops the
oldest frame when full (a stale frame is worth nothing to a live camera), for a file it blocks
(every frame of a clip is wanted).

Faults never freeze the stream (docs/reliability.md has the whole table):

* an output (sink) that fails to open or write is reported once and switched off while the
  other outputs keep getting frames; outputs that lose nothing by reopening (virtual camera,
  MJPEG: ``reopenable``) are retried with backoff. When every output has failed and none can
  come back, the run stops with a :class:`RunnerError`.
* a stylizer exception passes that batch's frames through unstyled and is reported once; the
  next batch tries the stylizer again. ``backend_retries`` failed batches in a row stop the run
  with a :class:`StylizerError`.
* a style that cannot be applied keeps the previous style and is reported.
* a source that stalls is reported (and its return); the runner does not invent frames — the
  virtual camera's pacer re-sends the last one at the camera's rate, MJPEG clients keep the
  last picture, and a file gets no duplicates.
* a frame the source hands over that is not a picture is skipped and reported; a source that
  sends nothing else stops the run.

Each report is a :class:`RunnerEvent`: logged, kept in :attr:`Runner.events` and passed to the
``on_event`` callback (from the runner's threads: a UI must hand it to its own thread).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from .frames import MAX_SIDE, MIN_SIDE, Frame, as_rgb, fit
from .handoff import Handoff
from .metrics import Metrics
from .sinks import FileSink, Sink
from .sources import Source
from .styles import Style
from .stylize import base as _base
from .stylize.base import Backend, BackendError

log = logging.getLogger(__name__)

#: How many events a runner keeps (the oldest go first).
EVENT_WINDOW = 256
#: Failed stylizer batches in a row before the run stops (each failed batch passes through).
BACKEND_RETRIES = 5
#: Seconds without a frame from the source before a stall is reported.
STALL_TIMEOUT = 2.0
#: The longest the runner holds a waiting batch back for the backend's ``pace``, seconds.
PACE_MAX_S = 0.05
#: Unusable frames in a row before the source is given up.
BAD_FRAME_LIMIT = 100
#: First and longest wait, in seconds, before a failed reopenable output is tried again.
SINK_BACKOFF = (1.0, 30.0)
#: How long ``run()`` waits for a capture thread stuck in the source's ``read`` when stopping.
CAPTURE_JOIN_TIMEOUT = 1.0


@dataclass(frozen=True)
class RunnerEvent:
    """Something the user should know about a running stream.

    ``kind`` is one of: ``sink-failed``, ``sink-recovered``, ``backend-failed``,
    ``backend-recovered``, ``style-failed``, ``source-stalled``, ``source-resumed``,
    ``source-lost``, ``source-back``, ``bad-frame``, ``capture-stuck``, ``batch-reduced``.
    ``message`` is one sentence for a notification; ``level`` is ``info``, ``warning`` or
    ``error``; ``component`` names the sink, source or backend.
    """

    kind: str
    message: str
    level: str = "warning"
    component: str = ""
    t: float = field(default_factory=time.monotonic)


class RunnerError(RuntimeError):
    """The run failed; the message is for the user."""


class StylizerError(RunnerError):
    """The stylizer failed on ``BACKEND_RETRIES`` batches in a row; ``__cause__`` is its last error."""


def _stylizer_error(message: str, cause: BaseException) -> StylizerError:
    # Callers that wrap their backend and catch their own wrapper (the desktop worker catches
    # the BackendFailure its TrackingBackend raises, to fall back to another style) must still
    # recognise the failure, and the CLI catches RunnerError: so the error is both, when the
    # cause is a RuntimeError (as backend and torch errors are) whose class takes one message.
    if isinstance(cause, RuntimeError):
        try:
            cls = type(f"StylizerError[{type(cause).__name__}]", (StylizerError, type(cause)), {})
            return cls(message)
        except TypeError:
            pass
    return StylizerError(message)


def is_out_of_memory(error: BaseException) -> bool:
    """True for host or device out-of-memory errors, also when a loader wrapped one into a message."""
    chain = error
    for _ in range(8):
        if chain is None:
            break
        if isinstance(chain, MemoryError) or type(chain).__name__ == "OutOfMemoryError":
            return True
        text = str(chain).lower()
        # CUDA/MPS say "out of memory"; torch's CPU allocator says it "can't allocate memory".
        if any(k in text for k in ("out of memory", "outofmemoryerror", "can't allocate memory",
                                   "cannot allocate memory")):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def engine_size(width: int, height: int) -> tuple[int, int]:
    """The engine size for a source of native ``width`` x ``height``: even sides between
    ``MIN_SIDE`` and ``MAX_SIDE``. A tiny source (1x1) is scaled up and a huge one down, keeping
    the aspect ratio as far as the limits allow (video encoders, virtual cameras and stylizers
    all need some pixels, and even sides)."""
    scale = 1.0
    if max(width, height) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
    if min(width, height) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(width, height)
    sides = []
    for side in (width, height):
        s = min(MAX_SIDE, max(MIN_SIDE, int(side * scale)))
        sides.append(s - s % 2)
    return sides[0], sides[1]


class _Output:
    """A sink and its health as the runner sees it."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.opened = False
        self.failed = False
        self.retry_at = 0.0
        self.backoff = SINK_BACKOFF[0]
        self.failed_since = 0.0

    @property
    def reopenable(self) -> bool:
        return bool(getattr(self.sink, "reopenable", False))


class Runner:
    """Moves frames from ``source`` through ``backend`` to ``sinks``.

    ``size`` is the engine size (W, H); None takes the source's native size (see
    :func:`engine_size`). ``max_frames`` stops after that many source frames. ``run()`` blocks
    until the source ends, ``max_frames`` is reached or ``stop()`` is called, and returns the
    metrics summary. ``on_event`` gets each :class:`RunnerEvent`; ``backend_retries`` and
    ``stall_timeout`` tune the fault policy described in the module docstring.
    """

    def __init__(self, source: Source, backend: Backend, sinks: list[Sink], *, size=None, fps=None,
                 max_frames: int | None = None, batch_size: int | None = None,
                 on_event: Callable[[RunnerEvent], None] | None = None,
                 backend_retries: int = BACKEND_RETRIES, stall_timeout: float = STALL_TIMEOUT,
                 style: Style | None = None):
        self.source = source
        self.backend = backend
        self.sinks = list(sinks)
        self.size = size
        self.fps = fps
        self.max_frames = max_frames
        self.batch_size = max(1, batch_size or backend.batch_size)
        self.on_event = on_event
        self.backend_retries = max(1, backend_retries)
        self.stall_timeout = stall_timeout
        self.metrics = Metrics()
        self.events: collections.deque[RunnerEvent] = collections.deque(maxlen=EVENT_WINDOW)
        self._stop = threading.Event()
        self._paused = False
        self._pending_style: Style | None = None
        self._style_lock = threading.Lock()
        # Capacity: one batch being filled plus one waiting, so the backend never starves and a
        # live source never builds a backlog of stale frames. A file among the outputs keeps
        # every frame: then even a live source waits for the stylizer instead of dropping here
        # (``max_frames`` frames read are ``max_frames`` frames written).
        keeps_all = any(isinstance(s, FileSink) for s in self.sinks)
        self._handoff = Handoff(2 * self.batch_size, lossy=source.live and not keeps_all)
        self._capture_error: BaseException | None = None
        self._capture_thread: threading.Thread | None = None
        self._outputs = [_Output(s) for s in self.sinks]
        self._out_size: tuple[int, int] | None = None
        self._out_fps: float | None = None
        self._backend_streak = 0
        self._passthrough_streak = 0
        self._t_last_frame: float | None = None
        self._stalled_since: float | None = None
        #: The style the backend paints with now (``style``: the one it was created with).
        self.style_name = style.name if style is not None else ""
        # Frame geometry (one owner): ``size`` is what the sinks get. A backend that ``resizes``
        # takes frames at the source's own size (``_native``) and returns them at ``size``.
        self._native: tuple[int, int] | None = None
        self._was_paused = False
        self._backend_sized = False

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

    @property
    def failed_sinks(self) -> list[Sink]:
        """Outputs switched off by a failure (reopenable ones may come back)."""
        return [o.sink for o in self._outputs if o.failed]

    # -- events ------------------------------------------------------------------------------

    def _event(self, kind: str, message: str, level: str = "warning", component: str = "") -> None:
        event = RunnerEvent(kind, message, level, component)
        self.events.append(event)
        {"info": log.info, "warning": log.warning}.get(level, log.error)("%s", message)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken listener must not break the stream
                log.exception("the runner's on_event callback failed")

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> dict:
        self.metrics = Metrics()
        self._outputs = [_Output(s) for s in self.sinks]  # sinks may be added until the run starts
        # No stall before the first frame: opening a camera may take seconds, and a source that
        # cannot open says so itself.
        self._t_last_frame = None
        self._capture_thread = threading.Thread(target=self._capture, name="stylecam-capture", daemon=True)
        log.debug("stream started: %s -> %s -> %s", self.source.name, self.backend.name,
                  ", ".join(s.name for s in self.sinks))
        self._capture_thread.start()
        cpu0 = time.thread_time()
        try:
            self._loop()
        finally:
            self.metrics.cpu_loop_s = time.thread_time() - cpu0
            self.stop()
            self._capture_thread.join(timeout=CAPTURE_JOIN_TIMEOUT)
            if self._capture_thread.is_alive():
                # Closing a device from another thread while its read is blocked can crash in
                # native code; the daemon thread closes the source when (if) the read returns.
                self._event("capture-stuck", f"{self.source.name} did not return a frame while stopping; "
                            "it is released when it does", component=self.source.name)
            for out in self._outputs:
                try:
                    out.sink.close()
                except Exception as e:  # a failing close must not hide the run's result
                    log.warning("closing %s failed: %s", out.sink.name, e)
        if self._capture_error is not None:
            raise RunnerError(str(self._capture_error)) from self._capture_error
        return self.metrics.summary()

    def _capture(self) -> None:
        n = 0
        bad_streak = 0
        connected = True
        cpu0 = time.thread_time()
        try:
            self.source.open()
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    break
                raw = self.source.read()
                t = time.perf_counter()
                if raw is None:
                    break
                connected = self._watch_connection(connected)
                try:
                    img = self._geometry(as_rgb(raw))
                except (ValueError, TypeError, cv2.error) as e:
                    bad_streak += 1
                    self.metrics.bad_frames += 1
                    if bad_streak == 1:
                        self._event("bad-frame", f"{self.source.name} sent a frame that is not a picture ({e}); "
                                    "skipping such frames", component=self.source.name)
                    if bad_streak >= BAD_FRAME_LIMIT:
                        raise RunnerError(f"{self.source.name} sent {bad_streak} unusable frames in a row "
                                          f"(last: {e}); check the source") from e
                    continue
                bad_streak = 0
                if not self._handoff.put(Frame(img, n, t)):
                    break
                self._t_last_frame = time.monotonic()
                n += 1
                self.metrics.frames_in = n
        except BaseException as e:  # reported by run() in the caller's thread
            self._capture_error = e
        finally:
            self.metrics.cpu_capture_s = time.thread_time() - cpu0
            try:
                self.source.close()
            finally:
                self._handoff.close()

    def _geometry(self, img: np.ndarray) -> np.ndarray:
        # The one place input frames are sized (capture thread). A backend that resizes gets the
        # source's own size, except when a source changes size mid-stream (a camera reconnecting
        # at another resolution): those frames are fitted to the first size on the host, so the
        # backend's buffers never change under batches in flight.
        native = (img.shape[1], img.shape[0])
        if self.size is None:
            self.size = engine_size(*native)
        if not getattr(self.backend, "resizes", False):
            return fit(img, self.size)
        if self._native is None:
            self._native = native
        return img if native == self._native else fit(img, self._native)

    def _watch_connection(self, was_connected: bool) -> bool:
        # Sources that keep the stream alive through a loss (CameraSource repeats its last frame
        # while it reconnects) say so with ``connected``; the user should hear about it.
        connected = bool(getattr(self.source, "connected", True))
        if was_connected and not connected:
            self._event("source-lost", f"{self.source.name} was lost; showing its last picture while it "
                        "reconnects", component=self.source.name)
        elif connected and not was_connected:
            self._event("source-back", f"{self.source.name} is back", "info", self.source.name)
        return connected

    def _loop(self) -> None:
        # Batches submitted to the backend and not yet collected, oldest first: (frames, ticket,
        # submit error, submit time). With a backend that overlaps batches (max_inflight 2) the
        # next batch is submitted before the previous one is collected, but only while frames
        # are already waiting: when the source is the slower side, the batch in flight is
        # collected at once instead of waiting for more frames (no latency for throughput).
        pending: collections.deque = collections.deque()
        inflight = max(1, int(getattr(self.backend, "max_inflight", 1)))
        while True:
            wait = 0.0 if pending else min(0.25, self.stall_timeout)
            # Frames already waiting while a batch is in flight: the backend may ask to hold
            # them back until the device can take them (``Backend.pace``); then the newest go.
            held = bool(pending) and self._handoff.waiting() > 0 and self._hold()
            batch = self._handoff.get_batch(self.batch_size, timeout=wait, newest=held)
            if not batch:
                if pending:
                    self._finish(*pending.popleft())
                    continue
                if self._handoff.closed:
                    return
                self._watch_stall()
                continue
            if self._stalled_since is not None:
                gap = time.monotonic() - self._stalled_since
                self._event("source-resumed", f"{self.source.name} sends frames again after a "
                            f"{gap:.1f} s stall", "info", self.source.name)
                self._stalled_since = None
            self._apply_style()
            if self._paused:
                self._was_paused = True
                while pending:  # frames leave in order: what is in flight goes first
                    self._finish(*pending.popleft())
                for frame in batch:
                    self._emit(Frame(self._to_size(frame.image), frame.index, frame.t_capture))
            else:
                if self._was_paused:
                    # The stylizer saw none of the frames while paused: its temporal memory (the
                    # last output it blends with) is of another moment.
                    self._was_paused = False
                    reset = getattr(self.backend, "reset_temporal", None)
                    if reset is not None:
                        reset()
                if not self._backend_sized and getattr(self.backend, "resizes", False):
                    # Before the first batch (the capture thread has set ``size`` by now).
                    self.backend.set_output_size(self.size)
                    self._backend_sized = True
                pending.append(self._submit(batch))
                while len(pending) >= inflight:
                    self._finish(*pending.popleft())
            self.metrics.dropped = self._handoff.dropped

    def _hold(self) -> bool:
        """Wait as long as the backend's ``pace`` says (a stop cuts it short); whether it did."""
        try:
            hold = float(self.backend.pace()) if hasattr(self.backend, "pace") else 0.0
        except Exception:  # pacing is an optimisation: never a reason to stop the stream
            hold = 0.0
        if hold <= 0.0:
            return False
        self._stop.wait(min(hold, PACE_MAX_S))
        return True

    def _submit(self, batch: list[Frame]) -> tuple:
        t0 = time.perf_counter()
        style = self.style_name  # what paints this batch, even if the style changes before it leaves
        try:
            return batch, self.backend.submit([f.image for f in batch]), None, t0, style
        except Exception as e:  # reported when the batch is finished, in order
            return batch, None, e, t0, style

    def _finish(self, batch: list[Frame], ticket, error: Exception | None, t0: float, style: str) -> None:
        images = [f.image for f in batch]
        outputs, styled = self._collect(images, ticket, error)
        self.metrics.batch_times.append(time.perf_counter() - t0)
        for frame, out in zip(batch, outputs):
            if styled:
                self._emit(Frame(out, frame.index, frame.t_capture, frame.image, style))
            else:  # passed through unstyled (the stylizer failed on this batch)
                self._emit(Frame(self._to_size(out), frame.index, frame.t_capture))

    def _to_size(self, image: np.ndarray) -> np.ndarray:
        # Frames that skip a resizing backend (paused, passed through) still reach the sinks at
        # the output size.
        return fit(image, self.size) if self.size is not None else image

    def _watch_stall(self) -> None:
        last = self._t_last_frame
        if self._stalled_since is not None or last is None or self._stop.is_set():
            return
        if time.monotonic() - last >= self.stall_timeout:
            self._stalled_since = last
            self.metrics.stalls += 1
            self._event("source-stalled", f"no frames from {self.source.name} for {self.stall_timeout:g} s; "
                        "the outputs keep showing the last picture", component=self.source.name)

    def _collect(self, images: list[np.ndarray], ticket, error: Exception | None) -> tuple[list[np.ndarray], bool]:
        """The batch's output frames, and False when they are its inputs passed through unstyled."""
        if error is None:
            try:
                outputs = self.backend.collect(ticket)
                if len(outputs) != len(images):
                    raise RunnerError(f"backend {self.backend.name} returned {len(outputs)} frames for {len(images)}")
            except Exception as e:
                error = e
        if error is not None:
            return self._backend_failed(error, images), False
        if self._backend_streak:
            self._event("backend-recovered", f"the stylizer works again ({self._passthrough_streak} frames "
                        "went out unstyled)", "info", self.backend.name)
            self._backend_streak = self._passthrough_streak = 0
        return outputs, True

    def _backend_failed(self, error: Exception, images: list[np.ndarray]) -> list[np.ndarray]:
        self._backend_streak += 1
        self.metrics.backend_errors += 1
        if self._backend_streak >= self.backend_retries:
            raise _stylizer_error(f"the stylizer failed on {self._backend_streak} batches in a row: {error}",
                                  error) from error
        if self._backend_streak == 1:
            self._event("backend-failed", f"the stylizer failed ({error}); frames go out unstyled while it "
                        "is retried", component=self.backend.name)
        self.metrics.passthrough += len(images)
        self._passthrough_streak += len(images)
        return images

    def _apply_style(self) -> None:
        with self._style_lock:
            style, self._pending_style = self._pending_style, None
        if style is None:
            return
        try:
            self.backend.set_style(style)
            self.style_name = style.name
        except Exception as e:
            self._event("style-failed", f"style {style.name!r} cannot be used ({e}); keeping the previous style",
                        component=self.backend.name)

    # -- outputs -------------------------------------------------------------------------------

    def _emit(self, frame: Frame) -> None:
        if self._out_size is None:
            self._out_size, self._out_fps = frame.size, self.fps or self.source.fps or 30.0
        now_mono = time.monotonic()
        for out in self._outputs:
            if out.failed:
                if not out.reopenable or now_mono < out.retry_at:
                    continue
                if not self._reopen(out):
                    continue
            try:
                if not out.opened:
                    out.sink.open(self._out_size, self._out_fps)
                    out.opened = True
                out.sink.write(frame)
            except Exception as e:
                self._sink_failed(out, e)
        if self._outputs and all(o.failed and not o.reopenable for o in self._outputs):
            names = ", ".join(o.sink.name for o in self._outputs)
            raise RunnerError(f"no output works any more ({names}): {self._last_sink_error}")
        now = time.perf_counter()
        m = self.metrics
        m.frames_out += 1
        m.latencies.append(now - frame.t_capture)
        if m.t_first_out is None:
            m.t_first_out = now
        m.t_last_out = now

    _last_sink_error = ""

    def _sink_failed(self, out: _Output, error: Exception) -> None:
        self.metrics.sink_errors += 1
        self._last_sink_error = f"{out.sink.name}: {error}"
        first = not out.failed
        out.failed = True
        out.opened = False
        try:
            out.sink.close()
        except Exception as e:
            log.debug("closing the failed output %s: %s", out.sink.name, e)
        if out.reopenable:
            out.retry_at = time.monotonic() + out.backoff
            wait = out.backoff
            out.backoff = min(out.backoff * 2, SINK_BACKOFF[1])
        if first:
            out.failed_since = time.monotonic()
            others = len(self._outputs) > 1
            tail = (f"retrying in {wait:g} s" if out.reopenable else "it is switched off")
            tail += "; the other outputs go on" if others else ""
            self._event("sink-failed", f"output {out.sink.name} failed: {error}; {tail}", component=out.sink.name)
        else:
            log.debug("output %s failed again: %s", out.sink.name, error)

    def _reopen(self, out: _Output) -> bool:
        try:
            out.sink.open(self._out_size, self._out_fps)
        except Exception as e:
            self._sink_failed(out, e)
            return False
        out.opened = True
        out.failed = False
        out.backoff = SINK_BACKOFF[0]
        self._event("sink-recovered", f"output {out.sink.name} works again after "
                    f"{time.monotonic() - out.failed_since:.1f} s", "info", out.sink.name)
        return True


#: The frame size a backend that resizes on the device is warmed up at when the stream's size is
#: not known yet: the usual webcam and virtual-camera size, so the first real batch finds its
#: resize steps captured (or compiled) already.
RESIZING_WARMUP_SIZE = (1280, 720)


def start_backend(style: Style, batch_size: int | None = None, *,
                  on_event: Callable[[RunnerEvent], None] | None = None,
                  warmup_size: tuple[int, int] | None = (64, 64),
                  output_size: tuple[int, int] | None = None,
                  factory: Callable[..., Backend] | None = None, **options) -> Backend:
    """Create the backend ``style`` needs and run one warm-up batch; on out-of-memory, retry
    with half the batch size, down to 1, saying so each time.

    Engines allocate their per-batch buffers (and capture CUDA graphs) at creation or on their
    first batch, so that is where a batch too big for the device fails: better at start, with a
    smaller batch, than as failed frames. ``batch_size`` None is the backend's default; when that
    runs out of memory before the backend can tell its size, 4 (the diffusion backend's GPU
    default) is assumed. Raises :class:`BackendError` when even batch 1 does not fit or the
    warm-up batch fails; errors creating the backend (a missing bundle...) pass as they are.
    ``factory(style, **options)`` builds the backend (default
    :func:`~.stylize.base.create_backend`); ``batch_size`` reaches it as an option. A backend
    that ``resizes`` is warmed up at the stream's ``output_size`` (else
    :data:`RESIZING_WARMUP_SIZE`) in and out, the sizes its first real batch will most likely
    have, so that batch costs no second capture or compile.
    """
    factory = factory or _base.create_backend
    attempt = batch_size
    while True:
        backend = None
        try:
            opts = dict(options)
            if attempt is not None:
                opts["batch_size"] = attempt
            backend = factory(style, **opts)
            if warmup_size is not None:
                w, h = warmup_size
                if getattr(backend, "resizes", False):
                    w, h = output_size or RESIZING_WARMUP_SIZE
                    backend.set_output_size((w, h))
                grey = np.full((h, w, 3), 128, np.uint8)
                backend.process([grey] * max(1, backend.batch_size))
                if getattr(backend, "resizes", False):
                    # Its steps stay captured at that size; the runner (or a caller that uses
                    # process) says the real output size before the first real batch.
                    backend.set_output_size(None)
                # The grey frames are not the stream's past: a steadied or feedback style must
                # not blend its first real frames with them.
                backend.reset_temporal()
            return backend
        except Exception as e:
            if backend is not None:
                try:
                    backend.close()
                except Exception:
                    log.debug("closing a backend that failed to start failed too", exc_info=True)
            if not is_out_of_memory(e):
                if backend is None or isinstance(e, BackendError):
                    raise
                raise BackendError(f"the {style.backend} stylizer fails on a test frame ({type(e).__name__}: "
                                   f"{e}); pick another style") from e
            current = attempt or getattr(backend, "batch_size", None) or 4
            if current <= 1:
                raise BackendError(f"out of memory starting the {style.backend} stylizer even with batch 1 "
                                   f"({e}); use a smaller --size or bundle, close other programs using the "
                                   "GPU, or pick a classic style") from e
            attempt = current // 2
            event = RunnerEvent("batch-reduced", f"out of memory starting the {style.backend} stylizer with "
                                f"batch {current}; retrying with batch {attempt}", "warning", style.backend)
            log.warning("%s", event.message)
            if on_event is not None:
                on_event(event)


def start_backend_compiled(style: Style, batch_size: int | None = None, *,
                           on_uncompiled: Callable[[BackendError], None], **options) -> Backend:
    """:func:`start_backend`; where ``options`` ask for compile mode (``engine={"mode":
    "compile"}``) and that start fails, the same style again without it, after telling
    ``on_uncompiled`` why. Compiling fails where the style itself would run (no C compiler
    for Triton on the machine, ...); a style that fails both ways raises the second error."""
    engine = options.get("engine") or {}
    if engine.get("mode") == "compile":
        try:
            return start_backend(style, batch_size, **options)
        except BackendError as e:
            on_uncompiled(e)
        options = {**options, "engine": {k: v for k, v in engine.items() if k != "mode"} or None}
    return start_backend(style, batch_size, **options)

