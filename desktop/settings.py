"""The tray app's settings: typed defaults, validation, a schema version, and the login autostart.

Settings live in a ``QSettings`` INI file (the same format on every OS, so a user can read and
fix it by hand). Every value is validated on the way in and on the way out: a value that does
not parse (a hand edit gone wrong, a file from another version) is replaced by its default and
a warning names the key, the bad value and the default. The file carries ``schema_version``;
:data:`MIGRATIONS` turns an older file into the current shape before it is read.

Loading never writes over what the user saved. ``QSettings`` rewrites the whole file whenever
it writes one key, in UTF-8, so bytes in another encoding (a Latin-1 path typed into the file)
would come back as U+FFFD. So a load only reads: a migration is applied in memory and written
by the next save, and before a save rewrites a file from an older schema, one that is not UTF-8
or one no key could be read from, a copy of it is kept beside it (``stylecam.conf.bak-v0``,
``.bak-not-utf8``, ``.bak-unreadable``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import stat
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
#: The longest file or device path a source may name (Linux's PATH_MAX).
MAX_PATH = 4096
#: What QSettings puts where the file held bytes that are not UTF-8.
_UNDECODED = "\ufffd"
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
    #: AI styles compiled for the GPU (``torch.compile``, the CLI's ``--compile``): about
    #: 1.5x the frame rate, at the price of a first start of a minute or two per style stack and
    #: batch size (later starts read the compiled kernels from the disk cache).
    speed_up_ai: bool = False
    start_on_login: bool = False
    virtual_camera: bool = True
    mjpeg: bool = False
    mjpeg_port: int = 8090  # the MJPEG sink's own default
    #: Per style, how much of the style is blended over the original: ((name, 0..1), ...);
    #: a style not listed runs at full strength.
    strengths: tuple[tuple[str, float], ...] = ()
    #: Where styles are painted: ``this-computer``, or ``remote``: the `stylecam serve` at
    #: ``remote_url`` (with the token in ``remote_token_file``, if it needs one).
    stylize_on: str = "this-computer"
    remote_url: str = ""
    remote_token_file: str = ""

    @property
    def batch_size(self) -> int | None:
        return 1 if self.mode == "latency" else None

    def strength(self, style: str) -> float:
        return dict(self.strengths).get(style, 1.0)

    def with_strength(self, style: str, value: float) -> "AppSettings":
        table = dict(self.strengths)
        value = round(min(1.0, max(0.0, float(value))), 2)
        if value >= 1.0:
            table.pop(style, None)  # full strength is the default: nothing to store
        else:
            table[style] = value
        return dataclasses.replace(self, strengths=tuple(sorted(table.items())))

    def with_edits(self, shown: "AppSettings", edited: "AppSettings") -> "AppSettings":
        """These settings with what a form changed from ``shown`` (what it opened with) to
        ``edited``: what changed elsewhere while the form was open (a style picked from the
        menu, the strength slider, an output turned on) is kept."""
        changed = {f.name: getattr(edited, f.name) for f in dataclasses.fields(self)
                   if getattr(edited, f.name) != getattr(shown, f.name)}
        return dataclasses.replace(self, **changed)

    @property
    def remote_server(self) -> str | None:
        """The server to paint on, or None for this computer."""
        return self.remote_url if self.stylize_on == "remote" and self.remote_url else None


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
    if text == "auto":
        return text
    kind, colon, arg = text.partition(":")
    if kind.lower() not in source_kinds():
        raise ValueError(f"expected auto or a source of kind {', '.join(source_kinds())}")
    # A settings file is edited by hand and can be damaged: no file or device has a control
    # character in its name or a path longer than the system allows.
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"the source holds a control character ({bad!r})")
    arg = arg.strip()
    if kind.lower() == "file" or (kind.lower() == "camera" and arg and not arg.isdigit()):
        path = os.path.expanduser(arg)
        if len(path) > MAX_PATH:
            raise ValueError(f"the path is {len(path)} characters long; give one of at most {MAX_PATH}")
        return f"{kind}{colon}{path}"
    if len(text) > 200:  # screen regions, device numbers: short by nature
        raise ValueError(f"the source is {len(text)} characters long")
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


def _to_strengths(raw: Any) -> tuple[tuple[str, float], ...]:
    if isinstance(raw, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in raw):
        raw = ",".join(f"{n}:{v}" for n, v in raw)
    if isinstance(raw, (tuple, list)):  # QSettings reads "a:1,b:2" back as a list of strings
        raw = ",".join(str(p) for p in raw)
    table = {}
    for part in str(raw).split(","):
        part = part.strip()
        if not part:
            continue
        name, colon, value = part.partition(":")
        if not colon:
            raise ValueError("expected style:strength pairs, e.g. oil:0.7,toon:0.5")
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the strength of {name.strip()} must be between 0 and 1")
        table[_to_style(name)] = round(value, 2)
    return tuple(sorted(table.items()))
STYLIZE_ON = ("this-computer", "remote")


def _to_stylize_on(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text not in STYLIZE_ON:
        raise ValueError(f"expected {' or '.join(STYLIZE_ON)}")
    return text


def _to_remote_url(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        return ""
    from stylecam.core.remote.client import whip_url

    if len(text) > 500 or any(c in text for c in "\n\r\0 "):
        raise ValueError("expected an address such as http://gpu-box:8890")
    whip_url(text)  # ValueError with the expected form
    return text


PARSERS: dict[str, Callable[[Any], Any]] = {
    "style": _to_style,
    "source": _to_source,
    "output_size": _to_size,
    "fps": _to_fps,
    "mirror": _to_bool,
    "mode": _to_mode,
    "device": _to_device,
    "bundle": _to_bundle,
    "speed_up_ai": _to_bool,
    "start_on_login": _to_bool,
    "virtual_camera": _to_bool,
    "mjpeg": _to_bool,
    "mjpeg_port": _to_port,
    "strengths": _to_strengths,
    "stylize_on": _to_stylize_on,
    "remote_url": _to_remote_url,
    "remote_token_file": _to_bundle,  # a path: the same rules as a bundle folder
}
assert set(PARSERS) == {f.name for f in dataclasses.fields(AppSettings)}


def _to_text(key: str, value: Any) -> str:
    """The INI form of a typed value (strings, so the file reads the same on every OS)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "output_size":
        return "source" if value is None else f"{value[0]}x{value[1]}"
    if key == "strengths":
        return ",".join(f"{n}:{v:g}" for n, v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shown(value: Any, limit: int = 80) -> str:
    """A value for a message: quoted, and cut short (a damaged file can hold a line of any length)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'"


def _default_text(key: str, value: Any) -> str:
    return _to_text(key, value) or "(none)"


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


def _from_unversioned(values: dict[str, Any]) -> dict[str, Any]:
    # Version 1 is the first schema: an unversioned file holds the same keys, so only the
    # version stamp changes (the next save writes it). Later steps rename or convert keys here.
    del values
    return {}


#: version found in the file -> the step that brings it to version + 1. A step gets the file's
#: values (key -> raw value, already brought to its version) and returns the changes: key ->
#: new raw value, or None to remove the key. Steps only compute; the store writes.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_unversioned}


def _parse_version(raw: Any) -> int | None:
    try:
        return int(str(raw).strip())
    except ValueError:
        return None


class SettingsStore:
    """Reads and writes :class:`AppSettings` through a ``QSettings``.

    ``path`` picks an INI file (tests, ``--settings``, ``STYLECAM_SETTINGS``); otherwise the
    platform's per-user location for organisation and application ``stylecam``. ``warnings``
    collects what the user should be told (the app shows each as a notification).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        path = str(path or os.environ.get("STYLECAM_SETTINGS") or default_settings_path())
        self.warnings: list[str] = []
        #: True once a load found no settings file: the app's first start on this account.
        self.first_start = False
        self._path = path
        #: Settings kept in memory when the file cannot be used (it is a pipe, a folder...).
        self._memory: AppSettings | None = None
        # QSettings reads the file as it is constructed: a named pipe would block it for ever.
        what = _not_a_file(path)
        if what:
            self.qsettings = None
            self._memory = AppSettings()
            self._warn(f"settings {path} is {what}, not a file; using the defaults, and changes are not "
                       "saved. Move it away so stylecam can create its settings file")
        else:
            self.qsettings = QSettings(path, QSettings.Format.IniFormat)

    @property
    def path(self) -> str:
        return self._path if self.qsettings is None else self.qsettings.fileName()

    def _warn(self, message: str) -> None:
        # update() loads again: the app must not show the same fault twice.
        if message not in self.warnings:
            self.warnings.append(message)
        log.warning("%s", message)

    # -- the file as it is on disk --------------------------------------------------------------

    def _file_bytes(self) -> bytes:
        if _not_a_file(self.path):  # swapped for a pipe while running: never block on it
            return b""
        try:
            return Path(self.path).read_bytes()
        except OSError:  # missing (a first start) or unreadable (QSettings reads it as empty too)
            return b""

    def _copy_reason(self, data: bytes) -> str | None:
        """Why a rewrite of this file would lose something (the suffix of the copy to keep), or None."""
        if not data.strip(b" \t\r\n"):
            return None
        qs = self.qsettings
        if not qs.allKeys():
            return ".bak-unreadable"
        raw = qs.value(VERSION_KEY, None)
        version = 0 if raw is None else _parse_version(raw)
        if version is not None and version < SCHEMA_VERSION:
            return f".bak-v{version}"
        return ".bak-not-utf8" if self._not_utf8(data) else None

    def _keep_copy(self, data: bytes, suffix: str) -> str | None:
        """Copy ``data`` (the file as it is now) to PATH + suffix; returns the copy's path.

        A copy that already holds these bytes is reused; one that holds others (an older copy)
        is kept and the next free name (``.2``, ``.3``...) taken. None when the copy failed.
        """
        base = self.path + suffix
        try:
            mode = os.stat(self.path).st_mode & 0o777  # as private as the original
        except OSError:
            mode = 0o600
        for n in range(1, 100):
            dest = base if n == 1 else f"{base}.{n}"
            try:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                try:
                    if Path(dest).read_bytes() == data:
                        return dest
                except OSError:
                    pass
                continue
            except OSError as e:
                self._warn(f"settings {self.path}: could not keep a copy of the file as {dest} ({e.strerror})")
                return None
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as e:
                Path(dest).unlink(missing_ok=True)
                self._warn(f"settings {self.path}: could not keep a copy of the file as {dest} ({e.strerror})")
                return None
            log.info("kept a copy of settings %s as %s", self.path, dest)
            return dest
        self._warn(f"settings {self.path}: could not keep a copy of the file ({base}.2 to .99 are taken)")
        return None

    def _migrated(self, announce: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """The file's values brought to the current schema, in memory, and the changes that took.

        ``announce`` reports a version that is newer or not a number (on load, not on every save).
        """
        qs = self.qsettings
        values = {key: qs.value(key) for key in qs.allKeys()}
        raw = values.get(VERSION_KEY)
        version = 0 if raw is None else _parse_version(raw)
        if version is None:
            if announce:
                self._warn(f"settings {self.path}: {VERSION_KEY} {_shown(raw)} is not a number; "
                           f"reading the file as version {SCHEMA_VERSION}")
            return values, {}
        if version > SCHEMA_VERSION:
            if announce:
                self._warn(f"settings {self.path} were written by a newer stylecam (schema {version}); "
                           f"reading the keys this version knows")
            return values, {}
        changes: dict[str, Any] = {}
        while version < SCHEMA_VERSION:
            if announce:
                log.info("reading settings %s (schema %d) as schema %d", self.path, version, version + 1)
            step = MIGRATIONS[version](dict(values))
            for key, value in step.items():
                changes[key] = value
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            version += 1
        return values, changes

    # -- load and save -------------------------------------------------------------------------

    def load(self) -> AppSettings:
        """Read the settings; bad values become defaults (with a warning). Never rewrites the
        file, except to create it on a first start."""
        if self._memory is not None:
            return self._memory
        qs = self.qsettings
        qs.sync()
        data = self._file_bytes()
        if not data.strip(b" \t\r\n") and not qs.allKeys():
            # A first start: no file, nothing to lose. Writing the version now marks the file
            # as this schema's from the start.
            qs.setValue(VERSION_KEY, str(SCHEMA_VERSION))
            qs.sync()
            self.first_start = True
            return AppSettings()
        reason = self._copy_reason(data)
        copy = self._keep_copy(data, reason) if reason else None
        kept = f"; the file as it was is kept in {copy}" if copy else ""
        if reason == ".bak-unreadable":
            self._warn(f"settings {self.path}: no setting could be read from the file ({len(data)} bytes); "
                       f"using the defaults{kept}")
            return AppSettings()
        values, _ = self._migrated(announce=True)
        undecoded = self._not_utf8(data)
        defaults = AppSettings()
        parsed = {}
        bad_bytes_in_known_key = False
        for key, parse in PARSERS.items():
            default = getattr(defaults, key)
            raw = values.get(key)
            if raw is None:
                parsed[key] = default
                continue
            if undecoded and _UNDECODED in str(raw):
                # The file is not UTF-8 and Qt put U+FFFD where this value's bytes were: what
                # reads back is not what the user wrote (a path that does not exist).
                bad_bytes_in_known_key = True
                self._warn(f"settings {self.path}: {key} = {_shown(raw)} holds bytes that are not UTF-8 text; "
                           f"using the default {_default_text(key, default)}{kept}. Save the file as "
                           f"UTF-8 or set {key} again in Settings")
                parsed[key] = default
                continue
            try:
                parsed[key] = parse(raw)
            except (ValueError, TypeError) as e:
                self._warn(f"settings {self.path}: {key} = {_shown(raw)} is not valid ({e}); "
                           f"using the default {_default_text(key, default)}")
                parsed[key] = default
        if undecoded and not bad_bytes_in_known_key:
            line = self._first_bad_line(data)
            self._warn(f"settings {self.path}: line {line} holds bytes that are not UTF-8 text, which "
                       f"a save cannot keep{kept}")
        return AppSettings(**parsed)

    @staticmethod
    def _not_utf8(data: bytes) -> bool:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    @staticmethod
    def _first_bad_line(data: bytes) -> int:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            return data.count(b"\n", 0, e.start) + 1
        return 0

    def save(self, settings: AppSettings) -> str | None:
        """Write ``settings``, keeping every other key of the file; a file this write would
        change beyond the user's settings (older schema, not UTF-8, unreadable) is copied first.
        Returns None, or what the user should be told when the file could not be written (the
        settings then last until the app quits)."""
        validate(settings)
        if self._memory is not None:
            self._memory = settings
            return None
        qs = self.qsettings
        data = self._file_bytes()
        reason = self._copy_reason(data)
        if reason:
            self._keep_copy(data, reason)
        _, changes = self._migrated(announce=False)
        for key, value in changes.items():
            if value is None:
                qs.remove(key)
            else:
                qs.setValue(key, value)
        version = _parse_version(qs.value(VERSION_KEY, "0"))
        if version is None or version < SCHEMA_VERSION:
            # A file from a newer stylecam keeps its number: no silent downgrade.
            qs.setValue(VERSION_KEY, str(SCHEMA_VERSION))
        for key in PARSERS:
            qs.setValue(key, _to_text(key, getattr(settings, key)))
        qs.sync()
        status = qs.status()
        if status == QSettings.Status.NoError:
            return None
        why = ("the settings file or its folder cannot be written" if status == QSettings.Status.AccessError
               else "the settings file is not in a form stylecam can write")
        # What it means first: a notification shows the start of it.
        message = (f"changes last until stylecam quits: {why} ({self.path}). Make sure "
                   f"{os.path.dirname(self.path) or '.'} is a folder you can write to")
        self._warn(message)
        return message

    def update(self, **changes) -> AppSettings:
        """Load, change some fields, validate, save; returns the new settings."""
        new = dataclasses.replace(self.load(), **changes)
        self.save(new)
        return new


def default_settings_path() -> str:
    """Where QSettings keeps the per-user INI file of organisation and application ``stylecam``.

    Asked of QSettings for another application name (a file that does not exist, so opening it
    reads nothing) and renamed: opening ``stylecam``'s own would read it, and the file must be
    checked before anything reads it.
    """
    probe = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "stylecam", "stylecam-path-probe")
    folder, name = os.path.split(probe.fileName())
    return os.path.join(folder, name.replace("stylecam-path-probe", "stylecam", 1))


def _not_a_file(path: str) -> str | None:
    """What ``path`` is when it exists and is not a regular file (symlinks followed), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing (a first start) or unreadable: QSettings copes
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


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
