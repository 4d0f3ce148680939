"""The first hour (issue 20) under Xvfb and a real tray host: the first start opens the guide
with the demo clip named; with no virtual-camera driver the icon is amber, the menu, Settings and
the guide say the same, and one two-line notification is shown once; the log folder action opens
the log folder; the strength slider changes the output; recording writes a file; the global
shortcut cycles styles."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest

from clips import count_frames
from desktop_helpers import next_pair
from reliability_helpers import real_virtualcam_works


@pytest.fixture
def first_app(qtbot, tmp_path):
    """A TrayApp exactly as a first start makes it: no settings file at all."""
    from stylecam.desktop.settings import SettingsStore
    from stylecam.desktop.tray import TrayApp

    store = SettingsStore(tmp_path / "fresh" / "stylecam.conf")
    app = TrayApp(store, probe_diffusion=False)
    yield app
    assert app.shutdown()


def test_first_start_opens_the_guide_with_the_demo_clip_named(qtbot, first_app):
    app = first_app
    assert app.first_start and app.source_spec == "demo"  # no camera on this machine
    app.start()
    qtbot.waitExposed(app.preview)
    assert app.preview.isVisible() and app.guide.isVisible()
    assert app.guide.source_row.text.text() == "Source: Demo clip —"
    assert app.guide.pick_button.text() == "pick your camera or screen ▸"
    assert app.guide.pick_button.menu() is app.source_menu
    # One line per output, in the status model's words.
    vc = app.guide.rows["virtual_camera"].text.text()
    assert vc.startswith("Virtual camera: ")
    assert app.guide.rows["mjpeg"].text.text() == "MJPEG stream: off"
    pair = next_pair(qtbot, app, timeout=10000)
    assert pair.input.shape[2] == 3
    # Not the first start any more: the next app opens no guide.
    from stylecam.desktop.settings import SettingsStore
    from stylecam.desktop.tray import TrayApp

    again = TrayApp(SettingsStore(app.store.path), probe_diffusion=False)
    try:
        assert not again.first_start and not again.guide.isVisible()
    finally:
        again.shutdown()


@pytest.mark.skipif(real_virtualcam_works(), reason="a real virtual-camera driver is loaded here")
def test_no_virtual_camera_driver_amber_icon_one_short_notification(qtbot, make_app):
    from stylecam.desktop.icons import state_icon
    from stylecam.desktop.notify import MAX_CHARS

    app = make_app(virtual_camera=True)
    notes = []
    app.notified.connect(lambda *n: notes.append(n))
    with qtbot.waitSignal(app.notified, timeout=5000):
        app.start()
    qtbot.waitUntil(lambda: app.state == "running", timeout=5000)
    # The icon: amber while the chosen output fails (not the green running badge).
    assert app.status.icon_state() == "warning"
    assert app.tray.icon().cacheKey() == state_icon("warning").cacheKey()
    # The notification: a title and at most two lines, no flag, with Details.
    title, message, level = notes[0]
    assert title == "Virtual camera unavailable" and level == "warning"
    toast = app.toast
    assert toast.isVisible() and toast.details_button.isVisible()
    assert len(message) <= MAX_CHARS and toast.body_lines() <= 2, (message, toast.body_lines())
    # Nothing cut off: the label is as tall as its wrapped text needs.
    body = toast.body_label
    assert body.height() >= body.heightForWidth(body.width())
    assert "--" not in message and "--" not in app.last_details
    # Menu, Settings, guide and the status line agree: chosen, not available, same reason.
    reason = app.status.output("virtual_camera").reason
    assert reason == "no virtual-camera driver is loaded"
    assert app.virtualcam_action.isChecked() and app.virtualcam_action.text() == "Virtual camera (not available)"
    assert app.virtualcam_action.toolTip() == f"not available: {reason}"
    assert "Virtual camera not available" in app.status_action.text()
    assert app.guide.isVisibleTo(app.preview)  # shown with the preview
    assert app.guide.rows["virtual_camera"].text.text() == f"Virtual camera: not available: {reason}"
    app.show_settings()
    dialog = app.settings_dialog
    assert dialog.virtualcam_box.isChecked()
    assert dialog.virtualcam_status.text() == f"Not available: {reason}"
    # OK in Settings (twice) and Try again: the same problem is not announced again.
    for _ in range(2):
        dialog.accept()
        qtbot.wait(300)
        app.show_settings()
        dialog = app.settings_dialog
    app.retry_output("virtual_camera")
    assert app.status.output("virtual_camera").state == "starting"  # the press shows at once
    qtbot.waitUntil(lambda: app.status.output("virtual_camera").state == "failing", timeout=3000)
    qtbot.wait(300)
    dialog.close()
    assert [n[0] for n in notes].count("Virtual camera unavailable") == 1, notes
    # Details shows the whole fix, for the app.
    toast.details_button.click()
    text = app.details_dialog.text_edit.toPlainText()
    assert "v4l2loopback" in text and "Output > MJPEG stream" in text
    app.details_dialog.close()
    # Switching the output off ends the problem: the icon is green again.
    app.virtualcam_action.trigger()
    assert not app.status.failing() and app.status.icon_state() == "running"
    assert app.tray.icon().cacheKey() == state_icon("running").cacheKey()
    assert app.virtualcam_action.text() == "Virtual camera"


def test_guide_offers_the_mjpeg_stream_instead(qtbot, make_app):
    from PySide6.QtWidgets import QApplication

    app = make_app(virtual_camera=True, mjpeg_port=18795)
    app.start()
    qtbot.waitUntil(lambda: app.status.output("virtual_camera").state in ("failing", "on"), timeout=5000)
    if app.status.output("virtual_camera").state == "on":
        pytest.skip("a virtual camera works here")
    app.show_guide()
    button = app.guide.actions["virtual_camera"]["mjpeg"]
    assert button.isVisible()
    button.click()
    qtbot.waitUntil(lambda: app.status.output("mjpeg").state == "on", timeout=5000)
    assert QApplication.clipboard().text() == "http://127.0.0.1:18795/stream.mjpg"
    assert app.guide.rows["mjpeg"].text.text() == "MJPEG stream: on: http://127.0.0.1:18795/stream.mjpg"
    copy = app.guide.actions["virtual_camera"]["copy"]
    copy.click()
    assert "modprobe v4l2loopback" in QApplication.clipboard().text()


def test_without_linux_the_guide_offers_obs_studio_not_a_command(qtbot, make_app, monkeypatch):
    """Windows and macOS get their virtual camera from OBS Studio: the guide opens its page and
    says what to do there (there is no command to paste into a terminal)."""
    from stylecam.desktop import guide

    monkeypatch.setattr(guide.platform, "system", lambda: "Windows")
    opened = []
    monkeypatch.setattr(guide.QDesktopServices, "openUrl", lambda url: opened.append(url.toString()) or True)
    app = make_app()
    button = app.guide.actions["virtual_camera"]["copy"]
    assert button.text() == "Get OBS Studio"
    button.click()
    assert opened == ["https://obsproject.com"]
    title, message, _ = app.last_notification
    assert title == "Get OBS Studio" and "Start Virtual Camera" in message and "terminal" not in message


def test_open_log_folder_opens_the_log_folder(qtbot, make_app, monkeypatch, tmp_path):
    from stylecam.desktop import tray
    from stylecam.desktop.logs import log_dir

    opened = []
    monkeypatch.setattr(tray, "open_folder", lambda path: opened.append(path) or True)
    app = make_app()
    assert app.log_folder_action in app.help_menu.actions()
    app.log_folder_action.trigger()
    assert opened == [log_dir()] and log_dir() == tmp_path / "logs" and log_dir().is_dir()


def test_strength_slider_blends_with_the_original_and_is_kept_per_style(qtbot, make_app):
    app = make_app(style="toon")
    app.start()
    app.show_preview()
    full = next_pair(qtbot, app, lambda p: p.style == "toon" and not p.paused)
    diff_full = np.abs(full.output.astype(np.int16) - full.input.astype(np.int16)).mean()
    assert app.preview.strength_slider.value() == 100
    app.preview.strength_slider.setValue(25)
    assert app.preview.strength_label.text() == "25 %"
    marker = full.index + 4  # a frame started after the change
    quarter = next_pair(qtbot, app, lambda p: p.index > marker and p.style == "toon")
    diff_quarter = np.abs(quarter.output.astype(np.int16) - quarter.input.astype(np.int16)).mean()
    # A quarter of the style over the original: about a quarter of the difference from it.
    assert diff_full > 5
    assert 0.15 * diff_full < diff_quarter < 0.4 * diff_full, (diff_full, diff_quarter)
    app.preview.strength_slider.setValue(0)
    zero = next_pair(qtbot, app, lambda p: p.index > quarter.index + 4 and p.style == "toon")
    assert np.abs(zero.output.astype(np.int16) - zero.input.astype(np.int16)).max() <= 1
    # Per style: another style runs at its own (full) strength; back to toon, 0 again.
    app.select_style("sketch")
    assert app.preview.strength_slider.value() == 100
    assert app.preview.strength_title.text() == "Strength of Pencil sketch"
    app.select_style("toon")
    assert app.preview.strength_slider.value() == 0
    assert app.store.load().strength("toon") == 0.0 and app.store.load().strength("sketch") == 1.0


def _recording_app(qtbot, make_app, monkeypatch, out, frames: int):
    """A running TrayApp recording to ``out`` (as if picked in the save dialog), once the
    recording holds ``frames`` frames. The stream may drop frames under load: the source's frame
    numbers do not say how many were written, the recording's own count does."""
    from stylecam.desktop import tray

    monkeypatch.setattr(tray, "ask_record_path", lambda parent=None: str(out))
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app)
    app.record_action.trigger()
    qtbot.waitUntil(lambda: app.status.output("record").state == "on", timeout=5000)
    qtbot.waitUntil(lambda: app.worker.hub.sink("record").count >= frames, timeout=5000)
    return app


def test_record_to_file_writes_the_painted_stream(qtbot, make_app, monkeypatch, tmp_path):
    out = tmp_path / "rec.mp4"
    app = _recording_app(qtbot, make_app, monkeypatch, out, 10)
    assert app.record_action.text() == "Stop &recording"
    assert app.last_notification[0] == "Recording" and "video" in app.last_notification[1]
    app.record_action.trigger()
    assert app.record_action.text() == "&Record to file…"
    # Said once the file is closed, with the frames it holds.
    qtbot.waitUntil(lambda: app.last_notification[0] == "Recording saved", timeout=3000)
    assert app.worker.hub.sink("record") is None
    frames = int(re.match(r"(\d+) frames in (.*)$", app.last_notification[1]).group(1))
    assert str(out) in app.last_notification[1]
    assert count_frames(out) == frames >= 10


def test_recording_over_a_file_the_dialog_confirmed_replaces_it(qtbot, make_app, monkeypatch, tmp_path):
    """The save dialog asked before replacing the file: the recording writes over it (the command
    line, which asked nothing, refuses an existing file)."""
    out = tmp_path / "rec.mp4"
    out.write_bytes(b"an older recording")
    app = _recording_app(qtbot, make_app, monkeypatch, out, 5)
    app.record_action.trigger()
    qtbot.waitUntil(lambda: app.last_notification[0] == "Recording saved", timeout=3000)
    assert count_frames(out) >= 5


def test_a_size_change_finishes_the_recording_and_says_so_once(qtbot, make_app, monkeypatch, tmp_path):
    """A new output size closes the recording (its file cannot change size): the file is whole,
    "Recording saved" is said once, and the menu offers a new recording."""
    import dataclasses

    out = tmp_path / "rec.mp4"
    app = _recording_app(qtbot, make_app, monkeypatch, out, 5)
    shown = []
    real_notify = app.notify
    monkeypatch.setattr(app, "notify", lambda title, text, *a, **k: (shown.append((title, text)),
                                                                     real_notify(title, text, *a, **k))[1])
    app.apply_settings(dataclasses.replace(app.settings, output_size=(128, 96)))
    qtbot.waitUntil(lambda: not app.status.output("record").chosen, timeout=5000)
    next_pair(qtbot, app, lambda p: p.output.shape[:2] == (96, 128))
    qtbot.wait(200)
    saved = [text for title, text in shown if title == "Recording saved"]
    assert len(saved) == 1
    assert app.record_action.text() == "&Record to file…"
    assert count_frames(out) == int(re.match(r"(\d+) frames in ", saved[0]).group(1)) >= 5
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    cap.release()


def test_a_recording_that_cannot_start_says_so_and_the_stream_goes_on(qtbot, make_app, monkeypatch, tmp_path):
    from stylecam.desktop import tray

    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "rec.mp4"
    monkeypatch.setattr(tray, "ask_record_path", lambda parent=None: str(out))
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app)
    app.record_action.trigger()
    qtbot.waitUntil(lambda: app.last_notification is not None and app.last_notification[0] == "Cannot record",
                    timeout=5000)
    title, short, details = app.history[-1]
    assert "notes.txt" in f"{short} {details}" and "Nothing was recorded" in details
    assert app.record_action.text() == "&Record to file…"
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"
    next_pair(qtbot, app)


def _recording_worker(tmp_path):
    """A worker (not started) whose hub records 12 frames, under one fragment (a second): only
    closing the file makes it playable."""
    from stylecam.core.frames import Frame
    from stylecam.core.styles import builtin_styles
    from stylecam.desktop.worker import StreamConfig, StreamWorker

    toon = next(s for s in builtin_styles() if s.name == "toon")
    worker = StreamWorker(StreamConfig(source="pattern", style=toon), toon)
    out = tmp_path / "rec.mp4"
    worker.hub.open((64, 48), 30.0)
    worker.set_output("record", f"file:{out}")
    rng = np.random.default_rng(0)
    for i in range(12):
        worker.hub.write(Frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), i))
    assert worker.hub.sink("record") is not None
    return worker, out


def test_a_recording_is_listed_until_its_file_is_whole(tmp_path, monkeypatch):
    """The hub drops a stopped recording from ``sink()`` only after its file is closed: whoever
    waits for ``sink("record") is None`` (the tray, this suite) finds a playable file."""
    from stylecam.core.frames import Frame
    from stylecam.core.recording import FileSink

    worker, out = _recording_worker(tmp_path)
    hub, recorder = worker.hub, worker.hub.sink("record")
    seen_while_closing = []
    real_close = FileSink.close

    def close(sink):
        seen_while_closing.append(hub.sink("record"))
        real_close(sink)

    monkeypatch.setattr(FileSink, "close", close)
    hub.want("record", None)
    hub.write(Frame(np.zeros((48, 64, 3), np.uint8), 12))
    assert seen_while_closing == [recorder]
    assert hub.sink("record") is None
    assert count_frames(out) == 12


def test_a_recording_stopped_with_no_frames_coming_is_closed_at_once(tmp_path):
    """With no runner (a source that gave up, a failed style) no next frame comes to apply the
    stop at: the waiting worker thread closes the file itself."""
    import threading

    worker, out = _recording_worker(tmp_path)
    waiting = threading.Thread(target=worker._wait_for_change)
    waiting.start()
    try:
        worker.set_output("record", None)
        deadline = time.monotonic() + 5
        while worker.hub.sink("record") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.hub.sink("record") is None
        assert waiting.is_alive()  # it goes on waiting for a restart
        assert count_frames(out) == 12
    finally:
        worker.stop()
        waiting.join(5)
    assert not waiting.is_alive()


def test_global_shortcut_cycles_styles_from_anywhere(qtbot, make_app):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")
    app = make_app(style="toon")
    app.start()
    assert app.hotkey_action.text() == "Global shortcut: Ctrl+Alt+S cycles styles"
    names = list(app.styles)
    after = names[(names.index("toon") + 1) % len(names)]
    # No stylecam window has the focus: the key goes to the X server's root window.
    subprocess.run(["xdotool", "key", "ctrl+alt+s"], check=True, timeout=10)
    qtbot.waitUntil(lambda: app.style_name == after, timeout=5000)
    assert app.style_actions[after].isChecked()


def test_no_global_shortcut_says_why(monkeypatch):
    from stylecam.desktop import hotkey

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert "Wayland" in hotkey.unsupported_reason()
    monkeypatch.setattr(hotkey.sys, "platform", "darwin")
    assert hotkey.unsupported_reason() == "not done yet on macOS"
