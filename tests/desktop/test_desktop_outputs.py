"""Outputs while the stream runs: turned off and on again quickly, a recording started again to
the same file, and settings changes that reach the virtual camera without cutting the MJPEG
viewers off. The virtual camera is pyvirtualcam's own seam (a backend registered with it: no
driver runs here); MJPEG is the real server on loopback."""

from __future__ import annotations

import dataclasses
import socket
import time
import urllib.request

from clips import count_frames
from desktop_helpers import next_pair
from reliability_helpers import recording_backend  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mjpeg_turned_off_and_on_at_once_stays_served_and_says_on(qtbot, make_app):
    port = _free_port()
    app = make_app(mjpeg=True, mjpeg_port=port)
    app.start()
    qtbot.waitUntil(lambda: app.status.output("mjpeg").state == "on", timeout=5000)
    server = app.worker.hub.sink("mjpeg")
    app.mjpeg_action.trigger()  # off and on again before a frame applies the off
    app.mjpeg_action.trigger()
    assert app.status.output("mjpeg").state == "starting"
    qtbot.waitUntil(lambda: app.status.output("mjpeg").state == "on", timeout=3000)
    assert app.copy_url_action.isEnabled()
    assert app.worker.hub.sink("mjpeg") is server  # never closed: no viewer was cut off
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as reply:
        assert reply.status == 200


def test_a_recording_started_again_to_the_same_file_records_anew(qtbot, make_app, monkeypatch, tmp_path):
    from stylecam.desktop import tray

    out = tmp_path / "meeting.mp4"
    monkeypatch.setattr(tray, "ask_record_path", lambda parent=None: str(out))
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app)
    for turn in range(2):  # the second time the save dialog confirmed replacing the file
        app.record_action.trigger()
        qtbot.waitUntil(lambda: app.status.output("record").state == "on", timeout=5000)
        assert app.record_action.text() == "Stop &recording"
        qtbot.waitUntil(lambda: app.worker.hub.sink("record").count >= 5 + 10 * turn, timeout=5000)
        app.record_action.trigger()
        qtbot.waitUntil(lambda: app.last_notification[0] == "Recording saved", timeout=3000)
        frames = int(app.last_notification[1].split(" frames")[0])
        assert count_frames(out) == frames >= 5 + 10 * turn
        app.last_notification = None


def test_size_and_rate_set_in_settings_reach_the_virtual_camera(qtbot, make_app, recording_backend):  # noqa: F811
    app = make_app(virtual_camera=True, output_size=(160, 120), fps=30.0)
    app.start()
    qtbot.waitUntil(lambda: app.status.output("virtual_camera").state == "on", timeout=5000)
    assert (recording_backend.instances[-1].width, recording_backend.instances[-1].fps) == (160, 30.0)
    app.apply_settings(dataclasses.replace(app.settings, output_size=(320, 240), fps=15.0))
    qtbot.waitUntil(lambda: len(recording_backend.instances) >= 2 and len(recording_backend.instances[-1].frames) >= 3,
                    timeout=5000)
    cam = recording_backend.instances[-1]
    assert (cam.width, cam.height, cam.fps) == (320, 240, 15.0)
    assert cam.frames[-1].shape == (240, 320, 3)
    assert recording_backend.instances[0].closed


def test_a_new_rate_does_not_cut_the_mjpeg_viewers_off(qtbot, make_app):
    port = _free_port()
    app = make_app(mjpeg=True, mjpeg_port=port)
    app.start()
    qtbot.waitUntil(lambda: app.status.output("mjpeg").state == "on", timeout=5000)
    viewer = urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=3)
    try:
        viewer.read(2000)
        app.apply_settings(dataclasses.replace(app.settings, fps=15.0))
        qtbot.waitUntil(lambda: app.worker.config.fps == 15.0, timeout=3000)
        got, deadline = 0, time.monotonic() + 1.5
        while time.monotonic() < deadline:
            qtbot.wait(20)
            chunk = viewer.read1(65536)
            assert chunk, "the viewer's connection ended"
            got += len(chunk)
        assert got > 2000
    finally:
        viewer.close()
