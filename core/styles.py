"""Style presets: data (name, backend, parameters), built in or from the user's TOML files.

Built-in presets live in ``core/data/styles*.toml``; users add their own as ``*.toml`` files in
``<config dir>/stylecam/styles/`` (``stylecam styles`` prints the folder). A user file may hold
several ``[[style]]`` tables. A file that does not parse or a preset that does not validate is
skipped with a warning naming the file and the problem; it never stops the app.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from .stylize import registry as _registry

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


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
        raise StyleError(f"{origin}: a style must be a table, got {type(table).__name__}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise StyleError(f"{origin}: style name {name!r} must be 1-40 characters of a-z, 0-9, - or _")
    backend = table.get("backend", "classic")
    _ensure_backends_registered()
    if backend not in _VALIDATORS:
        raise StyleError(f"{origin}: style {name!r} has unknown backend {backend!r} "
                         f"(known: {', '.join(sorted(_VALIDATORS))})")
    params = table.get("params", {})
    if not isinstance(params, Mapping):
        raise StyleError(f"{origin}: style {name!r}: 'params' must be a table")
    unknown = set(table) - {"name", "backend", "params", "label", "description"}
    if unknown:
        raise StyleError(f"{origin}: style {name!r} has unknown keys {sorted(unknown)}")
    try:
        params = _VALIDATORS[backend](dict(params))
    except (ValueError, TypeError) as e:
        raise StyleError(f"{origin}: style {name!r}: {e}") from None
    for key in ("label", "description"):
        if not isinstance(table.get(key, ""), str):
            raise StyleError(f"{origin}: style {name!r}: {key!r} must be a string")
    return Style(name=name, backend=backend, params=MappingProxyType(params),
                 label=table.get("label", ""), description=table.get("description", ""), origin=origin)


def parse_styles(text: str, origin: str) -> list[Style]:
    """Parse a TOML document of ``[[style]]`` tables. Raises StyleError for any problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StyleError(f"{origin}: not valid TOML ({e})") from None
    tables = doc.get("style", [])
    if not isinstance(tables, list) or not tables:
        raise StyleError(f"{origin}: expected one or more [[style]] tables")
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


def load_styles(extra_dirs: list[Path] | None = None) -> tuple[dict[str, Style], list[str]]:
    """All presets by name (user presets override built-ins of the same name) and warnings."""
    styles = {s.name: s for s in builtin_styles()}
    warnings: list[str] = []
    dirs = [user_style_dir()] + list(extra_dirs or [])
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                text = path.read_text("utf-8")
                for style in parse_styles(text, str(path)):
                    styles[style.name] = style
            except (StyleError, OSError, UnicodeDecodeError) as e:
                warnings.append(f"skipped style file {path}: {e}")
    return styles, warnings


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
