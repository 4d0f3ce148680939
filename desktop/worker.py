"""The stream worker: a QThread that owns the runner and the stylizer backend.

Everything that touches the stylizer happens in this thread: the backend is created in
:meth:`StreamWorker.run` (a diffusion backend makes its CUDA device context and streams there,
so they belong to this thread for the app's whole life), styles are applied between batches by
the runner, and the backend is closed here at the end. The UI thread only *asks*: every public
method sets a request under a lock and returns at once.

A source switch or a change of size/rate/mode restarts the runner but keeps the backend (a
diffusion model takes seconds to load). Frames reach the UI through a one-slot hand-off: the
newest frame replaces an unread one, and ``frame_ready`` is emitted only when the slot was empty,
so a slow UI never builds a queue of stale frames. Failures become ``notify`` signals: an
output that cannot open is dropped while the stream goes on; a source that fails gives way to
the last source that worked; a backend that fails gives way to the classic fallback style.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QThread, Signal

from stylecam.core.frames import Frame
from stylecam.core.realtime import RealtimeSource
from stylecam.core.runner import Runner, start_backend_compiled
from stylecam.core.sinks import Sink, open_sink
from stylecam.core.sources import Source, open_source
from stylecam.core.styles import Style
from stylecam.core.stylize.base import Backend, BackendWrapper, create_backend
from stylecam.core.stylize.strength import StrengthBackend

from .fixes import describe_failure
from .qtcompat import emit

log = logging.getLogger(__name__)

#: How often statistics go to the UI (a summary sorts a few thousand latencies).
STATS_INTERVAL = 0.25
#: The span, in seconds, over which the UI's fps and latency are measured.
RECENT_WINDOW = 2.0

#: Runner events worth a notification, and their titles. Output events are left out: the
#: runner's only sink is the OutputHub, which handles its outputs' failures itself.
RUNNER_EVENT_TITLES = {
    "backend-failed": "The stylizer failed",
    "backend-recovered": "The stylizer works again",
    "style-failed": "Style not applied",
    "source-stalled": "No frames from the source",
    "source-resumed": "The source is back",
    "source-lost": "Source lost",
    "source-back": "The source is back",
    "capture-stuck": "The source does not answer",
    "batch-reduced": "Smaller batches",
    "remote-lost": "The remote GPU is unreachable",
    "remote-back": "The remote GPU is back",
    "remote-error": "The remote GPU",
}


@dataclass(frozen=True)
class StreamConfig:
    """What the worker streams. ``batch_size`` None means the backend's own batch size."""

    source: str
    style: Style
    size: tuple[int, int] | None = (1280, 720)
    fps: float | None = 30.0
    mirror: bool = False
    batch_size: int | None = 1
    device: str = "auto"
    #: Diffusion model bundle (folder or hub id); None: the backend's default.
    bundle: str | None = None
    #: Diffusion styles compiled (``torch.compile`` + CUDA graphs) instead of CUDA graphs alone.
    compiled: bool = False
    #: Paint on this `stylecam serve` (any style), with this token file; None: here.
    remote: str | None = None
    remote_token_file: str | None = None

    def backend_key(self) -> tuple:
        """What a backend is built from: a change of any of these needs a new backend."""
        if self.remote:
            return ("remote", self.remote, self.remote_token_file)
        if self.style.backend == "diffusion":
            return (self.style.backend, self.device, self.bundle, self.batch_size, self.compiled)
        return (self.style.backend,)


@dataclass
class FramePair:
    """One output frame with the input it was made from, for the preview and for tests.

    ``input`` is the frame as the stylizer got it (the output size for the classic backend, the
    source's own size for one that resizes on the GPU), ``style`` the
    name of the style that painted it, ``paused`` True when it passed through unstylized.
    """

    input: np.ndarray
    output: np.ndarray
    index: int
    t_capture: float
    t_output: float
    style: str
    paused: bool


class BackendFailure(RuntimeError):
    """The stylizer raised while painting; the worker falls back to the classic style."""


class TrackingBackend(BackendWrapper):
    """The worker's handle on the real backend: the style and key it was built for, and its
    failures turned into :class:`BackendFailure` so the worker can fall back to another style.

    Transparent for everything else: ``submit``/``collect``/``max_inflight`` (the diffusion
    engine keeps two batches in flight on CUDA), ``resizes``/``set_output_size`` (it resizes on
    the GPU) pass straight through, so the tray runs exactly the path ``stylecam run`` and the
    benchmark run. What the preview shows beside each output (its input, the style that made
    it) travels on the :class:`~stylecam.core.frames.Frame` the runner emits.
    """

    def __init__(self, inner: Backend, style: Style, key: tuple = ()):
        super().__init__(inner)
        self.style = style
        self.key = key

    @property
    def kind(self) -> str:
        return self.style.backend

    def set_style(self, style: Style) -> None:
        self.inner.set_style(style)
        self.style = style

    def submit(self, images):
        with self._failures():
            return self.inner.submit(images)

    def collect(self, ticket):
        with self._failures():
            return self.inner.collect(ticket)

    @contextlib.contextmanager
    def _failures(self):
        try:
            yield
        except Exception as e:
            raise BackendFailure(f"the {self.style.backend} style {self.style.name!r} failed: {e}") from e


def _round_trip_ms(backend) -> float | None:
    # The remote backend sits under the worker's wrappers (tracking, strength).
    for _ in range(4):
        if backend is None:
            return None
        rt = getattr(backend, "round_trip_ms", None)
        if rt is not None:
            return rt
        backend = getattr(backend, "inner", None)
    return None


class AppSource(RealtimeSource):
    """What the app streams from: another source, flipped left-right when ``mirror`` is set (the
    flag may change live), and played in real time.

    A file source is read as fast as it is consumed (right for converting a clip, wrong for a
    live camera stand-in: the demo would play fast-forward), so a non-live source is paced to its
    own frame rate (core's :class:`~stylecam.core.realtime.RealtimeSource`, as the CLI paces a
    file for a live sink) and the runner treats the result as live.
    """

    def __init__(self, inner: Source, mirror: bool = False, rate: float | None = None):
        super().__init__(inner, rate=rate)  # the Settings frame rate, where below the clip's own
        self.mirror = mirror

    def read(self):
        img = super().read()
        if img is not None and self.mirror:
            img = cv2.flip(img, 1)
        return img


#: Outputs that are opened once: a recording is not reopened after it closes (that would
#: overwrite its file).
ONCE_OUTPUTS = ("record",)
#: Outputs whose file the user chose in a save dialog, which asked before replacing a file that
#: exists: opened with overwrite (the command line refuses one unless told).
CONFIRMED_OUTPUTS = ("record",)


class OutputHub(Sink):
    """The one sink the runner sees: feeds the preview slot and the optional outputs.

    Outputs (virtual camera, MJPEG) are switched on and off from the UI thread; the change is
    applied in the runner's thread at the next frame. An output that fails to open or write is
    reported once and switched off; the stream and the other outputs go on. Outputs stay open
    across runner restarts (a source switch must not make the virtual camera vanish from a
    meeting); a recording is finished when the stream's size or rate changes.
    """

    name = "hub"

    def __init__(self, worker: "StreamWorker"):
        self._worker = worker
        self._lock = threading.Lock()
        self._wanted: dict[str, str] = {}
        self._open: dict[str, Sink] = {}
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self.backend: TrackingBackend | None = None
        self.runner: Runner | None = None
        self._last_stats = 0.0
        self._recent: collections.deque = collections.deque(maxlen=512)
        #: name -> how many times it was turned on: each turn-on is a request of its own (a
        #: recording started again to the same file is a new recording).
        self._requests: dict[str, int] = {}
        #: (name, request) of once-only outputs (recordings) that were opened: never reopened.
        self._written: set[tuple[str, int]] = set()

    # -- UI thread ----------------------------------------------------------------------------

    def want(self, name: str, spec: str | None) -> None:
        with self._lock:
            if spec is None:
                self._wanted.pop(name, None)
            else:
                self._wanted[name] = spec
                self._requests[name] = self._requests.get(name, 0) + 1

    def wanted(self) -> dict[str, str]:
        with self._lock:
            return dict(self._wanted)

    def sink(self, name: str) -> Sink | None:
        """The open output called ``name`` (e.g. to read the MJPEG server's URL), if any."""
        return self._open.get(name)

    # -- runner thread --------------------------------------------------------------------------

    def open(self, size, fps) -> None:
        if (size, fps) != (self._size, self._fps):
            # Only a recording is made at the stream's size and rate: it is finished. The virtual
            # camera and the MJPEG server keep their own (a new size or rate must not cut the
            # meeting or the viewers off); the virtual camera's spec says its size.
            for name in [n for n in self._open if n in ONCE_OUTPUTS]:
                self._close_one(name)
        self._size, self._fps = tuple(size), fps

    def _wanted_now(self) -> tuple[dict[str, str], dict[str, int]]:
        with self._lock:
            return dict(self._wanted), dict(self._requests)

    def _reconcile(self) -> None:
        wanted, requests = self._wanted_now()  # one look per frame, for the closing and the opening
        self.close_unwanted(wanted, requests)
        for name, spec in wanted.items():
            request = requests.get(name, 0)
            if name in self._open:
                sink = self._open[name]
                if sink._stylecam_request != request:
                    # Turned off and on again before a frame came to apply the off: it stayed
                    # open (no blink for the meeting or the viewers), and is on again.
                    sink._stylecam_request = request
                    emit(self._worker.output_changed, name, True)
                continue
            if name in ONCE_OUTPUTS and (name, request) in self._written:
                # A recording closed by a size or rate change is finished: reopening its file
                # would write over what was recorded.
                with self._lock:
                    if self._wanted.get(name) == spec:
                        del self._wanted[name]
                emit(self._worker.output_changed, name, False)
                continue
            try:
                sink = open_sink(spec, fps=self._fps, overwrite=name in CONFIRMED_OUTPUTS)
                sink.open(self._size, self._fps)
            except Exception as e:
                self._fail(name, spec, e, "open")
                continue
            sink._stylecam_spec, sink._stylecam_request = spec, request
            self._open[name] = sink
            if name in ONCE_OUTPUTS:
                self._written.add((name, request))
            log.info("output %s (%s) open at %dx%d, %g fps", name, spec, *self._size, self._fps)
            emit(self._worker.output_changed, name, True)

    def _fail(self, name: str, spec: str, error: BaseException, what: str) -> None:
        log.warning("output %s (%s) failed to %s: %s", name, spec, what, error)
        try:
            error.stylecam_stage = what  # the UI words a file that never opened differently
        except AttributeError:  # an exception type without a __dict__
            pass
        with self._lock:
            if self._wanted.get(name) == spec:
                del self._wanted[name]
        emit(self._worker.output_changed, name, False)
        # The UI turns it into its status line and, once per problem, a notification.
        emit(self._worker.output_failed, name, error)

    def _close_one(self, name: str) -> None:
        # Listed in ``_open`` until closed: ``sink(name)`` is None only once the output is done
        # (a recording's file is whole and playable then; the UI and the tests wait on that).
        sink = self._open[name]
        try:
            sink.close()
        except Exception as e:  # a failing close must not stop the stream
            log.warning("closing output %s failed: %s", name, e)
            emit(self._worker.output_failed, name, e)
            return
        finally:
            del self._open[name]
        log.info("output %s closed", name)
        emit(self._worker.output_closed, name, getattr(sink, "count", None))

    def close_unwanted(self, wanted: dict[str, str] | None = None, requests: dict[str, int] | None = None) -> None:
        """Close the open outputs that were turned off, and recordings started anew (runner
        thread, or no runner at all)."""
        if wanted is None or requests is None:
            wanted, requests = self._wanted_now()
        for name in list(self._open):
            sink = self._open[name]
            again = name in ONCE_OUTPUTS and sink._stylecam_request != requests.get(name, 0)
            if sink._stylecam_spec != wanted.get(name) or again:
                self._close_one(name)

    def _close_outputs(self) -> None:
        for name in list(self._open):
            self._close_one(name)

    def write(self, frame: Frame) -> None:
        self._reconcile()
        for name, sink in list(self._open.items()):
            try:
                sink.write(frame)
            except Exception as e:
                spec = getattr(sink, "_stylecam_spec", name)
                self._open.pop(name, None)
                try:
                    sink.close()
                except Exception:
                    pass
                self._fail(name, spec, e, "write")
        self._publish(frame)

    def _publish(self, frame: Frame) -> None:
        # The runner says what made each frame: its input (None when it passed through unstyled)
        # and the style, fixed when its batch was submitted (two may be in flight).
        source = frame.source
        pair = FramePair(input=frame.image if source is None else source, output=frame.image,
                         index=frame.index, t_capture=frame.t_capture, t_output=time.perf_counter(),
                         style=frame.style, paused=source is None)
        self._worker._offer(pair)
        now = pair.t_output
        self._recent.append((now, now - pair.t_capture))
        if now - self._last_stats >= STATS_INTERVAL and self.runner is not None:
            self._last_stats = now
            stats = self.runner.metrics.summary()
            stats.update(style=pair.style, paused=pair.paused, size=list(frame.size), **self._recent_rates(now))
            # A remote stylizer: the painted frames lag by the network round trip, which the
            # runner's latency (capture -> output here) does not see.
            rt = _round_trip_ms(self.backend)
            if rt is not None:
                stats["remote_round_trip_ms"] = rt
            emit(self._worker.stats, stats)

    def _recent_rates(self, now: float) -> dict:
        # The runner's summary covers the whole run; the UI wants what is happening now.
        recent = [(t, lat) for t, lat in self._recent if t >= now - RECENT_WINDOW]
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        return {
            "fps_recent": round((len(recent) - 1) / span, 2) if span > 0 else 0.0,
            "latency_recent_ms": round(float(np.median([lat for _, lat in recent])) * 1000.0, 1) if recent else None,
        }

    def close(self) -> None:
        # The runner closes its sinks at the end of every run; the outputs outlive a restart
        # and are closed by shutdown() when the worker ends.
        pass

    def shutdown(self) -> None:
        self._close_outputs()
        self._size = self._fps = None


class StreamWorker(QThread):
    """Runs the stream in its own thread. Create it, ``configure()``, ``start()``; ``stop()`` ends it."""

    #: A new frame pair waits in the slot; take it with :meth:`take_frame`.
    frame_ready = Signal()
    #: The runner's metrics summary plus ``style``, ``paused`` and ``size``.
    stats = Signal(dict)
    #: title, message, level ("info", "warning", "error"): for a tray notification.
    notify = Signal(str, str, str)
    #: "starting", "running", "paused", "idle", "error", "stopped".
    state_changed = Signal(str)
    #: source spec, style name: a run began with these.
    run_started = Signal(str, str)
    #: The worker replaced the requested style with the fallback (the requested one failed).
    style_fallback = Signal(str)
    #: The worker went back to the last source that worked (the requested one failed).
    source_fallback = Signal(str)
    #: source spec: it failed and there is none to go back to (the stream waits for a change).
    source_failed = Signal(str)
    #: The remote GPU refused (a wrong token...): painting is on this computer until the
    #: settings change.
    remote_refused = Signal()
    #: An output (by name) went on or off (off also after a failure).
    output_changed = Signal(str, bool)
    #: An output (by name) failed to open, write or close; the exception says why.
    output_failed = Signal(str, object)
    #: An output (by name) was closed whole, with the frames it took (None where it does not
    #: count them): a recording's file is finished and playable then.
    output_closed = Signal(str, object)

    def __init__(self, config: StreamConfig, fallback_style: Style, parent=None):
        super().__init__(parent)
        self.setObjectName("stylecam-worker")
        self._config = config
        self.fallback_style = fallback_style
        self._lock = threading.Condition()
        self._quit = False
        self._restart = False
        self._outputs_changed = False
        self._paused = False
        self._runner: Runner | None = None
        self._backend: TrackingBackend | None = None
        #: The thread the current backend was created in (the worker's own: tests check it).
        self.backend_thread: int | None = None
        self._slot: FramePair | None = None
        self._slot_lock = threading.Lock()
        self.hub = OutputHub(self)
        self.state = "idle"
        #: style name -> strength (0..1) of the style over the original; set from the UI thread,
        #: read by the stylizer's wrapper at each batch.
        self.strengths: dict[str, float] = {}

    # -- requests from the UI thread ----------------------------------------------------------

    @property
    def config(self) -> StreamConfig:
        with self._lock:
            return self._config

    def set_style(self, style: Style) -> None:
        """Switch style live; a style of another backend kind restarts with a new backend."""
        with self._lock:
            self._config = dataclasses.replace(self._config, style=style)
            runner, backend = self._runner, self._backend
            if runner is not None and backend is not None and backend.key == self._config.backend_key():
                runner.set_style(style)
            else:
                self._request_restart()

    def set_source(self, spec: str) -> None:
        self.reconfigure(source=spec)

    def reconfigure(self, **changes) -> None:
        """Change any :class:`StreamConfig` field; restarts the runner (not the backend)."""
        with self._lock:
            new = dataclasses.replace(self._config, **changes)
            if new == self._config and self._runner is not None:
                return
            self._config = new
            self._request_restart()

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = bool(paused)
            if self._runner is not None:
                self._runner.set_paused(self._paused)
                self._set_state("paused" if self._paused else "running")

    @property
    def paused(self) -> bool:
        return self._paused

    def set_mirror(self, mirror: bool) -> None:
        with self._lock:
            self._config = dataclasses.replace(self._config, mirror=bool(mirror))
            runner = self._runner
            if runner is not None and isinstance(runner.source, AppSource):
                runner.source.mirror = bool(mirror)

    def set_strength(self, style: str, value: float) -> None:
        """How much of ``style`` is blended over the original (1 = the style alone); live."""
        self.strengths[style] = float(value)

    def set_output(self, name: str, spec: str | None) -> None:
        """Turn an output on (``spec`` is a ``--sink`` spec) or off (None)."""
        self.hub.want(name, spec)
        with self._lock:
            # No runner, no next frame to apply it at (a source that gave up, a failed style):
            # the worker thread closes what was turned off, so a stopped recording is whole now.
            self._outputs_changed = True
            self._lock.notify_all()

    def stop(self) -> None:
        """Ask the worker to end; returns at once (``wait()`` for it)."""
        with self._lock:
            self._quit = True
            if self._runner is not None:
                self._runner.stop()
            self._lock.notify_all()

    def take_frame(self) -> FramePair | None:
        with self._slot_lock:
            pair, self._slot = self._slot, None
            return pair

    def _request_restart(self) -> None:
        # Called with self._lock held.
        self._restart = True
        if self._runner is not None:
            self._runner.stop()
        self._lock.notify_all()

    # -- the worker thread ----------------------------------------------------------------------

    def _offer(self, pair: FramePair) -> None:
        with self._slot_lock:
            was_empty = self._slot is None
            self._slot = pair
        if was_empty:
            emit(self.frame_ready)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            emit(self.state_changed, state)

    def run(self) -> None:
        threading.current_thread().name = "stylecam-worker"  # for the log lines
        try:
            self._serve()
        except Exception as e:  # the last guard: a dead thread must still say why
            log.exception("the stream worker failed")
            emit(self.notify, "stylecam stopped", f"The stream stopped: {e}", "error")
            self._set_state("error")
        finally:
            self.hub.shutdown()
            if self._backend is not None:
                try:
                    self._backend.close()
                except Exception as e:
                    log.warning("closing the %s backend failed: %s", self._backend.name, e)
                self._backend = None
            self._set_state("stopped")

    def _on_runner_event(self, event) -> None:
        # Called in the runner's threads; the signal carries it to the UI thread.
        title = RUNNER_EVENT_TITLES.get(event.kind)
        if title is not None:
            emit(self.notify, title, event.message, event.level)

    def _wait_for_change(self) -> None:
        # Called only while no runner writes to the hub: closing outputs here is safe.
        while True:
            with self._lock:
                while not self._quit and not self._restart and not self._outputs_changed:
                    self._lock.wait()
                if self._quit or self._restart:
                    return
                self._outputs_changed = False
            self.hub.close_unwanted()

    def _serve(self) -> None:
        last_good_source: str | None = None
        while True:
            with self._lock:
                if self._quit:
                    return
                self._restart = False
                cfg = self._config
            self._set_state("starting")
            backend = self._ensure_backend(cfg)
            if backend is None:
                self._set_state("error")
                self._wait_for_change()
                continue
            cfg = self.config  # _ensure_backend may have switched to the fallback style
            try:
                inner = open_source(cfg.source, size=cfg.size, fps=cfg.fps, loop=True)
            except ValueError as e:
                last_good_source = self._source_failed(cfg, e, last_good_source)
                continue
            source = AppSource(inner, cfg.mirror, rate=cfg.fps)
            runner = Runner(source, backend, [self.hub], size=cfg.size, fps=cfg.fps,
                            batch_size=cfg.batch_size, on_event=self._on_runner_event, style=backend.style)
            with self._lock:
                if self._quit or self._restart:
                    continue
                runner.set_paused(self._paused)
                self._runner = runner
            self.hub.backend, self.hub.runner = backend, runner
            emit(self.run_started, cfg.source, cfg.style.name)
            self._set_state("paused" if self._paused else "running")
            log.info("streaming %s through %s (size %s, fps %s, batch %s)", cfg.source, cfg.style.name,
                     cfg.size, cfg.fps, cfg.batch_size)
            error: Exception | None = None
            try:
                log.info("run ended: %s", runner.run())
            except Exception as e:
                error = e
            finally:
                # Before the failure handlers below, which may wait for the user: a finished
                # runner must not take the next style or pause (they restart the stream).
                with self._lock:
                    self._runner = None
            if runner.metrics.frames_in > 0:
                last_good_source = cfg.source
            if isinstance(error, BackendFailure):
                self._backend_failed(cfg, error)
                continue
            if error is not None:
                last_good_source = self._source_failed(cfg, error, last_good_source)
                continue
            with self._lock:
                if self._quit or self._restart:
                    continue
            # The source ended by itself (a file without loop, a source that gave up).
            self._set_state("idle")
            self._wait_for_change()

    def _ensure_backend(self, cfg: StreamConfig) -> TrackingBackend | None:
        current = self._backend
        if current is not None and current.key == cfg.backend_key():
            current.set_style(cfg.style)
            return current
        if current is not None:
            current.close()
            self._backend = None
        try:
            inner = self._create_backend(cfg)
            if cfg.compiled and not self.config.compiled:  # compiling failed: it runs uncompiled
                cfg = dataclasses.replace(cfg, compiled=False)
            self._backend = TrackingBackend(inner, cfg.style, cfg.backend_key())
            self.backend_thread = threading.get_ident()
            return self._backend
        except Exception as e:
            log.exception("cannot start the %s backend for style %s", cfg.style.backend, cfg.style.name)
            if cfg.remote:  # refused (a wrong token...): paint here until the settings change
                emit(self.notify, "Cannot use the remote GPU", f"{e}\nPainting on this computer instead.", "warning")
                with self._lock:
                    self._config = dataclasses.replace(self._config, remote=None)
                emit(self.remote_refused)
                return self._ensure_backend(dataclasses.replace(cfg, remote=None))
            fallback = self.fallback_style
            if cfg.style.backend == fallback.backend:
                emit(self.notify, "Cannot start the stylizer", str(e), "error")
                return None
            emit(self.notify, f"Style {cfg.style.title} is not available",
                             f"{e}\nRunning the {fallback.title} style instead.", "warning")
            self._fall_back_to(fallback, cfg.style)
            return self._ensure_backend(dataclasses.replace(cfg, style=fallback))

    def _fall_back_to(self, fallback: Style, failed: Style) -> None:
        with self._lock:
            if self._config.style != failed:
                return  # the user picked another style meanwhile: that one runs next
            self._config = dataclasses.replace(self._config, style=fallback)
        emit(self.style_fallback, fallback.name)

    def _create_backend(self, cfg: StreamConfig) -> Backend:
        # Every style gets the strength control: its output blended with the original.
        backend = StrengthBackend(self._create_stylizer(cfg), lambda name: self.strengths.get(name, 1.0))
        backend.style_name = cfg.style.name
        return backend

    def _create_stylizer(self, cfg: StreamConfig) -> Backend:
        if cfg.remote:
            # Painted on the GPU machine; while it cannot be reached, the classic style of the
            # same family paints here and a notification says so (remote-lost / remote-back).
            return create_backend(cfg.style, server=cfg.remote, token_file=cfg.remote_token_file or None,
                                  on_event=self._on_runner_event)
        if cfg.style.backend == "diffusion":
            # This is the thread the model, its CUDA context and its side/main streams belong
            # to: the diffusion backend creates them inside start_backend, here, never in the
            # UI thread. Latency mode asks for batches of one, so no frame waits for others.
            # A warm-up batch at start: out of memory there retries with half the batch.
            options = {}
            if cfg.compiled:
                # Compiled on its first start (a minute or two on a GPU, seconds from the disk
                # cache after that): say why the stream takes so long to come.
                options["engine"] = {"mode": "compile"}
                emit(self.notify, "Getting the AI style ready",
                     "Speeding up AI styles: the first start of each takes a minute or two on a GPU, "
                     "later starts a few seconds.", "info")
            return start_backend_compiled(cfg.style, cfg.batch_size, on_event=self._on_runner_event,
                                          output_size=cfg.size, on_uncompiled=lambda e: self._uncompiled(cfg, e),
                                          device=None if cfg.device == "auto" else cfg.device,
                                          bundle=cfg.bundle or None, **options)
        return create_backend(cfg.style)

    def _uncompiled(self, cfg: StreamConfig, error: BaseException) -> None:
        """Compiling the AI style failed (no C compiler for Triton on this machine, ...): it
        runs uncompiled (:func:`~stylecam.core.runner.start_backend_compiled`), and AI speed stays
        off until the setting changes, so no restart or style switch tries again."""
        emit(self.notify, "AI speed is off for now",
             f"Speeding up {cfg.style.title} failed: {error}\nThe style runs without it.", "warning")
        with self._lock:
            self._config = dataclasses.replace(self._config, compiled=False)

    def _backend_failed(self, cfg: StreamConfig, error: BaseException) -> None:
        log.error("%s", error, exc_info=error)
        failed = self._backend.style if self._backend is not None else cfg.style
        fallback = self.fallback_style
        if failed.name == fallback.name:
            emit(self.notify, "The stylizer failed", f"{error}", "error")
            self._set_state("error")
            self._wait_for_change()
            return
        emit(self.notify, "The style failed", f"{error}\nRunning the {fallback.title} style instead.", "warning")
        self._fall_back_to(fallback, failed)

    def _source_failed(self, cfg: StreamConfig, error: BaseException, last_good: str | None) -> str | None:
        log.warning("source %s failed: %s", cfg.source, error)
        title, message = describe_failure("source", error, cfg.source)
        if last_good is not None and last_good != cfg.source:
            message += f"\nBack to the previous source ({last_good})."
            emit(self.notify, title, message, "warning")
            with self._lock:
                reverted = not self._restart and not self._quit
                if reverted:
                    self._config = dataclasses.replace(self._config, source=last_good)
            if reverted:
                emit(self.source_fallback, last_good)
            return last_good
        emit(self.notify, title, message, "error")
        emit(self.source_failed, cfg.source)
        self._set_state("error")
        self._wait_for_change()
        return last_good
