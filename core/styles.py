"""Style presets: data (name, backend, parameters), built in or from the user's TOML files.

Built-in presets live in ``core/data/styles*.toml``; users add their own as ``*.toml`` files in
``<config dir>/stylecam/styles/`` (``stylecam styles`` prints the folder). A user file may hold
several ``[[style]]`` tables. A file that does not parse or a preset that does not validate is
skipped with a warning naming the file and the problem; it never stops the app.

Style files are untrusted input (anything can land in that folder): only regular files are
read (never a pipe, a device or a folder, also not through a symbolic link), at most
:data:`MAX_FILE_BYTES` each and :data:`MAX_FILES` in all; deep nesting, wrong types and unknown
keys are one warning each; control characters are stripped from labels and descriptions before
they reach a terminal or a menu. A user style may replace a built-in one, and is said to once.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from .stylize import registry as _registry

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
#: A style file larger than this is not read (a preset is a few hundred bytes).
MAX_FILE_BYTES = 1 << 20
#: Style files read from all folders together; the rest are skipped with one warning.
MAX_FILES = 200
#: Characters that would let a label steer a terminal or reorder text: C0/C1 controls (ANSI
#: escapes start with ESC) and the bidirectional overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: Whole terminal escape sequences (CSI "ESC [ ... letter" and OSC "ESC ] ... BEL/ST"), removed
#: before single control characters so that no "[31m" is left behind.
_ESCAPE = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]|\x1b\\][^\x07\x1b]*(?:\x07|\x1b\\\\)?|\x9b[0-?]*[ -/]*[@-~]")
_TOML_TYPES = {str: "a string", bool: "true or false", int: "a number", float: "a number",
               list: "an array", dict: "a table"}


def _toml_type(value) -> str:
    return next((name for t, name in _TOML_TYPES.items() if isinstance(value, t)), type(value).__name__)


def clean_text(text: str) -> str:
    """``text`` without control characters (see :data:`_CONTROL`)."""
    return _CONTROL.sub("", _ESCAPE.sub("", text))


class StyleError(ValueError):
    """A preset that does not validate; the message names the preset and the problem."""


@dataclass(frozen=True)
class Style:
    name: str
    backend: str
    params: Mapping = field(default_factory=dict)
    label: str = ""
    description: str = ""
    origin: str = "built-in"

    @property
    def title(self) -> str:
        return self.label or self.name.replace("-", " ").replace("_", " ").title()


#: backend name -> validator(params) that raises StyleError (or ValueError) for bad params and
#: returns the params with defaults filled in. Backends register themselves on import.
_VALIDATORS: dict[str, Callable[[dict], dict]] = {}


def register_backend_params(backend: str, validator: Callable[[dict], dict]) -> None:
    _VALIDATORS[backend] = validator


def make_style(table: Mapping, origin: str = "built-in") -> Style:
    """Validate one ``[[style]]`` table and return the :class:`Style`."""
    if not isinstance(table, Mapping):
        raise StyleError(f"{origin}: a style must be a table, got {_toml_type(table)}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        shown = clean_text(repr(name))[:60]
        raise StyleError(f"{origin}: key 'name' = {shown} must be 1-40 characters of a-z, 0-9, - or _")
    backend = table.get("backend", "classic")
    if not isinstance(backend, str):
        raise StyleError(f"{origin}: style {name!r}: key 'backend' must be a string, got {_toml_type(backend)}")
    _ensure_backends_registered()
    if backend not in _VALIDATORS:
        raise StyleError(f"{origin}: style {name!r}: key 'backend' names an unknown backend "
                         f"{clean_text(backend)[:40]!r} (known: {', '.join(sorted(_VALIDATORS))})")
    params = table.get("params", {})
    if not isinstance(params, Mapping):
        raise StyleError(f"{origin}: style {name!r}: key 'params' must be a table, got {_toml_type(params)}")
    unknown = set(table) - {"name", "backend", "params", "label", "description"}
    if unknown:
        keys = ", ".join(repr(clean_text(k)[:40]) for k in sorted(unknown))
        raise StyleError(f"{origin}: style {name!r} has unknown key{'s' if len(unknown) > 1 else ''} {keys}")
    for key in ("label", "description"):
        if not isinstance(table.get(key, ""), str):
            raise StyleError(f"{origin}: style {name!r}: key {key!r} must be a string, "
                             f"got {_toml_type(table.get(key))}")
    try:
        params = _VALIDATORS[backend](dict(params))
    except (ValueError, TypeError, KeyError) as e:
        raise StyleError(f"{origin}: style {name!r}: params: {clean_text(str(e))}") from None
    return Style(name=name, backend=backend, params=MappingProxyType(params),
                 label=clean_text(table.get("label", "")), description=clean_text(table.get("description", "")),
                 origin=origin)


def parse_styles(text: str, origin: str) -> list[Style]:
    """Parse a TOML document of ``[[style]]`` tables. Raises StyleError for any problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StyleError(f"{origin}: not valid TOML ({clean_text(str(e))})") from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise StyleError(f"{origin}: not valid TOML (nested too deeply)") from None
    tables = doc.get("style", [])
    if not isinstance(tables, list) or not tables:
        raise StyleError(f"{origin}: expected one or more [[style]] tables (key 'style')")
    unknown = set(doc) - {"style"}
    if unknown:
        keys = ", ".join(repr(clean_text(k)[:40]) for k in sorted(unknown))
        raise StyleError(f"{origin}: unknown top-level key{'s' if len(unknown) > 1 else ''} {keys} "
                         "(each style is a [[style]] table)")
    return [make_style(t, origin) for t in tables]


def builtin_styles() -> list[Style]:
    """Presets shipped in ``core/data/styles*.toml`` (one file per backend family)."""
    data = resources.files("stylecam.core").joinpath("data")
    styles: list[Style] = []
    for entry in sorted(data.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("styles") and entry.name.endswith(".toml"):
            styles.extend(parse_styles(entry.read_text("utf-8"), f"built-in {entry.name}"))
    return styles


def user_style_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("stylecam", appauthor=False)) / "styles"


def _read_style_file(path: Path) -> str:
    """The text of a style file, refusing anything but a regular file of sane size (a FIFO
    would block for ever, a link to /dev/zero would read without end)."""
    try:
        info = os.stat(path)  # follows a symbolic link: what counts is what it points to
    except OSError as e:
        raise StyleError(f"{path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        what = ("a folder" if stat.S_ISDIR(info.st_mode) else "a named pipe" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a file")
        raise StyleError(f"{path}: it is {what}, not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise StyleError(f"{path}: it is {info.st_size:,} bytes; a style file may be at most {MAX_FILE_BYTES:,}")
    # O_NONBLOCK: should the file be swapped for a pipe after the check, opening it does not hang.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise StyleError(f"{path}: it is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StyleError(f"{path}: not valid UTF-8 text (byte {e.start})") from None


def load_styles(extra_dirs: list[Path] | None = None) -> tuple[dict[str, Style], list[str]]:
    """All presets by name (user presets override built-ins of the same name) and warnings:
    one per skipped file, one per built-in a user style replaces."""
    styles = {s.name: s for s in builtin_styles()}
    builtin = set(styles)
    warnings: list[str] = []
    dirs = [user_style_dir()] + list(extra_dirs or [])
    files: list[Path] = []
    for folder in dirs:
        try:
            if not folder.is_dir():
                continue
            files.extend(sorted(folder.glob("*.toml")))
        except OSError as e:
            warnings.append(f"cannot list the style folder {folder}: {e.strerror or e}")
    if len(files) > MAX_FILES:
        warnings.append(f"{len(files)} style files found; only the first {MAX_FILES} are read")
        files = files[:MAX_FILES]
    for path in files:
        try:
            found = parse_styles(_read_style_file(path), str(path))
        except StyleError as e:
            warnings.append(f"skipped style file {path}: {_without_origin(str(e), path)}")
            continue
        except Exception as e:  # the last guard: a style file must never stop the app
            warnings.append(f"skipped style file {path}: {type(e).__name__}: {clean_text(str(e))[:200]}")
            continue
        for style in found:
            earlier = styles.get(style.name)
            if style.name in builtin and earlier.origin.startswith("built-in"):
                warnings.append(f"style file {path}: style {style.name!r} replaces the built-in style "
                                "of that name")
            elif earlier is not None and earlier.origin != style.origin:
                # Files are read in name order: say which one wins, so the other can be renamed.
                warnings.append(f"style file {path}: style {style.name!r} replaces the one of that name "
                                f"in {earlier.origin}")
            styles[style.name] = style
    return styles, warnings


def _without_origin(message: str, path: Path) -> str:
    # Errors name their origin (the path) first; the warning already does.
    for prefix in (f"{path}: ",):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def find_style(name: str, styles: Mapping[str, Style]) -> Style:
    try:
        return styles[name]
    except KeyError:
        raise StyleError(f"unknown style {name!r}; known styles: {', '.join(sorted(styles))}") from None


def _ensure_backends_registered() -> None:
    # Backends register their parameter validators on import; import the light params modules
    # (declared in stylize/registry.py, by name) here so that validating a preset never depends
    # on import order. The diffusion backend's validator lives in a module without torch.
    if len(_VALIDATORS) < len(_registry.BACKENDS):
        _registry.import_params_modules(set(_VALIDATORS))
