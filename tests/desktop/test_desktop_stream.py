"""The tray app driving a real worker: live style switch, pause, source switch, failures, quit.

Frames come from the real pattern source and the bundled clip through the real classic
backend; outputs are compared with the classic backend run on the same input.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from stylecam.core.frames import fit
from stylecam.core.sources import demo_clip_path

from desktop_helpers import SIZE, next_pair, pattern_frame


def styled(name):
    return lambda p: p.style == name and not p.paused


def test_menu_action_switches_style_of_running_worker(qtbot, make_app, classic_reference):
    app = make_app(style="toon")
    app.start()
    before = next_pair(qtbot, app, styled("toon"))
    assert np.array_equal(before.input, pattern_frame(before.index))
    assert np.array_equal(before.output, classic_reference("toon", before.input))
    assert app.tray.contextMenu() is app.menu

    app.style_actions["sketch"].trigger()  # what a click on the menu entry does
    assert app.style_actions["sketch"].isChecked() and not app.style_actions["toon"].isChecked()
    after = next_pair(qtbot, app, styled("sketch"))
    assert np.array_equal(after.output, classic_reference("sketch", after.input))
    # The two styles give clearly different pictures of the same input.
    toon_of_same = classic_reference("toon", after.input).astype(np.int16)
    assert np.abs(after.output.astype(np.int16) - toon_of_same).mean() > 20
    # Live: the same run went on (frame numbers continue), no restart from frame 0.
    assert after.index > before.index
    assert app.worker.state == "running"
    assert app.store.load().style == "sketch"


def test_pause_passes_input_through_and_resume_stylizes_again(qtbot, make_app, classic_reference):
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app, styled("toon"))

    app.pause_action.trigger()
    assert app.pause_action.isChecked() and app.pause_action.text() == "&Resume"
    paused = next_pair(qtbot, app, lambda p: p.paused)
    assert np.array_equal(paused.output, paused.input)
    assert np.array_equal(paused.output, pattern_frame(paused.index))
    qtbot.waitUntil(lambda: app.state == "paused", timeout=2000)

    app.pause_action.trigger()
    resumed = next_pair(qtbot, app, lambda p: not p.paused and p.index > paused.index)
    assert np.array_equal(resumed.output, classic_reference("toon", resumed.input))
    assert not np.array_equal(resumed.output, resumed.input)
    qtbot.waitUntil(lambda: app.state == "running", timeout=2000)


def _demo_frames():
    cap = cv2.VideoCapture(demo_clip_path())
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SIZE))
    cap.release()
    return frames


def test_source_menu_switches_source(qtbot, make_app):
    app = make_app(style="oil")
    app.start()
    first = next_pair(qtbot, app)
    assert np.array_equal(first.input, pattern_frame(first.index))
    assert app.source_actions["pattern"].isChecked()

    with qtbot.waitSignal(app.source_changed, timeout=3000, check_params_cb=lambda s: s == "demo"):
        app.source_actions["demo"].trigger()
    assert app.source_actions["demo"].isChecked() and not app.source_actions["pattern"].isChecked()
    demo = _demo_frames()
    pair = next_pair(qtbot, app, lambda p: p.style == "oil")
    assert any(np.array_equal(pair.input, frame) for frame in demo), "the input is not a frame of the demo clip"
    assert app.store.load().source == "demo"
    # The clip plays in real time (about its 24 fps), not as fast as the stylizer can go.
    qtbot.waitUntil(lambda: app.last_stats.get("frames_out", 0) >= 12, timeout=3000)
    rate = app.last_stats["fps_in"]
    assert 12 <= rate <= 30, rate


def test_a_file_with_an_ampersand_is_named_whole(qtbot, make_app, tmp_path):
    import shutil

    clip = tmp_path / "Tom & Jerry.mp4"
    shutil.copy(demo_clip_path(), clip)
    app = make_app()
    app.start()
    next_pair(qtbot, app)
    app.select_source(f"file:{clip}")
    next_pair(qtbot, app, lambda p: app.worker.config.source == f"file:{clip}")
    action = app.source_actions[f"file:{clip}"]
    assert action.text() == "File Tom && Jerry.mp4"  # Qt shows "&&" as "&" (one "&" marks a key)
    assert app.guide.source_text() == "Source: File Tom & Jerry.mp4"
    assert (f"file:{clip}", "File Tom & Jerry.mp4") in app.source_actions_specs()


def test_unavailable_virtual_camera_notifies_with_fix_and_stream_goes_on(qtbot, make_app):
    from stylecam.core import doctor

    app = make_app(virtual_camera=True)
    notes = []
    app.notified.connect(lambda *n: notes.append(n))
    with qtbot.waitSignal(app.notified, timeout=5000,
                          check_params_cb=lambda t, m, lvl: t == "Virtual camera unavailable"):
        app.start()
    title, message, level = notes[-1]
    assert level == "warning" and message.startswith("No virtual-camera driver is loaded.")
    # Details: the doctor's own words, for this machine (no v4l2loopback device here), for the app.
    details = app.last_details
    assert doctor.virtualcam_fix(audience="app").split(".")[0] in details
    assert "v4l2loopback" in details and "Output > MJPEG stream" in details and "--sink" not in details
    # The choice stays (menu and the next start); the menu says it is not available.
    assert app.virtualcam_action.isChecked() and app.virtualcam_action.text() == "Virtual camera (not available)"
    assert app.store.load().virtual_camera is True
    first = next_pair(qtbot, app)
    later = next_pair(qtbot, app, lambda p: p.index >= first.index + 5)
    assert later.style == "toon" and app.worker.state == "running"
    assert app.worker.isRunning()


def test_unavailable_camera_notifies_and_previous_source_comes_back(qtbot, make_app):
    app = make_app()
    app.start()
    next_pair(qtbot, app)
    notes = []
    app.notified.connect(lambda *n: notes.append(n))
    with qtbot.waitSignal(app.source_changed, timeout=5000, check_params_cb=lambda s: s == "pattern"):
        with qtbot.waitSignal(app.notified, timeout=5000):
            app.select_source("camera:/dev/video42")
    title, message, _ = notes[0]
    assert title == "Camera unavailable"
    assert "/dev/video42" in message and message.count("\n") == 0
    assert "stylecam doctor" in app.last_details
    assert "Back to the previous source (pattern)" in app.last_details
    pair = next_pair(qtbot, app)
    assert np.array_equal(pair.input, pattern_frame(pair.index))
    assert app.source_actions["pattern"].isChecked()
    assert "camera:/dev/video42" not in app.source_actions  # no menu entry for the failed camera
    assert app.store.load().source == "pattern"  # the next start opens what worked
    assert app.worker.state == "running"


def test_a_fallback_that_arrives_after_the_next_pick_is_ignored(qtbot, make_app):
    """The worker's "back to the previous source/style" is queued to the UI thread; when the user
    picked again in between, the pick stands: the menu and the next start keep what runs."""
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app)
    app.select_source("demo")
    app.select_style("sketch")
    app.worker.source_fallback.emit("pattern")  # sent for the pick before these
    app.worker.style_fallback.emit("oil")
    qtbot.wait(100)
    assert app.source_spec == "demo" and app.source_actions["demo"].isChecked()
    assert app.store.load().source == "demo"
    assert app.style_name == "sketch" and app.style_actions["sketch"].isChecked()
    next_pair(qtbot, app, lambda p: p.style == "sketch")


def test_busy_mjpeg_port_notifies_and_stream_goes_on(qtbot, make_app):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        app = make_app(mjpeg=True, mjpeg_port=port)  # ephemeral ports are above 1024
        with qtbot.waitSignal(app.notified, timeout=5000) as blocker:
            app.start()
        title, message, level = blocker.args
        assert title == "MJPEG stream unavailable" and str(port) in message
        assert "another port in Settings" in app.last_details
        assert app.mjpeg_action.text() == "MJPEG stream (not available)" and not app.copy_url_action.isEnabled()
        # The GUI never shows the command line's sink syntax (mjpeg:PORT) anywhere.
        out = app.status.output("mjpeg")
        for said in (message, app.last_details, out.reason, out.details, app.mjpeg_action.toolTip()):
            assert "mjpeg:" not in said, said
        first = next_pair(qtbot, app)
        next_pair(qtbot, app, lambda p: p.index > first.index + 3)


def _fail_styles(monkeypatch, *names):
    """The real classic backend, failing (out of memory) whenever it paints one of ``names``."""
    from stylecam.core.stylize.classic import ClassicBackend

    real_set_style, real_process = ClassicBackend.set_style, ClassicBackend.process

    def set_style(self, style):
        self.injected_name = style.name
        real_set_style(self, style)

    def process(self, images):
        if self.injected_name in names:
            raise MemoryError("out of memory (injected)")
        return real_process(self, images)

    monkeypatch.setattr(ClassicBackend, "set_style", set_style)
    monkeypatch.setattr(ClassicBackend, "process", process)


def test_failing_style_falls_back_to_classic_default(qtbot, make_app, monkeypatch, classic_reference):
    _fail_styles(monkeypatch, "sketch")
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app, styled("toon"))
    notes = []
    app.notified.connect(lambda *n: notes.append(n))
    with qtbot.waitSignal(app.style_changed, timeout=5000, check_params_cb=lambda n: n == "oil"):
        app.style_actions["sketch"].trigger()
    fallback = [n for n in app.history if "Oil paint style instead" in n[1]]
    assert fallback and "sketch" in fallback[0][2] and "injected" in fallback[0][2]
    # The runner passes frames through while it retries, and says so.
    assert notes[0][0] == "The stylizer failed" and "injected" in app.history[-len(notes)][2]
    pair = next_pair(qtbot, app, styled("oil"))
    # Oil is steadied: the pair may be its second or third frame, blended with the ones before
    # (the reference paints the frame as a stream's first). Close to oil, far from the input.
    out, ref = pair.output.astype(np.int16), classic_reference("oil", pair.input).astype(np.int16)
    assert np.abs(out - ref).mean() < 2.0, np.abs(out - ref).mean()
    assert np.abs(out - pair.input.astype(np.int16)).mean() > 6.0
    assert app.style_actions["oil"].isChecked()


def test_when_the_fallback_fails_too_the_next_style_picked_restarts_the_stream(qtbot, make_app, monkeypatch,
                                                                              classic_reference):
    _fail_styles(monkeypatch, "sketch", "oil")
    app = make_app(style="toon")
    app.start()
    next_pair(qtbot, app, styled("toon"))
    app.show_preview()
    qtbot.waitUntil(lambda: "fps" in app.preview.overlay_text(), timeout=5000)
    app.style_actions["sketch"].trigger()  # fails, and so does its fallback (oil)
    qtbot.waitUntil(lambda: app.state == "error", timeout=10000)
    # The preview does not pass the last picture off as live: dimmed, the status over it, no rates.
    assert not app.preview.live
    assert "error" in app.preview.overlay_text() and "fps" not in app.preview.overlay_text()
    app.style_actions["toon"].trigger()
    pair = next_pair(qtbot, app, styled("toon"), timeout=5000)
    assert np.array_equal(pair.output, classic_reference("toon", pair.input))
    qtbot.waitUntil(lambda: app.state == "running", timeout=3000)
    assert app.preview.live


def test_pause_and_resume_on_a_stream_that_failed_do_not_say_it_runs(qtbot, make_app, tmp_path):
    app = make_app(source=f"file:{tmp_path / 'gone.mp4'}")
    app.start()
    qtbot.waitUntil(lambda: app.state == "error", timeout=5000)
    app.pause_action.trigger()
    app.pause_action.trigger()
    qtbot.wait(300)
    assert app.state == "error" and "running" not in app.status_action.text()


def test_the_guide_says_a_source_that_cannot_be_read_until_another_runs(qtbot, make_app, tmp_path):
    from stylecam.desktop.guide import DOT_COLOURS
    from stylecam.desktop.status import FAILING, ON

    gone = tmp_path / "gone.mp4"
    app = make_app(source=f"file:{gone}")
    app.start()
    qtbot.waitUntil(lambda: app.state == "error", timeout=5000)
    qtbot.waitUntil(lambda: app.failed_source == f"file:{gone}", timeout=3000)
    row = app.guide.source_row
    assert row.text.text() == "Source: File gone.mp4 — cannot be read; pick another"
    assert DOT_COLOURS[FAILING] in row.dot.styleSheet()
    app.select_source("pattern")
    next_pair(qtbot, app)
    qtbot.waitUntil(lambda: app.failed_source is None, timeout=3000)
    assert row.text.text().startswith("Source: ") and "cannot" not in row.text.text()
    assert DOT_COLOURS[ON] in row.dot.styleSheet()


def test_style_of_unavailable_backend_falls_back(qtbot, make_app, monkeypatch):
    from stylecam.core.styles import Style, load_styles
    from stylecam.desktop import tray

    styles, _ = load_styles()
    styles = dict(styles)
    styles["dream"] = Style(name="dream", backend="no-such-backend", label="Dream")
    app = make_app(styles=styles)
    app.start()
    next_pair(qtbot, app)
    with qtbot.waitSignal(app.notified, timeout=5000) as blocker:
        app.style_actions["dream"].trigger()
    title, message, level = blocker.args
    assert title == "Style Dream is not available" and "no-such-backend" in message
    next_pair(qtbot, app, styled("oil"))
    assert app.style_actions["oil"].isChecked()
    assert tray.TrayApp  # the module stays importable without a diffusion backend


def test_quit_stops_everything_within_two_seconds(qtbot, make_app):
    app = make_app(style="oil-bold", output_size=(320, 240), mode="throughput")
    app.start()
    next_pair(qtbot, app)
    next_pair(qtbot, app)
    worker = app.worker
    t0 = time.perf_counter()
    with qtbot.waitSignal(app.quit_requested, timeout=3000):
        app.quit_action.trigger()
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"quit took {elapsed:.2f} s"
    assert not worker.isRunning()
    assert not app.tray.isVisible() and not app.preview.isVisible()


@pytest.mark.parametrize("mirror", [True])
def test_mirror_flips_input(qtbot, make_app, mirror):
    app = make_app(mirror=mirror)
    app.start()
    pair = next_pair(qtbot, app)
    assert np.array_equal(pair.input, pattern_frame(pair.index)[:, ::-1])


def classic_threads() -> list[threading.Thread]:
    """The classic backend's painter threads (its pool runs only for batches of two or more)."""
    return [t for t in threading.enumerate() if t.name.startswith("stylecam-classic") and t.is_alive()]


def test_the_classic_backend_threads_end_with_a_backend_switch_and_with_the_stream(qtbot, make_app):
    from stylecam.core.styles import Style, load_styles

    styles = dict(load_styles()[0])
    styles["dream"] = Style(name="dream", backend="no-such-backend", label="Dream")
    # Throughput mode at a rate the filter cannot keep up with (oil at 720p takes 20-30 ms a
    # frame against a frame every 8 ms): frames queue, batches of two reach the backend and it
    # starts its pool.
    app = make_app(style="oil-bold", output_size=(1280, 720), fps=120.0, mode="throughput", styles=styles)
    app.start()
    qtbot.waitUntil(lambda: bool(classic_threads()), timeout=5000)
    first = classic_threads()
    # A style of another backend kind needs a new backend: the old one is closed, its threads end
    # (the new kind fails here, so the fallback style starts a classic backend of its own).
    with qtbot.waitSignal(app.style_changed, timeout=5000, check_params_cb=lambda n: n == "oil"):
        app.style_actions["dream"].trigger()
    assert not [t.name for t in first if t.is_alive()]
    qtbot.waitUntil(lambda: bool(classic_threads()), timeout=5000)
    second = classic_threads()
    assert not set(second) & set(first)
    assert app.shutdown()
    # Ended by the worker's close, not left for the garbage collector.
    assert not [t.name for t in second if t.is_alive()]


def test_the_settings_frame_rate_reaches_a_clip(qtbot, make_app):
    """A clip plays at its own speed; the rate set in Settings is how many of its frames a
    second are sent (the demo clip is 24 fps)."""
    app = make_app(source="demo", fps=8.0)
    app.start()
    next_pair(qtbot, app)
    qtbot.waitUntil(lambda: app.worker._runner is not None and app.worker._runner.source.fps == 8.0, timeout=5000)
