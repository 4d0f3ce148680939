"""Logging: the rotating log file, Qt messages in it, and a GUI launch without a console."""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time

import pytest

from stylecam.desktop import logs


@pytest.fixture
def root_handlers():
    """Undo what setup_logging adds to the root logger."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_log_file_rotates_in_the_log_dir(tmp_path, root_handlers):
    path = logs.setup_logging(directory=tmp_path)
    assert path == tmp_path / "stylecam.log"
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler))
    assert handler.maxBytes == logs.MAX_BYTES and handler.backupCount == logs.BACKUP_COUNT
    logging.getLogger("stylecam.test").info("hello %s", "log")
    handler.flush()
    assert "INFO    MainThread stylecam.test: hello log" in path.read_text()
    assert logs.setup_logging(directory=tmp_path) == path  # twice: no second handler
    assert sum(isinstance(h, logging.handlers.RotatingFileHandler) for h in logging.getLogger().handlers) == 1


def test_log_dir_follows_env_and_platformdirs(monkeypatch):
    monkeypatch.setenv("STYLECAM_LOG_DIR", "/tmp/elsewhere")
    assert str(logs.log_path()) == "/tmp/elsewhere/stylecam.log"
    monkeypatch.delenv("STYLECAM_LOG_DIR")
    from platformdirs import user_log_dir

    assert str(logs.log_dir()) == user_log_dir("stylecam", appauthor=False)


def test_missing_std_streams_go_to_the_log_and_tqdm_does_not_crash(monkeypatch, caplog):
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert logs.ensure_std_streams() == ["stdout", "stderr"]
    with caplog.at_level(logging.INFO):
        for _ in tqdm.tqdm(range(3), desc="loading weights"):
            pass
        print("a stray print")
        sys.stderr.flush()
        sys.stderr.write("\n")  # tqdm ends its bar without a newline; the next line flushes it
    assert ("stylecam.stdout", logging.INFO, "a stray print") in caplog.record_tuples
    bars = [m for name, _, m in caplog.record_tuples if name == "stylecam.stderr"]
    assert bars and "loading weights" in bars[-1] and "3/3" in bars[-1]
    assert logs.ensure_std_streams() == []  # streams exist now


def test_qt_messages_are_routed_into_logging(qtbot, caplog):
    from PySide6.QtCore import qInstallMessageHandler, qWarning

    previous = qInstallMessageHandler(None)
    qInstallMessageHandler(previous)
    try:
        logs.route_qt_messages()
        with caplog.at_level(logging.DEBUG, logger="stylecam.qt"):
            qWarning("a warning from Qt")
    finally:
        qInstallMessageHandler(previous)
    assert any(name == "stylecam.qt" and level == logging.WARNING and "a warning from Qt" in msg
               for name, level, msg in caplog.record_tuples)


def test_gui_launch_without_console_runs_and_quits(xvfb_display, tray_host, tmp_path):
    """The installed entry point, started with no stdout/stderr at all (as a desktop launcher
    does), comes up, streams, and quits cleanly; everything it says is in the log file."""
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", STYLECAM_LOG_DIR=str(tmp_path / "logs"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))

    def close_std_streams():
        os.close(1)
        os.close(2)

    code = ("import sys; assert sys.stdout is None and sys.stderr is None; "
            "from stylecam.desktop.app import main; sys.exit(main())")
    log_file = tmp_path / "logs" / "stylecam.log"
    proc = subprocess.Popen([sys.executable, "-c", code, "--settings", str(tmp_path / "s.ini"), "--source", "pattern",
                             "--style", "sketch"],
                            env=env, stdin=subprocess.DEVNULL, preexec_fn=close_std_streams)
    try:
        # Up and streaming once the log says so (and the missing virtual camera was reported).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_file.read_text() if log_file.exists() else ""
            if "notification: Virtual camera unavailable" in text and "streaming pattern through sketch" in text:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the app ended by itself"
        proc.send_signal(signal.SIGTERM)  # a logout: the same clean stop as Quit
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_file.read_text()
    assert code == 0, text
    assert "no console: stdout and stderr go to the log" in text
    assert "streaming pattern through sketch" in text
    assert "notification: Virtual camera unavailable" in text  # the default output, missing here
    assert "stopped in" in text and "Traceback" not in text
