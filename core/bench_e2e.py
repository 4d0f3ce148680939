"""The benchmark's end-to-end rows: the path a user runs, timed beside the engine alone.

``stylecam bench --backend diffusion --e2e`` (or ``STYLECAM_BENCH_E2E=1``) adds, after each engine
row, the same configuration driven the way ``stylecam run`` and the tray drive it: the real
:class:`~.runner.Runner` reading a 1280x720 video file (looped; made once from the bundled clip),
the :class:`~.stylize.diffusion.DiffusionBackend` with the same engine settings (frames go to
the GPU at 1280x720 and come back at 1280x720, resized on the device), and two sinks: a virtual
camera at 1280x720@30 through a pyvirtualcam backend registered here (there is no
v4l2loopback device on the build machines; the registered backend receives exactly what a
driver would) and a null sink.

Each row has the engine row's fields where they apply plus ``path: "e2e"``; fps is the rate
frames reach the sinks; latency is capture (the file frame decoded) to sink, p50/p95; the
host cost is the CPU time of the runner's loop thread and of the capture thread per frame.
Throughput rows read the file as fast as the stylizer takes it (no frame dropped); latency rows
(``live``) read it as a camera that always has a new frame (the newest wins, older ones drop).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

#: The camera and virtual-camera size of the end-to-end rows.
E2E_SIZE = (1280, 720)
#: The pyvirtualcam backend name the rows register.
CAMERA_BACKEND = "stylecam-bench"


class CountingCamera:
    """A pyvirtualcam backend that keeps count of what it is sent (pyvirtualcam's interface)."""

    last: "CountingCamera | None" = None

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fourcc = width, height, fourcc
        self.sent = 0
        CountingCamera.last = self

    def send(self, frame):
        if frame.size != self.width * self.height * 3:
            raise ValueError(f"frame of {frame.size} bytes for a {self.width}x{self.height} RGB camera")
        self.sent += 1

    def close(self):
        pass

    def device(self):
        return "bench0"

    def native_fourcc(self):
        return self.fourcc


@contextlib.contextmanager
def registered_camera():
    """:class:`CountingCamera` registered with pyvirtualcam for the rows, and removed after: a
    virtual camera that is not there must not seem to work afterwards in the same process."""
    import pyvirtualcam

    pyvirtualcam.register_backend(CAMERA_BACKEND, CountingCamera)
    try:
        yield
    finally:
        pyvirtualcam.camera.BACKENDS.pop(CAMERA_BACKEND, None)


def e2e_clip(size=E2E_SIZE, frames: int = 64) -> str:
    """A ``size`` video of the bundled clip's real footage (made once, in the temp folder)."""
    import cv2

    from .bench import sample_frames

    path = os.path.join(tempfile.gettempdir(), f"stylecam-bench-{size[0]}x{size[1]}.mp4")
    if not os.path.exists(path):
        part = path + ".part.mp4"
        writer = cv2.VideoWriter(part, cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
        for img in sample_frames(size, frames):
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(part, path)
    return path


class StopAfter:
    """A sink that stops the run (``stop()``) once ``frames`` frames have reached it."""

    name = "stop-after"

    def __init__(self, frames: int, stop):
        self.frames, self.stop, self.count = frames, stop, 0

    def open(self, size, fps):
        pass

    def write(self, frame):
        self.count += 1
        if self.count == self.frames:
            self.stop()

    def close(self):
        pass


class LiveFile:
    """A looped file read as a camera: live (the runner keeps the newest frame), unpaced."""

    live = True

    def __init__(self, inner):
        self.inner = inner
        self.name = f"live {inner.name}"
        self.fps = None

    def open(self):
        self.inner.open()

    def read(self):
        return self.inner.read()

    def close(self):
        self.inner.close()


def run_e2e(bundle, style, *, batch: int, refresh: int, frames_total: int, mode: str = "graphs",
            live: bool = False, engine: dict | None = None, size=E2E_SIZE, devices=None) -> dict:
    """One end-to-end row (see the module docstring): warm-up run, then ``frames_total`` frames.
    ``devices``: a device list (:mod:`.stylize.devices`) for the backend; the row says it."""
    import torch

    from .runner import Runner
    from .sinks import open_sink
    from .sources import FileSource
    from .stylize.diffusion import DiffusionBackend

    clip = e2e_clip(size)
    w, h = size
    cuda = torch.cuda.is_available() and bundle.device.type == "cuda"
    options = {"refresh": refresh, "mode": mode, **(engine or {})}
    t0 = time.perf_counter()
    backend = DiffusionBackend(bundle, batch_size=batch, engine=options, devices=devices)
    with contextlib.ExitStack() as done:
        done.enter_context(registered_camera())
        done.callback(backend.close)
        backend.set_style(style)

        def run(frames: int):
            source = FileSource(clip, loop=True)
            sinks = [open_sink(f"virtualcam:{w}x{h}@30,backend={CAMERA_BACKEND}"), open_sink("null")]
            # A live source drops most frames (it decodes several times faster than the stylizer),
            # so ``frames`` read would leave a short sample: live rows stop after ``frames``
            # frames have reached the sinks instead.
            runner = Runner(LiveFile(source) if live else source, backend, sinks, size=size,
                            max_frames=None if live else frames, batch_size=batch, style=style)
            if live:
                runner.sinks.append(StopAfter(frames, runner.stop))
            return runner.run()

        # Warm-up: the first batch captures (or compiles) every step, at the stream's sizes.
        run(max(4 * batch, 32))
        if cuda:
            torch.cuda.synchronize()
        setup_s = time.perf_counter() - t0
        summary = run(frames_total)
        report = backend._engine.report.as_dict()
        pacer = getattr(backend._engine, "pacer", None)
        report["pace_ms"] = pacer.as_dict() if pacer is not None else None
        inflight = backend.max_inflight
    keys = ("frames_in", "frames_out", "dropped", "fps_out", "latency_p50_ms", "latency_p95_ms", "batch_p50_ms",
            "passthrough", "cpu_loop_ms_per_frame", "cpu_capture_ms_per_frame")
    row = {k: summary.get(k) for k in keys}
    row["fps"] = row.pop("fps_out")
    return {"path": "e2e", "in_size": list(size), "out_size": list(size), "live_source": live,
            "devices": str(devices) if devices is not None else None, "max_inflight": inflight,
            "sinks": [f"virtualcam {w}x{h}@30 (registered backend)", "null"],
            "virtualcam_sent": CountingCamera.last.sent if CountingCamera.last else None,
            "setup_s": round(setup_s, 2), **report, **row,
            "mem_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def summarize(rows: list[dict]) -> list[str]:
    """One line per e2e row with its engine twin: what the app delivers against the engine."""
    lines = []
    engine = {}
    for r in rows:
        key = (r.get("stack"), r.get("mode"), r.get("batch"), r.get("refresh"))
        if r.get("path") == "e2e":
            twin = engine.get(key)
            ratio = (f"{100.0 * r['fps'] / twin['fps']:.0f} % of the engine's {twin['fps']:.1f}"
                     if twin and twin.get("fps") and r.get("fps") else "no engine row")
            lines.append(f"{r.get('stack')} {r.get('mode')} B={r.get('batch')}: e2e {r.get('fps')} fps, "
                         f"p50 {r.get('latency_p50_ms')} ms, host {r.get('cpu_loop_ms_per_frame')} ms/frame ({ratio})")
        elif "fps" in r:
            engine[key] = r
    return lines


__all__ = ["CAMERA_BACKEND", "CountingCamera", "E2E_SIZE", "LiveFile", "StopAfter", "e2e_clip", "registered_camera",
           "run_e2e",
           "summarize"]
