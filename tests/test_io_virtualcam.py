"""The virtual-camera sink and its pacer, through a backend registered with pyvirtualcam.

v4l2loopback cannot load on the build machines (no kernel modules, no /dev/video*), so these
tests register a recording backend with ``pyvirtualcam.register_backend``: everything above the
driver (pyvirtualcam's Camera with its format and shape checks, the pacer, the sink, the runner)
is the real code. On this machine the real driver path must fail with the fix paragraph.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.util import encode_fourcc

from stylecam.core import doctor
from stylecam.core.frames import Frame
from stylecam.core.pacer import NEUTRAL_RGB, Pacer
from stylecam.core.runner import Runner
from stylecam.core.sinks import Sink, SinkError, VirtualCameraSink, open_sink
from stylecam.core.sources import PatternSource
from stylecam.core.styles import Style
from stylecam.core.stylize.base import Backend

from reliability_helpers import RECORDING_BACKEND as BACKEND
from reliability_helpers import RecordingCamera, real_virtualcam_works, recording_backend  # noqa: F401


class SlowInvert(Backend):
    """A stylizer slower than the camera: inverts each frame after ``delay`` seconds."""

    name = "slow-invert"

    def __init__(self, delay):
        self.delay = delay

    def set_style(self, style):
        pass

    def process(self, images):
        time.sleep(self.delay)
        return [255 - img for img in images]


class ListSink(Sink):
    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame.image.copy())


def _intervals(times):
    return np.diff(np.asarray(times))


def test_slow_stylizer_still_gives_the_camera_its_rate_size_and_content(recording_backend):
    source = PatternSource(size=(80, 60), fps=30, realtime=True)
    backend = SlowInvert(delay=0.12)  # ~8 fps against a 20 fps camera
    cam_sink = VirtualCameraSink((80, 60), fps=20, backend=BACKEND)
    outputs = ListSink()
    summary = Runner(source, backend, [outputs, cam_sink], max_frames=9).run()

    cam = recording_backend.instances[-1]
    assert cam.closed and (cam.width, cam.height, cam.fps) == (80, 60, 20)
    assert cam.fourcc == encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    gaps = _intervals(cam.times)
    duration = cam.times[-1] - cam.times[0]
    # The camera's clock, not the stylizer's: about 20 sends a second throughout.
    assert abs(np.median(gaps) - 0.05) < 0.01, np.median(gaps)
    assert abs(len(cam.times) - 1 - duration * 20) <= 3
    assert gaps.max() < 0.12  # never a hole as long as a stylizer batch
    assert summary["frames_out"] >= 5 and len(cam.frames) > 1.5 * summary["frames_out"]

    # Every frame the camera got is a stylized frame (or the neutral one before the first), in
    # order, each re-sent until the next arrives. All reach the camera (the very last one may
    # be cut by the close that follows it at once).
    made = [img.tobytes() for img in outputs.frames]
    order = []
    for f in cam.frames:
        if (f == NEUTRAL_RGB).all():
            assert not order, "neutral frame after real frames"
            continue
        order.append(made.index(f.tobytes()))
    assert order == sorted(order)
    assert set(range(len(made) - 1)) <= set(order)
    assert max(order.count(i) for i in set(order)) >= 2  # the pacer re-sent while the stylizer worked


def test_neutral_frame_before_the_first_and_newest_frame_wins(recording_backend):
    sink = VirtualCameraSink((32, 24), fps=50, backend=BACKEND)
    sink.start()
    try:
        time.sleep(0.15)
        cam = recording_backend.instances[-1]
        assert len(cam.frames) >= 5
        assert all((f == NEUTRAL_RGB).all() for f in cam.frames)
        # A burst: only the newest matters to a camera. Each frame is a fresh array, as the
        # pipeline makes them (no one writes into a frame's pixels after it is made).
        burst = [np.full((24, 32, 3), value, np.uint8) for value in (10, 20, 30)]
        for value, img in zip((10, 20, 30), burst):
            sink.write(Frame(img, value))
        n = len(cam.frames)
        time.sleep(0.1)
        later = cam.frames[n + 1:]
        assert later and all((f == 30).all() for f in later)
        # Sent from the very array written: no copy per frame on the runner's thread.
        assert np.shares_memory(cam.last_sent, burst[-1])
    finally:
        sink.close()
    assert cam.closed


def test_other_sizes_are_letterboxed_and_mirror_flips(recording_backend):
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :16] = (255, 0, 0)  # left half red, right half blue
    img[:, 16:] = (0, 0, 255)
    for mirror in (False, True):
        sink = VirtualCameraSink((64, 48), fps=30, backend=BACKEND, mirror=mirror)
        sink.open((32, 32), 30)
        sink.write(Frame(img, 0))
        time.sleep(0.1)
        sink.close()
        out = recording_backend.instances[-1].frames[-1]
        assert out.shape == (48, 64, 3)
        # 32x32 scaled to 48x48 and centred: 8 black columns each side.
        assert (out[:, :8] == 0).all() and (out[:, -8:] == 0).all()
        left, right = out[24, 12], out[24, 51]
        red, blue = [255, 0, 0], [0, 0, 255]
        assert (left.tolist(), right.tolist()) == ((blue, red) if mirror else (red, blue))


def test_a_camera_that_fails_mid_stream_is_reported_on_the_next_write(recording_backend):
    RecordingCamera.fail_after = 3
    sink = VirtualCameraSink((32, 24), fps=60, backend=BACKEND)
    sink.open((32, 24), 30)
    time.sleep(0.2)
    with pytest.raises(SinkError, match="stopped accepting frames: device unplugged"):
        sink.write(Frame(np.zeros((24, 32, 3), np.uint8), 0))
    sink.close()


def test_pacer_does_not_burst_after_a_stall():
    times = []

    def send(image):
        times.append(time.monotonic())
        if len(times) == 3:
            time.sleep(0.25)  # e.g. the driver blocked for a moment

    pacer = Pacer(send, fps=40, first=np.zeros((2, 2, 3), np.uint8)).start()
    time.sleep(0.6)
    pacer.stop()
    # After the stall the schedule restarts from now: no run of back-to-back catch-up sends
    # (catching up would put the ~10 missed ticks in the first few milliseconds).
    resumed = times[3]
    assert resumed - times[2] >= 0.25
    assert sum(resumed <= t < resumed + 0.1 for t in times) <= 6, _intervals(times)
    assert pacer.skipped >= 8 and pacer.error is None


def test_spec_grammar(recording_backend):
    sink = open_sink(f"virtualcam:640x360@15,mirror,backend={BACKEND},device=cam7")
    assert (sink.size, sink.fps, sink.mirror, sink.backend, sink.device) == ((640, 360), 15.0, True, BACKEND, "cam7")
    assert open_sink(f"virtualcam:backend={BACKEND}", fps=24).fps == 24.0  # --fps when the spec has none
    assert open_sink(f"virtualcam:@25,backend={BACKEND}").size == (1280, 720)
    with pytest.raises(ValueError, match="even sides"):
        open_sink(f"virtualcam:641x360,backend={BACKEND}")
    with pytest.raises(ValueError, match="unknown virtualcam option 'sideways'"):
        open_sink(f"virtualcam:sideways,backend={BACKEND}")
    with pytest.raises(SinkError, match="backend 'nope' does not exist.*stylecam-test"):
        open_sink("virtualcam:backend=nope")
    with pytest.raises(SinkError, match="device is busy"):
        open_sink(f"virtualcam:backend={BACKEND},device=busy")


@pytest.mark.skipif(real_virtualcam_works(), reason="this machine has a working virtual camera")
def test_without_a_driver_open_sink_says_how_to_fix_it_for_this_os():
    with pytest.raises(SinkError) as err:
        open_sink("virtualcam")
    text = str(err.value)
    assert "\n" not in text
    if sys.platform.startswith("linux"):
        assert doctor.MODPROBE_LINE in text and "exclusive_caps=1 makes the device advertise" in text
        assert "v4l2loopback-dkms" in text
    else:
        assert "OBS Studio 30" in text


@pytest.mark.skipif(real_virtualcam_works(), reason="this machine has a working virtual camera")
def test_cli_run_fails_before_any_work_with_one_paragraph_and_doctor_says_the_same(tmp_path):
    out = tmp_path / "out.mp4"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "stylecam.core", "run", "--source", "demo",
                        "--sink", f"file:{out}", "--sink", "virtualcam"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylecam: No virtual camera is available")
    assert not out.exists()  # refused before the stream started, not after processing
    assert time.monotonic() - t0 < 30

    d = subprocess.run([sys.executable, "-m", "stylecam.core", "doctor", "--only", "virtualcam",
                        "--require", "virtualcam", "--json"], capture_output=True, text=True, timeout=60)
    import json

    report = json.loads(d.stdout)
    assert d.returncode == 1 and report["ok"] is False
    check = next(c for c in report["checks"] if c["part"] == "virtualcam")
    assert check["status"] == "fail"
    assert check["fix"] == lines[0].removeprefix("stylecam: ")
