"""The tray app against what issue 19 found: a saved camera that is gone, a settings file that is
a pipe or a folder, hostile style files. The app starts, says so once, and streams."""

from __future__ import annotations

import os
import threading

from desktop_helpers import next_pair


def test_a_saved_camera_that_is_gone_falls_back_to_the_demo_clip_and_says_so(qtbot, make_app):
    notes = []
    app = make_app(source="camera:/dev/video42")
    app.notified.connect(lambda *n: notes.append(n))
    # Said at construction, before the signal above existed: it is the app's last notification.
    title, message, level = app.last_notification
    assert title == "Camera not found" and level == "warning"
    full = ("The camera in your settings (/dev/video42) is not connected. Showing the demo clip "
            "instead; pick a source in the Source menu.")
    # The notification is at most two lines; Details holds the whole text.
    assert app.last_details == full and full.startswith(message.rstrip(";…. "))
    app.start()
    assert next_pair(qtbot, app, timeout=10000) is not None  # a picture, not an error
    assert app.source_spec == "demo" and app.state == "running"
    assert app.store.load().source == "camera:/dev/video42"  # kept for when it is plugged back in


def test_a_saved_camera_that_does_not_open_falls_back_once(qtbot, make_app, tmp_path):
    not_a_camera = tmp_path / "video0"
    not_a_camera.write_bytes(b"\x00" * 64)  # there, but no driver (or program) makes it deliver
    app = make_app(source=f"camera:{not_a_camera}")
    with qtbot.waitSignal(app.notified, timeout=10000,
                          check_params_cb=lambda t, m, lvl: t == "Camera not available"):
        app.start()
    assert next_pair(qtbot, app, timeout=10000) is not None
    assert app.source_spec == "demo"
    assert app.store.load().source == f"camera:{not_a_camera}"


def _load_in_thread(path):
    from stylecam.desktop.settings import SettingsStore

    result = {}

    def load():
        store = SettingsStore(path)
        result["settings"] = store.load()
        result["warnings"] = list(store.warnings)
        store.update(style="sketch")
        result["after"] = store.load().style

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "loading the settings hung"
    return result


def test_a_settings_file_that_is_a_pipe_or_a_folder_never_hangs(tmp_path):
    from stylecam.desktop.settings import AppSettings

    pipe = tmp_path / "stylecam.conf"
    os.mkfifo(pipe)
    folder = tmp_path / "folder.conf"
    folder.mkdir()
    for path, what in ((pipe, "a named pipe"), (folder, "a folder")):
        r = _load_in_thread(path)
        assert r["settings"] == AppSettings()
        assert r["warnings"] == [f"settings {path} is {what}, not a file; using the defaults, and changes are not "
                                 "saved. Move it away so stylecam can create its settings file"]
        assert r["after"] == "sketch"  # changes live on for this session
    assert os.listdir(folder) == []  # nothing written into the folder or the pipe


def test_settings_that_cannot_be_written_are_said_once_and_the_app_goes_on(qtbot, tmp_path):
    """A file where the settings folder should be: the first change says the settings are not
    saved (once), and every change still takes effect for this session."""
    from stylecam.desktop.settings import SettingsStore
    from stylecam.desktop.tray import TrayApp

    blocker = tmp_path / "config"
    blocker.write_text("a file where a folder should be")
    path = blocker / "stylecam.conf"
    app = TrayApp(SettingsStore(path), probe_diffusion=False)
    shown = []
    app.notified.connect(lambda title, *rest: shown.append(title))
    try:
        app.start()
        next_pair(qtbot, app, timeout=8000)
        app.select_style("sketch")
        app.select_style("toon")
        assert shown.count("Settings are not saved") == 1
        _, short, details = next(h for h in app.history if h[0] == "Settings are not saved")
        said = f"{short} {details or ''}"
        assert str(path) in said and "cannot be written" in said and "until stylecam quits" in said
        assert app.style_name == "toon" and app.settings.style == "toon"
        next_pair(qtbot, app, lambda p: p.style == "toon")
    finally:
        assert app.shutdown()
    assert blocker.read_text() == "a file where a folder should be"


def test_the_tray_starts_with_hostile_style_files_and_the_good_one_is_offered(qtbot, make_app, tmp_path, caplog):
    folder = tmp_path / "config" / "stylecam" / "styles"  # the desktop fixtures' XDG_CONFIG_HOME
    folder.mkdir(parents=True)
    (folder / "good.toml").write_text('[[style]]\nname = "my-toon"\nlabel = "My \\u001b[31mtoon"\n'
                                      'params = { effect = "toon" }\n')
    (folder / "deep.toml").write_text("x = " + "[" * 500 + "]" * 500 + "\n")
    (folder / "wrongtype.toml").write_text('[[style]]\nname = "bad"\nbackend = ["classic"]\n')
    os.mkfifo(folder / "pipe.toml")
    (folder / "zero.toml").symlink_to("/dev/zero")
    app = make_app(style="my-toon")
    assert "my-toon" in app.styles and app.styles["my-toon"].title == "My toon"
    for name in ("deep.toml", "wrongtype.toml", "pipe.toml", "zero.toml"):
        assert sum(f"skipped style file {folder / name}:" in r.getMessage() for r in caplog.records) == 1, name
    app.start()
    pair = next_pair(qtbot, app, lambda p: p.style == "my-toon", timeout=10000)
    assert pair.style == "my-toon"
