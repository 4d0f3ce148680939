"""Output faults: a virtual camera another program takes, an MJPEG client that leaves in the
middle of a frame, a disk that fills up under the file output, outputs that cannot open. The
stream must keep feeding the outputs that still work, and say once what failed."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from stylecam.core import cli
from stylecam.core import runner as runner_module
from stylecam.core.runner import Runner, RunnerError
from stylecam.core.sinks import FileSink, MjpegSink, Sink, VirtualCameraSink
from stylecam.core.sources import PatternSource, Source
from stylecam.core.styles import load_styles
from stylecam.core.stylize.base import create_backend

from clips import count_frames
from reliability_helpers import (FLAKY_BACKEND, Background, EventLog, Identity, Recorder,  # noqa: F401
                                 figures, flaky_camera, wait_until)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(runner_module, "SINK_BACKOFF", (0.2, 0.4))


def test_virtual_camera_taken_mid_stream_is_retried_while_the_other_output_goes_on(
        flaky_camera, fast_retries, figures):
    styles, _ = load_styles()
    source = PatternSource(size=(64, 48), fps=60, realtime=True)
    sink, log = Recorder(), EventLog()
    camera = VirtualCameraSink((64, 48), fps=30, backend=FLAKY_BACKEND)
    runner = Runner(source, create_backend(styles["toon"]), [sink, camera], on_event=log)
    with Background(runner) as bg:
        assert wait_until(lambda: sink.count >= 10 and len(flaky_camera.instances[-1].frames) >= 5, 5)
        t_taken = time.monotonic()
        flaky_camera.taken = True  # another program grabs the device
        failed = log.wait("sink-failed", 3)
        time.sleep(0.8)
        t_freed = time.monotonic()
        flaky_camera.taken = False
        recovered = log.wait("sink-recovered", 3)
        assert recovered is not None, log.kinds()
        new_cam = flaky_camera.instances[-1]
        assert wait_until(lambda: len(new_cam.frames) >= 10, 3)
        bg.stop()
    assert bg.error is None
    assert failed.message == ("output virtualcam failed: the virtual camera stopped accepting frames: device is "
                              "busy (another program took it); retrying in 0.2 s; the other outputs go on")
    assert log.kinds().count("sink-failed") == 1  # the failed reopen attempts are not repeated to the user
    assert recovered.level == "info" and recovered.message.startswith("output virtualcam works again after ")
    assert runner.metrics.sink_errors >= 2  # the first failure and at least one failed reopen
    # The other output never missed a beat, and every frame made it there.
    assert sink.max_gap(t_taken, t_freed + 0.5) < 0.25
    assert runner.metrics.frames_out == sink.count
    # The camera that came back shows the stream again, not the neutral start frame.
    painted = [f for f in new_cam.frames if not (f == 48).all()]
    assert len(painted) >= 5 and len(flaky_camera.instances) >= 2
    old = flaky_camera.instances[0]
    figures.update(busy_s=round(t_freed - t_taken, 2), reported_after_s=round(failed.t - t_taken, 2),
                   recovery_s=round(recovered.t - t_freed, 2),
                   camera_dark_s=round(new_cam.times[0] - old.times[-1], 2),
                   other_output_max_gap_s=round(sink.max_gap(t_taken, t_freed + 0.5), 3))


def test_virtual_camera_busy_at_start_is_one_line_before_any_work(flaky_camera, tmp_path, capsys):
    flaky_camera.taken = True
    out = tmp_path / "out.mp4"
    rc = cli.main(["run", "--source", "pattern", "--frames", "3", "--sink", f"file:{out}",
                   "--sink", f"virtualcam:64x48,backend={FLAKY_BACKEND}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith(f"stylecam: No virtual camera is available (pyvirtualcam: '{FLAKY_BACKEND}' "
                             "backend: device is busy (another program is using it)")
    assert not out.exists()


def _read_headers(sock) -> bytes:
    data = b""
    while b"Content-Length:" not in data or b"\r\n\r\n" not in data.split(b"Content-Length:")[1]:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the stream"
        data += chunk
    return data


def test_mjpeg_client_that_leaves_mid_frame_does_not_disturb_the_stream(figures):
    source = PatternSource(size=(320, 240), fps=30, realtime=True)
    sink, log = Recorder(keep_images=False), EventLog()
    mjpeg = MjpegSink(0, send_timeout=1.0, header_timeout=1.0)
    mjpeg.start()
    runner = Runner(source, Identity(), [sink, mjpeg], on_event=log)
    with Background(runner) as bg:
        assert wait_until(lambda: mjpeg.frames_written >= 3, 3)
        quitter = socket.create_connection(("127.0.0.1", mjpeg.port))
        quitter.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = _read_headers(quitter)
        length = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
        body_so_far = len(head.split(b"\r\n\r\n", 2)[-1])
        assert body_so_far < length  # we are in the middle of a JPEG
        quitter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        t_left = time.monotonic()
        quitter.close()  # RST, mid-frame
        # A client that connects and never asks for anything is let go after header_timeout.
        idle = socket.create_connection(("127.0.0.1", mjpeg.port))
        assert wait_until(lambda: mjpeg.clients == 1, 2)
        t_idle = time.monotonic()
        assert wait_until(lambda: mjpeg.clients == 0, 3), mjpeg.clients
        idle_dropped = time.monotonic() - t_idle
        idle.close()
        # A new viewer gets fresh frames.
        cap = cv2.VideoCapture(mjpeg.url)
        shapes = [cap.read()[1].shape for _ in range(3)]
        cap.release()
        written = mjpeg.frames_written
        assert wait_until(lambda: mjpeg.frames_written > written + 5, 2)
        bg.stop()
    assert bg.error is None
    assert shapes == [(240, 320, 3)] * 3
    assert log.events == [] and runner.failed_sinks == []  # nothing for the user to hear about
    assert sink.max_gap(t_left, t_left + 2) < 0.2
    figures.update(other_output_max_gap_s=round(sink.max_gap(t_left, t_left + 2), 3),
                   idle_client_dropped_after_s=round(idle_dropped, 2))


# ---- disk full -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root, as on the build machines and CI; skipped elsewhere: the
    file-size-limit test below covers the write failure without mounting). 1 MiB, not more: the
    stabilized styles compress well, and 400 frames of 256x256 H.264 fit in 3 MiB."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class NoiseSource(Source):
    """Non-live noise frames: incompressible, so a video fills a disk in a few hundred frames."""

    live = False
    name = "noise"

    def __init__(self, count, size=(160, 120)):
        self.count, self.size, self.n = count, size, 0
        self.rng = np.random.default_rng(0)

    def read(self):
        if self.n >= self.count:
            return None
        self.n += 1
        return self.rng.integers(0, 256, (self.size[1], self.size[0], 3), dtype=np.uint8)


def test_disk_full_stops_the_video_readable_while_the_stream_goes_on(small_disk, figures):
    out = small_disk / "out.mp4"
    video, other, log = FileSink(str(out)), Recorder(keep_images=False), EventLog()
    summary = Runner(NoiseSource(600), Identity(), [video, other], on_event=log).run()
    assert summary["frames_out"] == other.count == 600  # the stream went on to the end
    [failed] = log.of("sink-failed")
    assert failed.message.startswith(f"output file:{out} failed: disk full writing {out} at frame {video.count}: "
                                     "the video keeps its first ")
    assert failed.message.endswith("all playable; free some space or write elsewhere; it is switched off; "
                                   "the other outputs go on")
    kept = int(re.search(r"\((\d+) frames\)", failed.message).group(1))
    assert 20 < kept <= video.count < 600
    # What was kept plays back, every frame of it (the file was cut back to its last whole fragment).
    assert count_frames(out) == kept
    free = shutil.disk_usage(small_disk).free
    figures.update(disk_mib=3, frames_written=video.count, frames_kept=kept, frames_readable=count_frames(out),
                   free_left_kib=free // 1024, stream_frames_lost=600 - other.count)


def test_disk_full_with_only_the_file_output_ends_the_run_with_one_line(small_disk, capsys):
    out = small_disk / "clip.mp4"
    rc = cli.main(["run", "--source", "demo", "--loop", "--style", "toon", "--size", "256x256",
                   "--frames", "3000", "--sink", f"file:{out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith(f"stylecam: no output works any more (file:{out}): file:{out}: disk full writing ")
    assert "Traceback" not in "\n".join(err)
    assert count_frames(out) > 10  # the part written before the disk filled is a playable video


def test_on_the_command_line_a_full_disk_is_one_warning_and_the_other_output_goes_on(small_disk, tmp_path):
    out, frames = small_disk / "clip.mp4", tmp_path / "frames"
    p = subprocess.run([sys.executable, "-m", "stylecam.core", "run", "--source", "demo", "--loop", "--style",
                        "sketch", "--size", "256x256", "--frames", "400", "--sink", f"file:{out}",
                        "--sink", f"file:{frames}/"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr  # the run went on, but the recording is not complete
    warnings = [line for line in p.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"stylecam: warning: output file:{out} failed: disk full writing ")
    assert warnings[0].endswith("; it is switched off; the other outputs go on")
    assert len(list(frames.glob("*.png"))) == 400  # the other output got every frame
    assert "stylecam: 400 frames, style sketch" in p.stdout


def test_file_size_limit_fails_the_png_output_cleanly():
    """Without mounting anything: RLIMIT_FSIZE makes the kernel refuse writes past 40 KB (EFBIG),
    as a quota would; the PNG output fails on the first big frame, leaves no half-written file,
    and the other output gets every frame."""
    script = textwrap.dedent("""
        import json, os, resource, signal, sys, tempfile
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from reliability_helpers import EventLog, Identity, Recorder
        from stylecam.core.runner import Runner
        from stylecam.core.sinks import FileSink
        from stylecam.core.sources import Source

        class Frames(Source):
            live, name = False, "frames"
            def __init__(self):
                rng = np.random.default_rng(0)
                self.items = [np.full((120, 160, 3), i, np.uint8) for i in range(4)]
                self.items += [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(4)]
            def read(self):
                return self.items.pop(0) if self.items else None

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        folder = tempfile.mkdtemp() + "/"
        png, other, log = FileSink(folder), Recorder(keep_images=False), EventLog()
        summary = Runner(Frames(), Identity(), [png, other], on_event=log).run()
        print(json.dumps({"out": summary["frames_out"], "other": other.count, "written": png.count,
                          "files": sorted(os.listdir(folder)), "folder": folder,
                          "events": [[e.kind, e.message] for e in log.events]}))
    """)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-c", script, tests_dir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["out"] == r["other"] == 8
    assert r["written"] == 4 and r["files"] == [f"frame_{i:06d}.png" for i in range(4)]
    [[kind, message]] = r["events"]
    assert kind == "sink-failed"
    assert message == (f"output file:{r['folder']} failed: cannot write {r['folder']}frame_000004.png (disk full); "
                       "4 frames were written; it is switched off; the other outputs go on")
    shutil.rmtree(r["folder"])


class Broken(Sink):
    name = "broken"

    def write(self, frame):
        raise OSError(5, "Input/output error")


def test_an_output_that_cannot_open_is_switched_off_and_the_rest_go_on(tmp_path):
    bad = FileSink("/dev/null/sub/out.mp4")
    sink, log = Recorder(keep_images=False), EventLog()
    summary = Runner(PatternSource((64, 48), realtime=False), Identity(), [bad, sink], max_frames=20,
                     on_event=log).run()
    assert summary["frames_out"] == sink.count == 20
    assert [e.message for e in log.events] == [
        "output file:/dev/null/sub/out.mp4 failed: cannot create folder /dev/null/sub: Not a directory; "
        "it is switched off; the other outputs go on"]


def test_when_every_output_has_failed_the_run_stops_with_one_message():
    sink = Broken()
    with pytest.raises(RunnerError) as err:
        Runner(PatternSource((64, 48), realtime=False), Identity(), [sink], max_frames=50).run()
    assert str(err.value) == "no output works any more (broken): broken: [Errno 5] Input/output error"
