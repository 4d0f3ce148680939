"""The tray app's settings: typed defaults, validation, a schema version, and the login autostart.

Settings live in a ``QSettings`` INI file (the same format on every OS, so a user can read and
fix it by hand). Every value is validated on the way in and on the way out: a value that does
not parse (a hand edit gone wrong, a file from another version) is replaced by its default and
a warning names the key, the bad value and the default. The file carries ``schema_version``;
:data:`MIGRATIONS` turns an older file into the current shape before it is read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QSettings

from stylecam.core.frames import parse_size

log = logging.getLogger(__name__)

#: Bump when a key is renamed or its meaning changes, and add a step to MIGRATIONS.
SCHEMA_VERSION = 1
VERSION_KEY = "schema_version"

MODES = ("latency", "throughput")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")
_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class AppSettings:
    """Everything the user can set. The defaults are what a first start uses."""

    #: Last style picked (a preset name; the app falls back to the first classic style if gone).
    style: str = "oil"
    #: A ``--source`` spec, or ``auto``: the first camera if one is found, else the demo clip.
    source: str = "auto"
    #: Engine and output size (W, H); None keeps the source's size.
    output_size: tuple[int, int] | None = (1280, 720)
    fps: float = 30.0
    #: Flip left-right, as a selfie camera shows you.
    mirror: bool = False
    #: ``latency``: one frame per batch (calls); ``throughput``: the backend's batch size (streams).
    mode: str = "latency"
    #: Where a diffusion style runs: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    device: str = "auto"
    #: The diffusion model bundle: a folder or hub id; empty takes sd-turbo from the hub cache.
    bundle: str = ""
    start_on_login: bool = False
    virtual_camera: bool = True
    mjpeg: bool = False
    mjpeg_port: int = 8090  # the MJPEG sink's own default

    @property
    def batch_size(self) -> int | None:
        return 1 if self.mode == "latency" else None


# ---- parsers: raw QSettings value -> typed value, ValueError when it does not fit -------------


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _to_style(raw: Any) -> str:
    text = str(raw).strip()
    if not _STYLE_NAME.match(text):
        raise ValueError("expected a style name (a-z, 0-9, - or _)")
    return text


def _to_source(raw: Any) -> str:
    from stylecam.core.sources import source_kinds

    text = str(raw).strip()
    kind = text.partition(":")[0].lower()
    if text != "auto" and kind not in source_kinds():
        raise ValueError(f"expected auto or a source of kind {', '.join(source_kinds())}")
    return text


def _to_size(raw: Any) -> tuple[int, int] | None:
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        raw = f"{raw[0]}x{raw[1]}"
    text = str(raw).strip().lower()
    if text in ("source", "none", ""):
        return None
    w, h = parse_size(text)
    if w % 2 or h % 2:  # video encoders and virtual cameras need even sides
        raise ValueError("width and height must be even")
    return w, h


def _to_fps(raw: Any) -> float:
    value = float(raw)
    if not 1.0 <= value <= 120.0:
        raise ValueError("expected a rate between 1 and 120")
    return value


def _to_mode(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}")
    return text


def _to_device(raw: Any) -> str:
    text = str(raw).strip().lower()
    if not _DEVICE.match(text):
        raise ValueError("expected auto, cpu, mps, cuda or cuda:N")
    return text


def _to_bundle(raw: Any) -> str:
    text = str(raw).strip()
    if len(text) > 1000 or any(c in text for c in "\n\r\0"):
        raise ValueError("expected a folder or a hub id (owner/name)")
    return text


def _to_port(raw: Any) -> int:
    text = str(raw).strip()
    if not text.isdigit():
        raise ValueError("expected a port number")
    value = int(text)
    if not 1024 <= value <= 65535:
        raise ValueError("expected a port between 1024 and 65535")
    return value


PARSERS: dict[str, Callable[[Any], Any]] = {
    "style": _to_style,
    "source": _to_source,
    "output_size": _to_size,
    "fps": _to_fps,
    "mirror": _to_bool,
    "mode": _to_mode,
    "device": _to_device,
    "bundle": _to_bundle,
    "start_on_login": _to_bool,
    "virtual_camera": _to_bool,
    "mjpeg": _to_bool,
    "mjpeg_port": _to_port,
}
assert set(PARSERS) == {f.name for f in dataclasses.fields(AppSettings)}


def _to_text(key: str, value: Any) -> str:
    """The INI form of a typed value (strings, so the file reads the same on every OS)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "output_size":
        return "source" if value is None else f"{value[0]}x{value[1]}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def validate(settings: AppSettings) -> AppSettings:
    """Run every field through its parser; raises ValueError naming the first bad field."""
    for key, parse in PARSERS.items():
        value = getattr(settings, key)
        try:
            parse(_to_text(key, value))
        except ValueError as e:
            raise ValueError(f"setting {key} = {value!r}: {e}") from None
    return settings


# ---- migrations ----------------------------------------------------------------------------


def _from_unversioned(qs: QSettings) -> None:
    # Version 1 is the first schema: an unversioned file holds the same keys, so stamping the
    # version is all there is to do. Later steps rename or convert keys here.
    del qs


#: version found in the file -> the step that brings it to version + 1.
MIGRATIONS: dict[int, Callable[[QSettings], None]] = {0: _from_unversioned}


class SettingsStore:
    """Reads and writes :class:`AppSettings` through a ``QSettings``.

    ``path`` picks an INI file (tests, ``--settings``, ``STYLECAM_SETTINGS``); otherwise the
    platform's per-user location for organisation and application ``stylecam``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        path = path or os.environ.get("STYLECAM_SETTINGS")
        if path:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self.qsettings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                                       "stylecam", "stylecam")
        self.warnings: list[str] = []

    @property
    def path(self) -> str:
        return self.qsettings.fileName()

    def _migrate(self) -> None:
        qs = self.qsettings
        raw = qs.value(VERSION_KEY, None)
        if raw is None:
            # A file with no keys at all is a first start, not an old file.
            version = 0 if qs.allKeys() else SCHEMA_VERSION
        else:
            try:
                version = int(str(raw))
            except ValueError:
                self._warn(f"settings {self.path}: {VERSION_KEY} {raw!r} is not a number; "
                           f"reading the file as version {SCHEMA_VERSION}")
                version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            self._warn(f"settings {self.path} were written by a newer stylecam (schema {version}); "
                       f"reading the keys this version knows")
            return
        while version < SCHEMA_VERSION:
            log.info("migrating settings %s from schema %d to %d", self.path, version, version + 1)
            MIGRATIONS[version](qs)
            version += 1
        qs.setValue(VERSION_KEY, str(SCHEMA_VERSION))
        qs.sync()

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def load(self) -> AppSettings:
        self.qsettings.sync()
        self._migrate()
        defaults = AppSettings()
        values = {}
        for key, parse in PARSERS.items():
            default = getattr(defaults, key)
            raw = self.qsettings.value(key, None)
            if raw is None:
                values[key] = default
                continue
            try:
                values[key] = parse(raw)
            except (ValueError, TypeError) as e:
                self._warn(f"settings {self.path}: {key} = {raw!r} is not valid ({e}); "
                           f"using the default {_to_text(key, default)}")
                values[key] = default
        return AppSettings(**values)

    def save(self, settings: AppSettings) -> None:
        validate(settings)
        qs = self.qsettings
        if qs.value(VERSION_KEY, None) is None:
            qs.setValue(VERSION_KEY, str(SCHEMA_VERSION))
        for key in PARSERS:
            qs.setValue(key, _to_text(key, getattr(settings, key)))
        qs.sync()
        if qs.status() != QSettings.Status.NoError:
            log.warning("could not write settings to %s (%s)", self.path, qs.status().name)

    def update(self, **changes) -> AppSettings:
        """Load, change some fields, validate, save; returns the new settings."""
        new = dataclasses.replace(self.load(), **changes)
        self.save(new)
        return new


# ---- start on login --------------------------------------------------------------------------

AUTOSTART_NAME = "stylecam.desktop"


def autostart_path() -> Path:
    """``$XDG_CONFIG_HOME/autostart/stylecam.desktop`` (the freedesktop.org autostart folder)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "autostart" / AUTOSTART_NAME


def launch_command() -> list[str]:
    """How to start the tray app again: the installed script if found, else ``python -m``."""
    script = shutil.which("stylecam-tray")
    if script is None:
        candidate = Path(sys.executable).with_name("stylecam-tray")
        script = str(candidate) if candidate.exists() else None
    return [script] if script else [sys.executable, "-m", "stylecam.desktop"]


def autostart_supported() -> bool:
    return sys.platform.startswith("linux") or "bsd" in sys.platform


def _desktop_exec(argv: list[str]) -> str:
    # The Exec key has its own quoting: double quotes around arguments with spaces, and
    # backslash, quote, backtick and dollar escaped inside them; "%" must be doubled.
    out = []
    for arg in argv:
        arg = arg.replace("%", "%%")
        if re.search(r"[\s\"'\\`$]", arg):
            arg = '"' + re.sub(r'(["`$\\])', r"\\\1", arg) + '"'
        out.append(arg)
    return " ".join(out)


def set_autostart(enabled: bool, icon: str | None = None) -> Path | None:
    """Create or remove the login autostart entry; returns its path when created.

    Raises OSError (with the path in the message) when the folder cannot be written, and
    NotImplementedError on systems without freedesktop.org autostart.
    """
    path = autostart_path()
    if not enabled:
        try:
            path.unlink()
            log.info("removed autostart entry %s", path)
        except FileNotFoundError:
            pass
        return None
    if not autostart_supported():
        raise NotImplementedError(f"start on login is not supported on {sys.platform} yet")
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Name=stylecam",
        "Comment=Live stylized camera in the system tray",
        f"Exec={_desktop_exec(launch_command())}",
        "Terminal=false",
        "Categories=AudioVideo;Video;",
        "X-GNOME-Autostart-enabled=true",
    ]
    if icon:
        lines.insert(5, f"Icon={icon}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote autostart entry %s (%s)", path, shlex.join(launch_command()))
    return path


def autostart_enabled() -> bool:
    return autostart_path().is_file()
