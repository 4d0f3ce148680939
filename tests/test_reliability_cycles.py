"""Start and stop, again and again: 100 runs of the runner (with a video file, a virtual camera
and a discard output), 10 with an MJPEG viewer attached, and 100 starts and quits of the tray's
stream worker. Each stop must end within 2 s, and afterwards no thread, file handle or Qt timer
may be left over (threads and fds counted through /proc/self). The counts are taken after one
first cycle: libraries set up process-wide things once (Qt's event dispatcher opens an eventfd
for good on the first QThread) and that is not growth."""

from __future__ import annotations

import gc
import statistics
import time

import cv2
import numpy as np
import pytest

from stylecam.core.runner import Runner
from stylecam.core.sinks import FileSink, MjpegSink, NullSink, VirtualCameraSink
from stylecam.core.sources import PatternSource
from stylecam.core.styles import load_styles
from stylecam.core.stylize.base import create_backend

from reliability_helpers import (FLAKY_BACKEND, Background, WorkerProbe, figures, flaky_camera,  # noqa: F401
                                 open_fds, os_threads, python_threads, wait_until)

STYLES, _ = load_styles()


class Baseline:
    """Threads and file descriptors before the cycles, compared after."""

    def __init__(self):
        gc.collect()
        self.threads = os_threads()
        self.python = python_threads()
        self.fds = open_fds()

    def check(self, label: str) -> None:
        # Finished threads take a moment to leave /proc; anything still there after 2 s is a leak.
        settled = wait_until(lambda: gc.collect() >= 0 and os_threads() <= self.threads
                             and python_threads() == self.python, 2.0, step=0.05)
        assert settled, (f"{label}: {os_threads() - self.threads} more threads than before; "
                         f"python threads {python_threads()} (before {self.python})")
        fds = open_fds()
        extra = {fd: target for fd, target in fds.items() if fd not in self.fds}
        assert not extra, f"{label}: file descriptors left open: {extra}"


def _warm(backend):
    # The classic backend starts its worker threads at its first multi-frame batch; whether a run
    # gets one depends on timing, so start them before the baseline is counted.
    backend.process([np.zeros((48, 64, 3), np.uint8)] * backend.batch_size)
    return backend


def test_a_hundred_runner_starts_and_stops_leave_nothing_behind(flaky_camera, tmp_path, figures):
    backend = _warm(create_backend(STYLES["toon"]))  # kept across runs, as the tray keeps its backend
    stops = []
    for i in range(101):
        if i == 1:
            base = Baseline()
        flaky_camera.instances.clear()
        null = NullSink()
        sinks = [null, FileSink(str(tmp_path / f"run{i % 3}.mp4"), overwrite=True),
                 VirtualCameraSink((64, 48), fps=60, backend=FLAKY_BACKEND)]
        runner = Runner(PatternSource((64, 48), fps=120), backend, sinks)
        with Background(runner) as bg:
            assert wait_until(lambda: null.count >= 2, 3), f"run {i} produced no frames"
            stops.append(bg.stop())
        assert not bg.thread.is_alive() and bg.error is None, (i, bg.error)
    base.check("runner")
    backend.close()
    assert max(stops) < 2.0, max(stops)
    assert cv2.VideoCapture(str(tmp_path / "run0.mp4")).isOpened()  # the last file was finalised
    figures.update(cycles=100, stop_max_s=round(max(stops), 3), stop_median_s=round(statistics.median(stops), 3))


def test_ten_runs_with_an_mjpeg_viewer_attached_leave_nothing_behind(figures):
    backend = _warm(create_backend(STYLES["toon"]))
    stops = []
    for i in range(11):
        if i == 1:
            base = Baseline()
        mjpeg = MjpegSink(0, send_timeout=1.0)
        mjpeg.start()
        runner = Runner(PatternSource((64, 48), fps=60), backend, [mjpeg])
        with Background(runner) as bg:
            viewer = cv2.VideoCapture(mjpeg.url)
            ok, _ = viewer.read()
            assert ok, f"run {i}: the viewer got no frame"
            stops.append(bg.stop())  # with the viewer still connected
            viewer.release()
        assert not bg.thread.is_alive() and bg.error is None
    base.check("mjpeg")
    backend.close()
    assert max(stops) < 2.0, max(stops)
    figures.update(cycles=10, stop_max_s=round(max(stops), 3))


@pytest.fixture
def qt_timers(monkeypatch):
    """Every QTimer started while the test runs (the worker must leave none active)."""
    pytest.importorskip("PySide6")
    import weakref

    from PySide6.QtCore import QTimer

    started = []
    original = QTimer.start

    def start(self, *args):
        started.append(weakref.ref(self))
        return original(self, *args)

    monkeypatch.setattr(QTimer, "start", start)
    return started


def test_a_hundred_worker_starts_and_quits_leave_nothing_behind(flaky_camera, qt_timers, figures):
    from stylecam.desktop.worker import StreamConfig

    config = StreamConfig(source="pattern", style=STYLES["toon"], size=(64, 48), fps=60.0)
    quits = []
    for i in range(101):
        if i == 1:
            base = Baseline()
        flaky_camera.instances.clear()
        probe = WorkerProbe(config, STYLES["oil"])
        if i % 10 == 0:  # every tenth run with the virtual camera on (its own sender thread)
            probe.worker.set_output("virtual_camera", f"virtualcam:64x48@30,backend={FLAKY_BACKEND}")
        with probe:
            assert probe.wait_frames(2), f"worker run {i}: no frames ({probe.states}, {probe.notes})"
            quits.append(probe.stop())
        assert probe.states[-1] == "stopped" and probe.notes == [], (probe.states, probe.notes)
        if i % 10 == 0:
            assert flaky_camera.instances and flaky_camera.instances[-1].closed
        del probe
    base.check("worker")
    active = [ref() for ref in qt_timers if ref() is not None and ref().isActive()]
    assert not active, f"{len(active)} QTimer(s) still active"
    assert max(quits) < 2.0, max(quits)
    figures.update(cycles=100, quit_max_s=round(max(quits), 3), quit_median_s=round(statistics.median(quits), 3))
