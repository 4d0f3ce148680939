"""Settings faults: a settings file that is garbage, cut short by a crash, from an older or a
newer stylecam, or holds paths no file can have. The app must start streaming with what can be
read, keep everything the user saved, and say what it replaced; a bad path reaches the stream as
one clear message while the stream goes on with the last source that worked."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from stylecam.core.styles import load_styles  # noqa: E402
from stylecam.desktop.settings import AppSettings, SettingsStore, validate  # noqa: E402
from stylecam.desktop.worker import StreamConfig  # noqa: E402

from reliability_helpers import WorkerProbe, wait_until  # noqa: E402

STYLES, _ = load_styles()


def config_from(settings, source=None) -> StreamConfig:
    """What the tray builds from its settings (TrayApp.stream_config), with a test-sized frame."""
    return StreamConfig(source=source or settings.source, style=STYLES[settings.style], size=(64, 48),
                        fps=settings.fps, mirror=settings.mirror, batch_size=settings.batch_size,
                        device=settings.device, bundle=settings.bundle or None)


def stream_runs(settings, source=None) -> WorkerProbe:
    probe = WorkerProbe(config_from(settings, source), STYLES["oil"])
    with probe:
        assert probe.wait_frames(3), (probe.states, probe.notes)
        assert probe.stop() < 2.0
    return probe


GOOD = b"[General]\nstyle=toon\nfps=12\n"
NOISE = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("content, kept", [
    (b"\0" * 400 + b"\n" + GOOD, True),  # a crash left a block of zeros before the text (delayed allocation)
    (GOOD + NOISE, True),  # garbage after the text
    (b"\0" * 1000, False),  # nothing but zeros
    (NOISE + b"\n" + GOOD, False),  # garbage first: Qt's INI parser gives up on what follows
])
def test_a_corrupt_settings_file_still_starts_the_stream(tmp_path, content, kept):
    path = tmp_path / "settings.ini"
    path.write_bytes(content)
    store = SettingsStore(path)
    settings = store.load()
    validate(settings)  # whatever was read is a valid set of settings
    if kept:
        assert (settings.style, settings.fps) == ("toon", 12.0)  # the readable part survived
    probe = stream_runs(settings, source="pattern")
    assert {p.style for p in probe.pairs} == {settings.style}
    # Reading wrote nothing; the first save keeps the damaged file as it was, beside it.
    assert path.read_bytes() == content
    store.update(mirror=True)
    [backup] = [p for p in tmp_path.iterdir() if p.name.startswith("settings.ini.bak-")]
    assert backup.read_bytes() == content
    assert SettingsStore(path).load().mirror is True


def test_loading_never_rewrites_a_value_it_could_not_decode(tmp_path):
    path = tmp_path / "settings.ini"
    # No schema_version (a file from before versioning) and a Latin-1 path typed into it.
    original = b"[General]\nstyle=toon\nbundle=/home/j\xe9r\xf4me/models\n"
    path.write_bytes(original)
    store = SettingsStore(path)
    settings = store.load()
    assert path.read_bytes() == original  # loading wrote nothing
    assert settings.style == "toon"
    # What Qt decodes is not the folder the user named: the default is used, and the app says so.
    assert settings.bundle == ""
    backup = tmp_path / "settings.ini.bak-v0"
    assert store.warnings == [f"settings {path}: bundle = '/home/j\ufffdr\ufffdme/models' holds bytes that are "
                              f"not UTF-8 text; using the default (none); the file as it was is kept in {backup}. "
                              "Save the file as UTF-8 or set bundle again in Settings"]
    assert backup.read_bytes() == original
    # The app saves a change: the file becomes UTF-8 and current, the copy still holds the bytes.
    store.update(fps=20.0)
    assert b"schema_version=1" in path.read_bytes() and b"fps=20" in path.read_bytes()
    assert backup.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.ini", "settings.ini.bak-v0"]
    stream_runs(SettingsStore(path).load(), source="pattern")


def test_bytes_that_are_not_utf8_in_a_key_this_version_does_not_read_are_kept_in_a_copy(tmp_path):
    path = tmp_path / "settings.ini"
    original = b"[General]\nschema_version=1\nstyle=sketch\nnote=caf\xe9\n"
    path.write_bytes(original)
    store = SettingsStore(path)
    assert store.load().style == "sketch"
    backup = tmp_path / "settings.ini.bak-not-utf8"
    assert store.warnings == [f"settings {path}: line 4 holds bytes that are not UTF-8 text, which a save "
                              f"cannot keep; the file as it was is kept in {backup}"]
    assert path.read_bytes() == original and backup.read_bytes() == original
    store.update(mirror=True)
    assert backup.read_bytes() == original


def test_a_file_no_setting_can_be_read_from_is_kept_in_a_copy_before_a_save(tmp_path):
    path = tmp_path / "settings.ini"
    content = b"\0" * 1000
    path.write_bytes(content)
    store = SettingsStore(path)
    assert store.load() == AppSettings()
    assert path.read_bytes() == content
    backup = tmp_path / "settings.ini.bak-unreadable"
    assert store.warnings == [f"settings {path}: no setting could be read from the file ({len(content)} bytes); "
                              f"using the defaults; the file as it was is kept in {backup}"]
    store.update(style="toon")
    assert backup.read_bytes() == content and SettingsStore(path).load().style == "toon"


def test_a_file_cut_short_mid_write_keeps_the_keys_before_the_cut(tmp_path):
    path = tmp_path / "settings.ini"
    path.write_text("[General]\nschema_version=1\nstyle=sketch\nfps=15\nmirror=true\nsource=file:/tmp/cl")
    store = SettingsStore(path)
    settings = store.load()
    assert (settings.style, settings.fps, settings.mirror) == ("sketch", 15.0, True)
    assert store.warnings == []
    # The half-written source is a path that does not exist: the stream says so, once.
    probe = WorkerProbe(config_from(settings), STYLES["oil"])
    with probe:
        assert wait_until(lambda: probe.notes, 3)
        assert probe.stop() < 2.0
    [(title, message, level)] = probe.notes
    assert title == "Cannot play the video file" and message == "video file not found: /tmp/cl" and level == "error"


def test_an_older_file_is_migrated_and_nothing_the_user_saved_is_lost(tmp_path):
    path = tmp_path / "settings.ini"
    # No schema_version: written before versioning. "quality" is a key this version does not know.
    path.write_text("[General]\nstyle=toon-comic\nfps=24\nmode=throughput\nquality=high\n")
    store = SettingsStore(path)
    settings = store.load()
    assert (settings.style, settings.fps, settings.mode) == ("toon-comic", 24.0, "throughput")
    store.update(mirror=True)  # the app saves a change
    text = path.read_text()
    assert "quality=high" in text and "style=toon-comic" in text and "schema_version=1" in text
    stream_runs(SettingsStore(path).load(), source="pattern")


def test_a_newer_file_is_read_and_its_unknown_keys_survive_a_save(tmp_path):
    path = tmp_path / "settings.ini"
    path.write_text("[General]\nschema_version=9\nstyle=oil-bold\nfps=20\nhdr_tonemap=filmic\n")
    store = SettingsStore(path)
    settings = store.load()
    assert settings.style == "oil-bold" and settings.fps == 20.0
    assert store.warnings == [f"settings {path} were written by a newer stylecam (schema 9); "
                              "reading the keys this version knows"]
    store.update(fps=25.0)
    text = path.read_text()
    assert "hdr_tonemap=filmic" in text and "schema_version=9" in text  # no silent downgrade


@pytest.mark.parametrize("value, said", [
    ("http://evil.example/x.mp4", "expected auto or a source of kind"),
    ("file", None),
])
def test_source_values_from_a_settings_file_are_checked(tmp_path, value, said):
    path = tmp_path / "settings.ini"
    path.write_text(f"[General]\nschema_version=1\nsource={value}\n")
    store = SettingsStore(path)
    settings = store.load()
    if said is None:
        assert settings.source == value and store.warnings == []
    else:
        assert settings.source == "auto" and said in store.warnings[0]


@pytest.mark.parametrize("value, reason", [
    ("file:/tmp/a\\0b.mp4", "the source holds a control character ('\\x00')"),
    ("file:/tmp/a\\nb.mp4", "the source holds a control character ('\\n')"),
    ("camera:/dev/vid\\teo0", "the source holds a control character ('\\t')"),
    ("file:/" + "a" * 5000, "the path is 5001 characters long; give one of at most 4096"),
])
def test_source_paths_no_file_can_have_are_refused_when_read(tmp_path, value, reason):
    path = tmp_path / "settings.ini"
    path.write_text(f"[General]\nschema_version=1\nsource={value}\nstyle=toon\n")
    store = SettingsStore(path)
    settings = store.load()
    assert settings.source == "auto" and settings.style == "toon"
    [warning] = store.warnings  # the app shows it as a "Settings reset" notification
    assert warning.startswith(f"settings {path}: source = {value[:6]!r}"[:-1])
    assert warning.endswith(f" is not valid ({reason}); using the default auto")
    assert len(warning) < 300  # a 5,000-character value is cut short in the message


def test_source_paths_from_settings_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "settings.ini"
    path.write_text("[General]\nschema_version=1\nsource=file:~/clips/a b.mp4\n")
    store = SettingsStore(path)
    assert store.load().source == f"file:{tmp_path}/home/clips/a b.mp4" and store.warnings == []
    path.write_text("[General]\nschema_version=1\nsource=camera:~/cam\n")
    assert store.load().source == f"camera:{tmp_path}/home/cam"
    path.write_text("[General]\nschema_version=1\nsource=camera:2\n")
    assert store.load().source == "camera:2"


@pytest.mark.parametrize("bad, said", [
    ("file:/tmp/a\x00b.mp4", "holds a control character ('\\x00')"),
    ("file:/tmp/a\nb.mp4", "holds a control character ('\\n')"),
    ("file:/" + "a" * 5000, "is 5006 characters long; give a path of at most 4096"),
    ("file:/no/such/clip.mp4", "video file not found: /no/such/clip.mp4"),
    ("camera:/dev/../etc/passwd", "Cannot open camera '/dev/../etc/passwd': it is busy or not accessible"),
])
def test_a_bad_source_path_is_one_message_and_the_stream_goes_back_to_the_last_source(bad, said):
    probe = WorkerProbe(StreamConfig(source="pattern", style=STYLES["toon"], size=(64, 48), fps=60.0),
                        STYLES["oil"])
    with probe:
        assert probe.wait_frames(3)
        probe.worker.set_source(bad)
        assert wait_until(lambda: probe.fallbacks, 5), probe.notes
        assert probe.wait_frames(5)  # streaming again, from the pattern
        assert probe.stop() < 2.0
    assert probe.fallbacks == [("source", "pattern")]
    [(title, message, level)] = probe.notes
    assert said in message and message.endswith("\nBack to the previous source (pattern).")
    assert level == "warning"
