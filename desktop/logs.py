"""Logging for the tray app: a rotating file in the platform's log folder, Qt's messages routed
into ``logging``, and standard streams that exist even when the app was started without a console.

A GUI launch (a desktop entry, autostart, a Windows ``pythonw`` shortcut) gives the process no
console: ``sys.stdout`` and ``sys.stderr`` are ``None`` there, and anything that writes to them
(tqdm progress bars while a model downloads, a stray ``print``) raises. :func:`ensure_std_streams`
points them at the log file (or the null device) before anything else runs.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

log = logging.getLogger("stylecam.desktop")

LOG_FILE_NAME = "stylecam.log"
#: Rotation: a few files of modest size keep a week of normal use and never fill a disk.
MAX_BYTES = 1_000_000
BACKUP_COUNT = 3

_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"


def log_dir() -> Path:
    """The folder the log file goes in; ``STYLECAM_LOG_DIR`` overrides the platform's default."""
    env = os.environ.get("STYLECAM_LOG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_log_dir

    return Path(user_log_dir("stylecam", appauthor=False))


def log_path() -> Path:
    return log_dir() / LOG_FILE_NAME


class _LogStream(io.TextIOBase):
    """A write-only text stream that sends whole lines to a logger (stands in for a missing
    stdout/stderr). Carriage-return progress updates are kept to their last state per line."""

    def __init__(self, logger: logging.Logger, level: int):
        self._logger = logger
        self._level = level
        self._buffer = ""
        # logging's last-resort handler writes to sys.stderr, which may be this stream: a
        # re-entrant write is dropped instead of recursing.
        self._writing = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # tqdm and friends ask before drawing bars
        return False

    def write(self, text: str) -> int:
        if self._writing:
            return len(text)
        self._buffer += text
        self._writing = True
        try:
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                line = line.rsplit("\r", 1)[-1].rstrip()
                if line:
                    self._logger.log(self._level, "%s", line)
        finally:
            self._writing = False
        # An unbounded run of "\r" updates without a newline must not grow memory.
        if len(self._buffer) > 8192:
            self._buffer = self._buffer.rsplit("\r", 1)[-1][-8192:]
        return len(text)

    def flush(self) -> None:
        pass


def ensure_std_streams() -> list[str]:
    """Give ``sys.stdout``/``sys.stderr`` a target when they are ``None``; returns which were fixed.

    The replacement sends lines to the log (``stylecam.stdout`` / ``stylecam.stderr``), so
    nothing a library prints is lost and nothing crashes on ``None.write``.
    """
    fixed = []
    if sys.stdout is None:
        sys.stdout = _LogStream(logging.getLogger("stylecam.stdout"), logging.INFO)
        fixed.append("stdout")
    if sys.stderr is None:
        sys.stderr = _LogStream(logging.getLogger("stylecam.stderr"), logging.WARNING)
        fixed.append("stderr")
    return fixed


_QT_LEVELS = None


def _qt_message_handler(mode, context, message) -> None:
    level = _QT_LEVELS.get(mode, logging.WARNING)
    where = ""
    if context is not None and getattr(context, "file", None):
        where = f" ({context.file}:{context.line})"
    logging.getLogger("stylecam.qt").log(level, "%s%s", message, where)


def route_qt_messages() -> None:
    """Send qDebug/qWarning/qCritical/qFatal text into ``logging`` (logger ``stylecam.qt``)."""
    global _QT_LEVELS
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    _QT_LEVELS = {
        QtMsgType.QtDebugMsg: logging.DEBUG,
        QtMsgType.QtInfoMsg: logging.INFO,
        QtMsgType.QtWarningMsg: logging.WARNING,
        QtMsgType.QtCriticalMsg: logging.ERROR,
        QtMsgType.QtFatalMsg: logging.CRITICAL,
    }
    qInstallMessageHandler(_qt_message_handler)


def setup_logging(verbose: bool = False, directory: Path | None = None) -> Path | None:
    """Attach a rotating file handler (and a console handler when a console exists).

    Returns the log file's path, or None when the folder cannot be written (then the app logs
    to the console only and says so there). Safe to call twice: handlers are added once.
    """
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter = logging.Formatter(_FORMAT)
    path = (directory or log_dir()) / LOG_FILE_NAME
    file_ok = None
    if not any(getattr(h, "_stylecam", False) for h in root.handlers):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES,
                                                           backupCount=BACKUP_COUNT, encoding="utf-8")
            handler.setFormatter(formatter)
            handler._stylecam = True
            root.addHandler(handler)
            file_ok = path
        except OSError as e:
            print(f"stylecam: cannot write the log file {path}: {e.strerror}; logging to the console only",
                  file=sys.stderr)
        if sys.stderr is not None and not isinstance(sys.stderr, _LogStream):
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(formatter)
            console.setLevel(logging.DEBUG if verbose else logging.WARNING)
            console._stylecam = True
            root.addHandler(console)
    else:
        file_ok = path
    return file_ok
