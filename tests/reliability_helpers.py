"""Shared parts of the reliability suite (tests/test_reliability_*.py): recording sinks, a
pyvirtualcam backend that can be made busy, event logs, waits and resource counts.

Figures the tests measure (recovery times, frames lost) go to ``figures``; with
``STYLECAM_FIGURES=path.json`` set they are written there at the end of the session, which is
where the numbers in docs/reliability.md come from.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import numpy as np
import pytest
import pyvirtualcam

from stylecam.core.runner import Runner, RunnerEvent
from stylecam.core.sinks import Sink
from stylecam.core.stylize.base import Backend

FLAKY_BACKEND = "stylecam-flaky"


def wait_until(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class Recorder(Sink):
    """Keeps every frame it gets with the monotonic time it arrived (thread-safe)."""

    name = "recorder"

    def __init__(self, keep_images: bool = True):
        self.keep_images = keep_images
        self.times: list[float] = []
        self.indices: list[int] = []
        self.images: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.closed = False

    def write(self, frame):
        with self.lock:
            self.times.append(time.monotonic())
            self.indices.append(frame.index)
            if self.keep_images:
                self.images.append(frame.image.copy())

    def close(self):
        self.closed = True

    @property
    def count(self) -> int:
        return len(self.times)

    def count_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(t0 <= t < t1 for t in self.times)

    def max_gap(self, t0: float = 0.0, t1: float = float("inf")) -> float:
        """The longest time between two frames that arrived in [t0, t1]."""
        with self.lock:
            times = [t for t in self.times if t0 <= t <= t1]
        return float(np.diff(times).max()) if len(times) > 1 else float("inf")


class Identity(Backend):
    name = "identity"

    def __init__(self, batch_size: int = 1):
        self.batch_size = batch_size

    def set_style(self, style):
        pass

    def process(self, images):
        return list(images)


class EventLog:
    """An ``on_event`` callback that keeps the events with the monotonic time they came."""

    def __init__(self):
        self.events: list[RunnerEvent] = []

    def __call__(self, event: RunnerEvent):
        self.events.append(event)

    def of(self, kind: str) -> list[RunnerEvent]:
        return [e for e in self.events if e.kind == kind]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def wait(self, kind: str, timeout: float, after: int = 0) -> RunnerEvent | None:
        """The first event of ``kind`` beyond the first ``after`` of that kind."""
        wait_until(lambda: len(self.of(kind)) > after, timeout)
        found = self.of(kind)
        return found[after] if len(found) > after else None


class Background:
    """Runs ``runner.run()`` in a thread; ``stop()`` returns how long the run took to end."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-runner", daemon=True)

    def _run(self):
        try:
            self.summary = self.runner.run()
        except BaseException as e:
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        self.runner.stop()
        self.thread.join(timeout)
        return time.monotonic() - t0

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


# ---- a pyvirtualcam backend that another app can "take" -----------------------------------


class FlakyCamera:
    """A pyvirtualcam backend (pyvirtualcam/camera.py's interface). While ``taken`` is set, as
    when another program holds the device, opening raises and sending raises."""

    instances: list["FlakyCamera"] = []
    taken = False

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        if FlakyCamera.taken:
            raise RuntimeError("device is busy (another program is using it)")
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = fourcc
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False
        FlakyCamera.instances.append(self)

    def send(self, frame):
        if FlakyCamera.taken:
            raise RuntimeError("device is busy (another program took it)")
        self.times.append(time.monotonic())
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self):
        self.closed = True

    def device(self):
        return "flaky0"

    def native_fourcc(self):
        return self.fourcc


RECORDING_BACKEND = "stylecam-test"


class RecordingCamera:
    """A pyvirtualcam backend (the interface of pyvirtualcam/camera.py ``Backend``) that keeps
    what it is sent, with the monotonic time of each send."""

    instances: list["RecordingCamera"] = []
    fail_after: int | None = None

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        if device == "busy":
            raise RuntimeError("device is busy")
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "recording0"
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False
        RecordingCamera.instances.append(self)

    def send(self, frame):
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise RuntimeError("device unplugged")
        assert frame.ndim == 1 and frame.flags.c_contiguous  # the contract pyvirtualcam gives backends
        self.times.append(time.monotonic())
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())
        self.last_sent = frame  # as the pacer handed it over (no copy), to see whose pixels they are

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture
def recording_backend():
    """``RecordingCamera`` registered with pyvirtualcam, as the backend ``RECORDING_BACKEND``;
    where a sink names no backend pyvirtualcam tries it after the machine's own (which fail
    where there is no driver)."""
    RecordingCamera.instances = []
    RecordingCamera.fail_after = None
    with _registered(RECORDING_BACKEND, RecordingCamera):
        yield RecordingCamera


@contextlib.contextmanager
def _registered(name: str, camera: type):
    pyvirtualcam.register_backend(name, camera)
    try:
        yield
    finally:
        # Other tests must see the machine's real backends only.
        del pyvirtualcam.camera.BACKENDS[name]


def real_virtualcam_works() -> bool:
    """Whether this machine has a virtual-camera driver pyvirtualcam can open (CI has none)."""
    try:
        pyvirtualcam.Camera(64, 48, 30).close()
        return True
    except Exception:
        return False


@pytest.fixture
def flaky_camera():
    FlakyCamera.instances = []
    FlakyCamera.taken = False
    try:
        with _registered(FLAKY_BACKEND, FlakyCamera):
            yield FlakyCamera
    finally:
        FlakyCamera.taken = False


# ---- resources ---------------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point to."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, closed again
            pass
    return out


def os_threads() -> int:
    """Threads of this process as the kernel counts them (QThreads and native threads too)."""
    return len(os.listdir("/proc/self/task"))


def python_threads() -> list[str]:
    # QThreads that ran Python code leave _DummyThread entries behind for good; they are not
    # threads any more (os_threads counts the real ones).
    return sorted(t.name for t in threading.enumerate()
                  if t.is_alive() and not isinstance(t, threading._DummyThread))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- measured figures for the doc ------------------------------------------------------------

_FIGURES: dict[str, dict] = {}


@pytest.fixture
def figures(request):
    """A dict for the test's measured numbers, saved under the test's name."""
    entry: dict = {}
    _FIGURES[request.node.name] = entry
    yield entry
    path = os.environ.get("STYLECAM_FIGURES")
    if path:
        with open(path, "w") as f:
            json.dump(_FIGURES, f, indent=2, sort_keys=True)


# ---- the tray's stream worker, without a Qt event loop -------------------------------------------


class WorkerProbe:
    """Drives a :class:`~stylecam.desktop.worker.StreamWorker` with no Qt event loop: its signals
    are taken directly in the worker's thread (``DirectConnection``), as plain lists."""

    def __init__(self, config, fallback):
        import collections

        from PySide6.QtCore import Qt

        from stylecam.desktop.worker import StreamWorker

        self.worker = StreamWorker(config, fallback)
        self.notes: list[tuple[str, str, str]] = []
        self.states: list[str] = []
        self.fallbacks: list[tuple[str, str]] = []
        self.pairs: collections.deque = collections.deque(maxlen=500)
        self.frames = 0
        direct = Qt.ConnectionType.DirectConnection
        w = self.worker
        w.notify.connect(lambda *n: self.notes.append(n), direct)
        w.state_changed.connect(self.states.append, direct)
        w.frame_ready.connect(self._take, direct)
        w.source_fallback.connect(lambda spec: self.fallbacks.append(("source", spec)), direct)
        w.style_fallback.connect(lambda name: self.fallbacks.append(("style", name)), direct)

    def _take(self):
        pair = self.worker.take_frame()
        if pair is not None:
            self.pairs.append(pair)
            self.frames += 1

    def start(self) -> "WorkerProbe":
        self.worker.start()
        return self

    def wait_frames(self, n: int, timeout: float = 5.0) -> bool:
        target = self.frames + n
        return wait_until(lambda: self.frames >= target, timeout)

    def stop(self) -> float:
        """Ask the worker to quit; returns the seconds until its thread ended (inf if it did not)."""
        t0 = time.monotonic()
        self.worker.stop()
        ended = self.worker.wait(2000)
        return time.monotonic() - t0 if ended else float("inf")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.worker.isRunning():
            self.stop()


# ---- one tiny diffusion bundle for the whole session ---------------------------------------------


@pytest.fixture
def tiny_bundle(tmp_path_factory):
    """A tiny random-weight sd-turbo bundle (what ``stylecam models tiny`` writes), written once
    per session and shared by every reliability module (writing one takes seconds)."""
    from stylecam.core.stylize import bundle as B

    folder = tmp_path_factory.getbasetemp() / "reliability-tiny-sd-turbo"
    if not folder.is_dir():
        partial = tmp_path_factory.mktemp("tiny-bundle-partial") / "sd-turbo"
        B.write_tiny_bundle("sd-turbo", partial)
        os.replace(partial, folder)
    return folder
