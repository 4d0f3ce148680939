"""The tray menu, the preview, the window shortcuts, the region picker, the no-tray window, and
the diffusion styles joining the menu only when they can run."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QMainWindow, QSystemTrayIcon

from desktop_helpers import next_pair, pattern_frame


def test_tray_menu_has_every_control(qtbot, make_app):
    app = make_app(style="toon")
    assert QSystemTrayIcon.isSystemTrayAvailable()
    assert app.tray is not None and app.tray.isVisible() and app.window is None
    texts = [a.text() for a in app.menu.actions()]
    for expected in ("Cartoon  ✓", "Pencil sketch", "Oil paint", "&Source", "&Output", "&Record to file…",
                     "&Pause", "Show &preview", "&Settings…", "&Help", "&Quit"):
        assert expected in texts, expected
    # The running style is marked in words and in bold, not only by a radio mark.
    assert app.style_actions["toon"].font().bold() and not app.style_actions["sketch"].font().bold()
    # Styles: one exclusive radio group, each with an icon.
    assert app.style_group.isExclusive()
    assert all(a.isCheckable() and not a.icon().isNull() for a in app.style_group.actions())
    assert [a.data() for a in app.style_group.actions() if a.isChecked()] == ["toon"]
    # Source: the Xvfb monitor (from mss), a region picker, a file chooser, the demo clip.
    sources = app.source_actions
    assert "screen:1" in sources and sources["screen:1"].text() == "Screen 1 (1280×720)"
    assert "demo" in sources and "pattern" in sources and sources["pattern"].isChecked()
    assert app.region_action.isEnabled() and app.file_action.text() == "Video file…"
    menu_texts = [a.text() for a in app.source_menu.actions()]
    assert "No camera found" in menu_texts  # no /dev/video* on this machine
    assert [a.text() for a in app.output_menu.actions()] == ["Virtual camera", "MJPEG stream", "Copy MJPEG URL"]


def test_tray_icon_follows_state(qtbot, make_app):
    from stylecam.desktop.icons import state_icon

    app = make_app()
    app.start()
    qtbot.waitUntil(lambda: app.state == "running", timeout=3000)
    assert app.tray.icon().cacheKey() == state_icon("running").cacheKey()
    app.pause_action.trigger()
    qtbot.waitUntil(lambda: app.state == "paused", timeout=3000)
    assert app.tray.icon().cacheKey() == state_icon("paused").cacheKey()
    assert "paused" in app.status_action.text()


def test_preview_shows_input_and_output_with_numbers(qtbot, make_app):
    app = make_app(style="sketch")
    app.start()
    app.preview_action.trigger()
    qtbot.waitExposed(app.preview)
    pair = next_pair(qtbot, app, lambda p: p.style == "sketch")
    qtbot.waitUntil(lambda: app.preview.frames_shown > 0 and "fps" in app.preview.overlay_text(), timeout=3000)
    assert "latency" in app.preview.overlay_text()
    shot = app.preview.grab().toImage()
    w = shot.width()
    # Left half: the colourful test card; right half: the grey pencil sketch.
    left = _colourfulness(shot, 0, w // 2)
    right = _colourfulness(shot, w // 2, w)
    assert left > 3 * right, (left, right)
    assert pair.input.shape == pair.output.shape


def _colourfulness(image, x0, x1):
    from PySide6.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, :img.width() * 3]
    arr = arr.reshape(img.height(), img.width(), 3)[40:-10, x0 + 10:x1 - 10].astype(np.int16)
    return float(np.abs(arr[..., 0] - arr[..., 1]).mean() + np.abs(arr[..., 1] - arr[..., 2]).mean())


def test_window_shortcut_cycles_styles_and_pauses(qtbot, make_app):
    app = make_app(style="toon")
    app.start()
    app.show_preview()
    _activate(qtbot, app.preview)
    names = list(app.styles)
    after_toon = names[(names.index("toon") + 1) % len(names)]
    qtbot.keyClick(app.preview, Qt.Key.Key_S)
    assert app.style_actions[after_toon].isChecked()
    next_pair(qtbot, app, lambda p: p.style == after_toon)
    qtbot.keyClick(app.preview, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    assert app.style_actions["toon"].isChecked()
    qtbot.keyClick(app.preview, Qt.Key.Key_Space)
    assert app.pause_action.isChecked()
    next_pair(qtbot, app, lambda p: p.paused)


def _activate(qtbot, window):
    # Xvfb has no window manager to give a new window the focus; window shortcuts need it.
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)


def test_region_picker_drag_selects_screen_region(qtbot, make_app):
    app = make_app()
    app.start()
    next_pair(qtbot, app)
    app.region_action.trigger()
    picker = app.picker
    qtbot.waitExposed(picker)
    assert picker.geometry().size().width() == 1280
    with qtbot.waitSignal(app.source_changed, timeout=5000,
                          check_params_cb=lambda s: s == "screen:100,50,320,200"):
        qtbot.mousePress(picker, Qt.MouseButton.LeftButton, pos=QPoint(100, 50))
        qtbot.mouseMove(picker, QPoint(300, 180))
        qtbot.mouseRelease(picker, Qt.MouseButton.LeftButton, pos=QPoint(421, 251))  # odd: made even
    assert not picker.isVisible()
    assert app.source_actions["screen:100,50,320,200"].isChecked()
    assert app.source_actions["screen:100,50,320,200"].text() == "Region 100,50,320,200"
    pair = next_pair(qtbot, app, lambda p: not np.array_equal(p.input, pattern_frame(p.index)))
    assert pair.input.shape == (120, 160, 3)  # the region, fitted to the output size
    assert app.store.load().source == "screen:100,50,320,200"


def test_region_picker_escape_cancels(qtbot, make_app):
    app = make_app()
    app.region_action.trigger()
    qtbot.waitExposed(app.picker)
    with qtbot.waitSignal(app.picker.cancelled, timeout=2000):
        qtbot.keyClick(app.picker, Qt.Key.Key_Escape)
    assert app.source_spec == "pattern"


def test_main_window_stands_in_without_tray(qtbot, make_app, monkeypatch):
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: False))
    app = make_app(style="toon")
    assert app.tray is None and isinstance(app.window, QMainWindow)
    _activate(qtbot, app.window)
    menus = {a.text(): a.menu() for a in app.window.menuBar().actions()}
    assert set(menus) == {"&Stream", "St&yle", "&Source", "&Output", "&Help"}
    assert menus["St&yle"].actions() == app.style_group.actions()
    app.start()
    menus["St&yle"].actions()[[a.data() for a in app.style_group.actions()].index("sketch")].trigger()
    next_pair(qtbot, app, lambda p: p.style == "sketch")
    qtbot.keyClick(app.window, Qt.Key.Key_S)  # the same shortcut as the preview
    assert not app.style_actions["sketch"].isChecked()
    app.notify("Hello", "a message", "info")
    assert "a message" in app.window.message_label.text()
    # Every tray action is here too, and the buttons say what they will do now.
    assert app.record_action in menus["&Stream"].actions()
    buttons = app.window.buttons
    assert buttons["record"].text() == "Record to file" and buttons["pause"].text() == "Pause"
    qtbot.mouseClick(buttons["pause"], Qt.MouseButton.LeftButton)
    assert app.pause_action.isChecked() and buttons["pause"].isChecked()
    assert buttons["pause"].text() == app.pause_action.text().replace("&", "") == "Resume"
    with qtbot.waitSignal(app.quit_requested, timeout=3000):
        app.window.close()
    assert app.worker is None


def test_copy_mjpeg_url_puts_the_served_url_on_the_clipboard(qtbot, make_app):
    import urllib.request

    app = make_app(mjpeg=True, mjpeg_port=0 + 18791)
    app.start()
    next_pair(qtbot, app)
    qtbot.waitUntil(lambda: app.worker.hub.sink("mjpeg") is not None, timeout=3000)
    app.copy_url_action.trigger()
    url = QApplication.clipboard().text()
    assert url == "http://127.0.0.1:18791/stream.mjpg"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert b"\xff\xd8" in reply.read(4096)  # a JPEG starts
    app.mjpeg_action.trigger()  # off
    qtbot.waitUntil(lambda: app.worker.hub.sink("mjpeg") is None, timeout=3000)
    assert not app.copy_url_action.isEnabled()


def test_diffusion_styles_join_the_menu_only_when_they_can_run(qtbot, make_app, tmp_path):
    """No model: hidden, with a hint. A bundle: offered, and the backend is made in the worker thread."""
    pytest.importorskip("torch")
    app = make_app(probe_diffusion=True, bundle=str(tmp_path / "no-such-bundle"), style="toon")
    if not app.diffusion_styles:
        pytest.skip("this build has no diffusion styles")
    name = app.diffusion_styles[0].name
    assert name not in app.style_actions and app.ai_hint_action.text() == "AI styles: checking…"
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000) as blocker:
        app.start()
    ok, why = blocker.args
    assert not ok and "no-such-bundle" in why
    assert not any(s.backend == "diffusion" for s in app.styles.values())
    assert app.ai_hint_action.isVisible() and app.ai_hint_action.text() == "AI styles: get a model…"

    from stylecam.core.stylize.bundle import write_tiny_bundle

    bundle = write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    with qtbot.waitSignal(app.diffusion_checked, timeout=30000) as blocker:
        app.apply_settings(dataclasses.replace(app.settings, bundle=str(bundle)))
    assert blocker.args == [True, ""]
    assert name in app.style_actions and not app.ai_hint_action.isVisible()
    assert app.worker.config.bundle == str(bundle)
    app.style_actions[name].trigger()
    pair = next_pair(qtbot, app, lambda p: p.style == name and not p.paused, timeout=30000)
    assert pair.output.shape == pair.input.shape and not np.array_equal(pair.output, pair.input)
    worker = app.worker
    assert worker.backend_thread is not None and worker.backend_thread != threading.get_ident()
    assert type(worker._backend.inner.inner).__name__ == "DiffusionBackend"
    # Back to a classic style: a new backend, made in the worker thread too.
    app.style_actions["toon"].trigger()
    next_pair(qtbot, app, lambda p: p.style == "toon")
    assert type(worker._backend.inner.inner).__name__ == "ClassicBackend"
    # The model goes away (a folder that is not there): the AI styles leave the menus again, and
    # the one that runs gives way to the fallback style.
    app.style_actions[name].trigger()
    next_pair(qtbot, app, lambda p: p.style == name and not p.paused, timeout=30000)
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000) as blocker:
        app.apply_settings(dataclasses.replace(app.settings, bundle=str(tmp_path / "moved-away")))
    assert blocker.args[0] is False
    assert name not in app.style_actions and name not in app.styles and app.ai_hint_action.isVisible()
    assert app.style_name == "oil" and app.style_actions["oil"].isChecked()
    next_pair(qtbot, app, lambda p: p.style == "oil", timeout=10000)


def test_get_the_ai_styles_over_a_folder_that_is_gone_uses_the_fetched_model(qtbot, make_app, tmp_path, offline,
                                                                            monkeypatch):
    """Settings name a model folder that is not there; the guide's "Get the AI styles" fetches the
    default model (the download is the seam: a child that puts the tiny model into the hub cache),
    and the AI styles come, from the fetched model, instead of the guide asking again."""
    pytest.importorskip("torch")
    import sys

    from stylecam.core.stylize.bundle import write_tiny_bundle
    from stylecam.desktop import guide

    tiny = write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    app = make_app(probe_diffusion=True, bundle=str(tmp_path / "moved-away"), style="toon")
    if not app.diffusion_styles:
        pytest.skip("this build has no diffusion styles")
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000, check_params_cb=lambda ok, why: not ok):
        app.start()
    app.show_guide()
    assert app.guide.ai_row.isVisibleTo(app.guide) and "fetch the default one" in app.guide.ai_row.text.text()
    download = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "from hub_cache import fill_cache_with_tiny_sd_turbo; "
                "fill_cache_with_tiny_sd_turbo(Path(sys.argv[2]), Path(sys.argv[3])); print('100%|done')")
    tests = str(Path(__file__).resolve().parents[1])
    child = [sys.executable, "-c", download, tests, str(offline), str(tiny)]
    monkeypatch.setattr(guide, "models_command", lambda: child)
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000) as blocker:
        app.guide.ai_get.click()
    assert blocker.args[0] is True, blocker.args
    assert app.settings.bundle == "" and app.store.load().bundle == ""
    assert app.diffusion_styles[0].name in app.style_actions and not app.guide.ai_row.isVisibleTo(app.guide)


def test_the_packaged_app_pulls_models_with_its_own_command_line_program(monkeypatch, tmp_path):
    """Frozen, ``sys.executable`` is the tray's program, which takes no ``-m``: the pull runs the
    ``stylecam`` program beside it (installer/pyinstaller/entry.py: one program, two names)."""
    import sys

    from stylecam.core import doctor
    from stylecam.desktop import guide

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "stylecam-tray"))
    assert guide.models_command() == [str(tmp_path / "stylecam"), *doctor.MODELS_PULL_COMMAND.split()[1:]]
    monkeypatch.delattr(sys, "frozen")
    assert guide.models_command()[1:3] == ["-m", "stylecam.core"]


def _remote_app(make_app, **settings):
    """A tray app set to paint on a remote GPU that nothing answers at (no local model)."""
    app = make_app(probe_diffusion=True, stylize_on="remote", remote_url="http://127.0.0.1:9", style="toon",
                   **settings)
    if not app.diffusion_styles:
        pytest.skip("this build has no diffusion styles")
    return app


def test_ai_styles_leave_the_menu_when_painting_comes_back_here_without_a_model(qtbot, make_app, offline):
    pytest.importorskip("torch")
    app = _remote_app(make_app)
    app.start()
    name = app.diffusion_styles[0].name
    assert name in app.style_actions  # the remote GPU runs them
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000) as blocker:
        app.apply_settings(dataclasses.replace(app.settings, stylize_on="this-computer"))
    assert blocker.args[0] is False
    assert name not in app.style_actions and app.ai_hint_action.isVisible()
    assert "--" not in app.ai_hint_action.toolTip()  # the reason, in the app's words


def test_a_refused_remote_gpu_asks_whether_ai_styles_run_here(qtbot, make_app, offline, tmp_path):
    pytest.importorskip("torch")
    app = _remote_app(make_app, remote_token_file=str(tmp_path / "no-such-token"))
    name = app.diffusion_styles[0].name
    # Offered at once for the remote GPU; the token file is not there, so the worker paints here
    # instead, and asks whether they run here.
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000, check_params_cb=lambda ok, why: not ok):
        app.start()
    assert any(h[0] == "Cannot use the remote GPU" for h in app.history)
    assert name not in app.style_actions and app.ai_hint_action.isVisible()
    next_pair(qtbot, app, lambda p: p.style == "toon")


def _damaged_model_line(qtbot, make_app, bundle: str, damaged: Path) -> str:
    """Start a tray app over a bundle whose U-Net weights were cut short; check what the model
    probe said, and return the guide's line for the AI styles."""
    from stylecam.desktop.status import DAMAGED_MODEL

    os.truncate(damaged, damaged.stat().st_size // 2)
    app = make_app(probe_diffusion=True, bundle=bundle, style="toon")
    if not app.diffusion_styles:
        pytest.skip("this build has no diffusion styles")
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000) as blocker:
        app.start()
    ok, why = blocker.args
    assert not ok and why.startswith(DAMAGED_MODEL) and f"{damaged} is damaged" in why
    assert app.ai_hint_action.toolTip() == why
    app.show_guide()
    assert app.guide.ai_row.isVisibleTo(app.guide)
    text = app.guide.ai_row.text.text()
    assert "--" not in text and "stylecam " not in text  # the user's words, no command line
    return text


def test_a_damaged_model_folder_is_named_and_the_guide_asks_for_a_good_copy(qtbot, make_app, tmp_path):
    pytest.importorskip("torch")
    from stylecam.core.stylize.bundle import write_tiny_bundle

    bundle = write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    text = _damaged_model_line(qtbot, make_app, str(bundle), bundle / "unet" / "diffusion_pytorch_model.safetensors")
    assert text.startswith("AI styles: files in the model folder are damaged")
    assert "give a good copy in Settings > Model bundle" in text


def test_a_damaged_download_of_the_default_model_is_offered_again(qtbot, make_app, tmp_path, offline):
    pytest.importorskip("torch")
    from hub_cache import fill_cache_with_tiny_sd_turbo, snapshot_of

    from stylecam.core.stylize.bundle import write_tiny_bundle

    tiny = write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    fill_cache_with_tiny_sd_turbo(offline, tiny)  # the default stack as the hub cache holds it
    unet = snapshot_of(offline, "stabilityai/sd-turbo") / "unet"
    text = _damaged_model_line(qtbot, make_app, "", unet / "diffusion_pytorch_model.safetensors")
    assert text.startswith("AI styles: the model's files are damaged (a download was cut short); fetch it again")


def test_a_missing_model_in_a_notification_names_the_setting_not_the_flag(offline):
    """The backend's own words (no bundle given, none in the cache) as the tray shows them."""
    pytest.importorskip("torch")
    from stylecam.core.stylize.base import BackendError
    from stylecam.core.stylize.diffusion import DiffusionBackend
    from stylecam.desktop.notify import no_cli_flags

    with pytest.raises(BackendError) as e:
        DiffusionBackend(None, device="cpu")
    assert "--bundle DIR" in str(e.value)
    shown = no_cli_flags(str(e.value))
    assert shown.endswith("or give a model folder in Settings > Model bundle") and "--" not in shown


def test_flags_leave_the_gui_text_and_paths_stay_whole():
    from stylecam.desktop.notify import no_cli_flags

    path = "/home/ana/.cache/huggingface/hub/models--stabilityai--sd-turbo/unet/x.safetensors"
    assert no_cli_flags(f"{path} is damaged") == f"{path} is damaged"
    shown = no_cli_flags(f"run it with `--device cpu` or --fps=15 (--loop); see {path}")
    assert "--device" not in shown and "--fps" not in shown and "--loop" not in shown and shown.endswith(path)


def _started_with_a_tiny_model(qtbot, make_app, tmp_path, **settings):
    """A tray app over a tiny sd-turbo bundle on disk, started, its AI styles offered: (app,
    the first AI style's name, the bundle's folder). Skips where this build has no AI styles."""
    pytest.importorskip("torch")
    from stylecam.core.stylize.bundle import write_tiny_bundle

    bundle = write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    app = make_app(probe_diffusion=True, bundle=str(bundle), style="toon", **settings)
    if not app.diffusion_styles:
        pytest.skip("this build has no diffusion styles")
    with qtbot.waitSignal(app.diffusion_checked, timeout=60000):
        app.start()
    return app, app.diffusion_styles[0].name, bundle


def test_speed_up_ai_compiles_the_ai_styles_and_says_the_first_start_is_slow(qtbot, make_app, tmp_path):
    """The Settings switch is the tray's STYLECAM_COMPILE=1: a new diffusion backend in compile
    mode (on this CPU it runs eagerly, the same pictures), announced before its long first start."""
    app, name, _ = _started_with_a_tiny_model(qtbot, make_app, tmp_path)
    app.style_actions[name].trigger()
    next_pair(qtbot, app, lambda p: p.style == name and not p.paused, timeout=30000)
    worker = app.worker
    assert worker._backend.inner.inner._engine.settings.mode == "graphs"  # the default
    notes = []
    worker.notify.connect(lambda title, text, level: notes.append((title, text, level)))
    app.apply_settings(dataclasses.replace(app.settings, speed_up_ai=True))
    assert worker.config.compiled is True
    qtbot.waitUntil(lambda: worker._backend is not None and worker._backend.inner.inner._engine is not None
                    and worker._backend.inner.inner._engine.settings.mode == "compile", timeout=30000)
    pair = next_pair(qtbot, app, lambda p: p.style == name and not p.paused, timeout=30000)
    assert not np.array_equal(pair.output, pair.input)
    assert any(title == "Getting the AI style ready" and "first start" in text and level == "info"
               for title, text, level in notes)
    assert all("STYLECAM" not in text and "--" not in text for _, text, _ in notes)  # the user's words
    # A classic style is not compiled and not announced.
    notes.clear()
    app.style_actions["toon"].trigger()
    next_pair(qtbot, app, lambda p: p.style == "toon")
    assert not any(title == "Getting the AI style ready" for title, _, _ in notes)


def test_ai_speed_that_cannot_compile_keeps_the_ai_style_and_says_so(qtbot, make_app, tmp_path, monkeypatch):
    """Compiling fails (here at the engine's first batch, as on a machine without a C compiler
    for Triton): the AI style still paints, uncompiled, and the user is told why."""
    pytest.importorskip("torch")
    from stylecam.core.stylize.engine import StreamEngine

    real_submit = StreamEngine.submit

    def submit(self, images, *args, **kw):  # compiling fails at the first batch, as Triton does
        if self.settings.mode == "compile":
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")
        return real_submit(self, images, *args, **kw)

    monkeypatch.setattr(StreamEngine, "submit", submit)
    app, name, _ = _started_with_a_tiny_model(qtbot, make_app, tmp_path, speed_up_ai=True)
    worker = app.worker
    notes = []
    worker.notify.connect(lambda title, text, level: notes.append((title, text, level)))
    app.style_actions[name].trigger()
    pair = next_pair(qtbot, app, lambda p: p.style == name and not p.paused, timeout=30000)
    assert not np.array_equal(pair.output, pair.input)  # the AI style, not a classic fallback
    assert worker._backend.inner.inner._engine.settings.mode == "graphs" and worker.config.compiled is False
    qtbot.waitUntil(lambda: any(t == "AI speed is off for now" for t, _, _ in notes), timeout=5000)
    title, text, level = next(n for n in notes if n[0] == "AI speed is off for now")
    assert "Failed to find C compiler" in text and level == "warning"
    assert not any(t.endswith("is not available") for t, _, _ in notes)  # the style was kept


def test_an_ai_style_that_cannot_start_hands_the_menu_to_the_style_that_runs(qtbot, make_app, tmp_path):
    """The model goes missing after the menu offered it: the worker runs the fallback style, and
    the menu's tick, the saved style and the strength slider follow it (so the next start too)."""
    import shutil

    app, name, bundle = _started_with_a_tiny_model(qtbot, make_app, tmp_path)
    next_pair(qtbot, app, lambda p: p.style == "toon")
    shutil.rmtree(bundle)
    notes = []
    app.worker.notify.connect(lambda title, text, level: notes.append((title, text, level)))
    with qtbot.waitSignal(app.worker.style_fallback, timeout=30000) as blocker:
        app.style_actions[name].trigger()
    fallback = app.fallback_style.name
    assert blocker.args == [fallback] and fallback != name
    # Said in the user's terms: which folder is gone, and what runs instead.
    qtbot.waitUntil(lambda: any(t.endswith("is not available") for t, _, _ in notes), timeout=3000)
    text = next(text for t, text, _ in notes if t.endswith("is not available"))
    assert f"model folder {bundle} does not exist" in text and "hub id" not in text
    assert f"Running the {app.fallback_style.title} style instead" in text
    qtbot.waitUntil(lambda: app.style_name == fallback, timeout=3000)
    assert app.style_actions[fallback].isChecked() and not app.style_actions[name].isChecked()
    assert app.style_actions[fallback].font().bold() and not app.style_actions[name].font().bold()
    assert app.store.load().style == fallback
    next_pair(qtbot, app, lambda p: p.style == fallback)
