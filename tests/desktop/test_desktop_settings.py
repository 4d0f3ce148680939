"""Settings: typed defaults, validation, migration, the dialog round trip, and login autostart."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess

import pytest
from PySide6.QtCore import QSettings

from stylecam.desktop import settings as settings_mod
from stylecam.desktop.settings import (SCHEMA_VERSION, AppSettings, SettingsStore, autostart_path,
                                       set_autostart)
from stylecam.desktop.settings_dialog import SettingsDialog

from desktop_helpers import next_pair


def raw_ini(path, **values):
    qs = QSettings(str(path), QSettings.Format.IniFormat)
    for key, value in values.items():
        qs.setValue(key, value)
    qs.sync()


def test_first_start_gives_typed_defaults_and_stamps_version(tmp_path):
    store = SettingsStore(tmp_path / "s.ini")
    s = store.load()
    assert s == AppSettings()
    assert isinstance(s.fps, float) and s.output_size == (1280, 720) and s.mirror is False
    assert s.batch_size == 1
    assert store.warnings == []
    assert QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat).value("schema_version") == str(SCHEMA_VERSION)


def test_saved_values_read_back_with_their_types(tmp_path):
    store = SettingsStore(tmp_path / "s.ini")
    wanted = AppSettings(style="sketch", source="screen:10,20,640,360", output_size=None, fps=12.5,
                         mirror=True, mode="throughput", device="cuda:1", bundle="owner/model", start_on_login=False,
                         virtual_camera=False, mjpeg=True, mjpeg_port=9123)
    store.save(wanted)
    again = SettingsStore(tmp_path / "s.ini").load()
    assert again == wanted
    assert again.batch_size is None


@pytest.mark.parametrize("key,bad,default", [
    ("fps", "fast", 30.0),
    ("fps", "500", 30.0),
    ("output_size", "12x9000", (1280, 720)),
    ("output_size", "641x480", (1280, 720)),
    ("mirror", "maybe", False),
    ("speed_up_ai", "very", False),
    ("mode", "turbo", "latency"),
    ("device", "gpu0", "auto"),
    ("mjpeg_port", "80", 8090),
    ("source", "webcam", "auto"),
    ("style", "Oil Paint!", "oil"),
])
def test_corrupt_value_becomes_default_with_warning(tmp_path, caplog, key, bad, default):
    raw_ini(tmp_path / "s.ini", schema_version=1, **{key: bad})
    store = SettingsStore(tmp_path / "s.ini")
    with caplog.at_level(logging.WARNING, logger="stylecam.desktop.settings"):
        s = store.load()
    assert getattr(s, key) == default
    assert len(store.warnings) == 1
    assert f"{key} = {bad!r} is not valid" in store.warnings[0] and "using the default" in store.warnings[0]
    assert store.warnings[0] in caplog.text


def test_save_rejects_invalid_settings(tmp_path):
    store = SettingsStore(tmp_path / "s.ini")
    with pytest.raises(ValueError, match="setting fps = 0.5"):
        store.save(AppSettings(fps=0.5))


def test_unversioned_file_is_read_unchanged_and_migrated_by_the_next_save_after_a_copy(tmp_path):
    raw_ini(tmp_path / "s.ini", style="toon", fps="15")
    original = (tmp_path / "s.ini").read_bytes()
    store = SettingsStore(tmp_path / "s.ini")
    s = store.load()
    assert (s.style, s.fps) == ("toon", 15.0) and store.warnings == []
    assert (tmp_path / "s.ini").read_bytes() == original  # loading writes nothing
    store.save(dataclasses.replace(s, mirror=True))
    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    assert qs.value("schema_version") == "1" and qs.value("mirror") == "true" and qs.value("style") == "toon"
    assert (tmp_path / "s.ini.bak-v0").read_bytes() == original
    store.save(dataclasses.replace(s, mirror=False))  # a current file: no more copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ini", "s.ini.bak-v0"]


def test_a_changed_older_file_gets_its_own_copy_and_an_old_copy_is_kept(tmp_path):
    (tmp_path / "s.ini").write_bytes(b"[General]\nstyle=toon\n")
    (tmp_path / "s.ini.bak-v0").write_bytes(b"an older copy")
    SettingsStore(tmp_path / "s.ini").update(fps=20.0)
    assert (tmp_path / "s.ini.bak-v0").read_bytes() == b"an older copy"
    assert (tmp_path / "s.ini.bak-v0.2").read_bytes() == b"[General]\nstyle=toon\n"


def test_migration_steps_run_in_order_and_are_written_by_the_next_save(tmp_path, monkeypatch):
    # A future schema 3: step 1 renamed "fps" to "rate", step 2 doubled it. A version-1 file
    # must come out with both steps applied, in order.
    seen = []

    def rename(values):
        seen.append(dict(values))
        return {"rate": values["fps"], "fps": None}

    def double(values):
        seen.append(dict(values))
        return {"rate": str(2 * int(values["rate"]))}

    monkeypatch.setattr(settings_mod, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(settings_mod.MIGRATIONS, 1, rename)
    monkeypatch.setitem(settings_mod.MIGRATIONS, 2, double)
    raw_ini(tmp_path / "s.ini", schema_version="1", fps="24", style="toon")
    original = (tmp_path / "s.ini").read_bytes()
    store = SettingsStore(tmp_path / "s.ini")
    assert store.load().style == "toon"
    assert seen == [{"schema_version": "1", "fps": "24", "style": "toon"},
                    {"schema_version": "1", "rate": "24", "style": "toon"}]
    assert (tmp_path / "s.ini").read_bytes() == original
    store.save(AppSettings(style="sketch"))
    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    assert qs.value("rate") == "48" and str(qs.value("schema_version")) == "3" and qs.value("style") == "sketch"
    assert qs.value("fps") == "30"  # this version's own key, written by the save
    assert (tmp_path / "s.ini.bak-v1").read_bytes() == original


def test_newer_schema_is_read_without_downgrade(tmp_path):
    raw_ini(tmp_path / "s.ini", schema_version=7, style="sketch")
    store = SettingsStore(tmp_path / "s.ini")
    assert store.load().style == "sketch"
    assert "newer stylecam (schema 7)" in store.warnings[0]
    assert str(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat).value("schema_version")) == "7"


def test_dialog_widgets_to_settings_and_back_after_restart(qtbot, make_app, tmp_path):
    app = make_app(style="toon")
    app.start()
    app.show_settings()
    dialog = app.settings_dialog  # deletes itself on close
    assert dialog.style_box.currentData() == "toon"
    dialog.style_box.setCurrentIndex(dialog.style_box.findData("sketch"))
    dialog.source_box.setCurrentIndex(dialog.source_box.findData("demo"))
    dialog.size_box.setCurrentText("640x480")
    dialog.fps_box.setValue(15)
    dialog.mirror_box.setChecked(True)
    dialog.mode_box.setCurrentIndex(dialog.mode_box.findData("throughput"))
    dialog.device_box.setCurrentText("cuda:1")
    dialog.bundle_edit.setText(str(tmp_path / "my-bundle"))
    dialog.speed_box.setChecked(True)
    dialog.login_box.setChecked(True)
    dialog.mjpeg_box.setChecked(True)
    dialog.port_box.setValue(0 + 18765)
    with qtbot.waitSignal(app.source_changed, timeout=5000, check_params_cb=lambda s: s == "demo"):
        dialog.accept()

    saved = SettingsStore(tmp_path / "settings.ini").load()
    assert saved == AppSettings(style="sketch", source="demo", output_size=(640, 480), fps=15.0, mirror=True,
                                mode="throughput", device="cuda:1", bundle=str(tmp_path / "my-bundle"),
                                speed_up_ai=True, start_on_login=True, virtual_camera=False, mjpeg=True,
                                mjpeg_port=18765)
    # The running app took the changes.
    assert app.style_actions["sketch"].isChecked() and app.mjpeg_action.isChecked()
    assert app.worker.config.size == (640, 480) and app.worker.config.batch_size is None
    assert app.worker.config.compiled is True
    entry = autostart_path().read_text()
    assert "Exec=" in entry and "stylecam" in entry
    app.shutdown()

    # Restart: a new app over the same file shows the same values in every widget.
    from stylecam.desktop.tray import TrayApp

    again = TrayApp(SettingsStore(tmp_path / "settings.ini"), probe_diffusion=False)
    try:
        assert again.style_actions["sketch"].isChecked()
        assert again.source_actions["demo"].isChecked()
        assert again.mjpeg_action.isChecked() and not again.virtualcam_action.isChecked()
        d2 = SettingsDialog(again.settings, list(again.styles.values()), again.source_actions_specs())
        qtbot.addWidget(d2)
        assert d2.style_box.currentData() == "sketch"
        assert d2.source_box.currentData() == "demo"
        assert d2.size_box.currentText() == "640x480"
        assert d2.fps_box.value() == 15.0
        assert d2.mirror_box.isChecked() and d2.login_box.isChecked() and d2.mjpeg_box.isChecked()
        assert d2.mode_box.currentData() == "throughput"
        assert d2.device_box.currentText() == "cuda:1"
        assert d2.bundle_edit.text() == str(tmp_path / "my-bundle")
        assert d2.speed_box.isChecked()
        assert d2.port_box.value() == 18765
        assert d2.read() == saved
    finally:
        again.shutdown()


def test_ok_in_settings_keeps_what_changed_elsewhere_while_it_was_open(qtbot, make_app):
    """Settings is not modal: the strength slider, a style picked from the menu (or the global
    shortcut) and an output turned on from the menu meanwhile are kept when OK applies the form."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(style="toon", mjpeg_port=port)
    app.start()
    next_pair(qtbot, app)
    app.show_settings()
    dialog = app.settings_dialog
    app.show_preview()
    app.preview.strength_slider.setValue(30)
    app.style_actions["sketch"].trigger()
    app.mjpeg_action.trigger()
    dialog.fps_box.setValue(25.0)
    dialog.accept()
    saved = app.store.load()
    assert saved.fps == 25.0 and app.worker.config.fps == 25.0  # what the form changed
    assert app.style_name == "sketch" and saved.style == "sketch"
    assert saved.strength("toon") == 0.3 and app.worker.strengths["toon"] == 0.3
    assert app.mjpeg_action.isChecked() and saved.mjpeg


def test_dialog_refuses_bad_input_and_says_which(qtbot):
    dialog = SettingsDialog(AppSettings(), [], [])
    qtbot.addWidget(dialog)
    dialog.size_box.setCurrentText("huge")
    dialog.accept()
    assert dialog.result_settings() is None
    assert "output size: 'huge' is not valid" in dialog.error_label.text()
    dialog.source_box.setEditText("screen:0,0,320,240")
    dialog.size_box.setCurrentText("source")
    dialog.accept()
    assert dialog.result_settings().source == "screen:0,0,320,240"
    assert dialog.result_settings().output_size is None


def test_start_on_login_toggle_creates_and_removes_autostart_entry(qtbot, make_app):
    app = make_app()
    path = autostart_path()
    assert not path.exists()
    app.apply_settings(AppSettings(**{**app.settings.__dict__, "start_on_login": True}))
    text = path.read_text()
    assert text.startswith("[Desktop Entry]\n") and "Type=Application" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    assert "stylecam" in exec_line
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    app.apply_settings(AppSettings(**{**app.settings.__dict__, "start_on_login": False}))
    assert not path.exists()
    assert app.store.load().start_on_login is False


def test_autostart_exec_quotes_paths_with_spaces(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_mod, "launch_command", lambda: ["/opt/my apps/python", "-m", "stylecam.desktop"])
    path = set_autostart(True)
    assert 'Exec="/opt/my apps/python" -m stylecam.desktop' in path.read_text()
