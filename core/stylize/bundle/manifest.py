"""A bundle's manifest: which stack, its settings, where each component is.

Contract: :func:`manifest_from_dict` validates a mapping (from ``stylecam.json`` or
``stylecam.toml``) against the stack records of ``stacks.py`` and returns a frozen
:class:`Manifest`, or raises one :class:`BundleError` that starts with where the manifest came
from. Reads files, imports no model library.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import stacks as _stacks
from ..damage import FIX


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and says what to do.

    ``damaged``: the files found damaged (weights cut short, a Git LFS pointer, a JSON file that does
    not parse), so that a caller can offer to download the model again rather than to pick another."""

    def __init__(self, message: str, damaged: tuple = ()):
        super().__init__(message)
        self.damaged = tuple(damaged)


MANIFEST_NAMES = ("stylecam.json", "stylecam.toml")
MANIFEST_FORMAT = 1

@dataclass(frozen=True)
class ComponentRef:
    """Where a component lives: a folder inside the bundle, or a hub repo (+ subfolder)."""

    path: str | None = None
    repo: str | None = None
    subfolder: str = ""

    def to_json(self) -> Any:
        if self.repo is None:
            return self.path
        return {"repo": self.repo, "subfolder": self.subfolder} if self.subfolder else {"repo": self.repo}


_CONCAT_MODES = ("none", "channel", "width")
_SPACINGS = ("trailing", "leading", "linspace")


@dataclass(frozen=True)
class Manifest:
    """A bundle's stack and settings. ``size`` is the engine size (W, H) the models run at."""

    stack: str
    size: tuple[int, int] = (512, 512)
    steps: int = 1
    strength: float = 1.0
    text_length: int = 77
    image_size: int = 256
    concat: str = "none"
    source_scale: float = 1.0
    timestep_spacing: str = "trailing"
    instruction_template: str = "{}"
    lllite_subset: str | None = None
    text_bucket: int = 0
    components: Mapping[str, ComponentRef] = field(default_factory=dict)

    def component(self, name: str) -> ComponentRef:
        return self.components.get(name) or ComponentRef(path=name)

    def to_dict(self) -> dict:
        d = {"format": MANIFEST_FORMAT, "stack": self.stack, "size": list(self.size), "steps": self.steps,
             "strength": self.strength, "text_length": self.text_length, "concat": self.concat,
             "source_scale": self.source_scale, "timestep_spacing": self.timestep_spacing}
        if _stacks.STACKS[self.stack].vision:  # the MLLM's settings
            d["image_size"] = self.image_size
            d["instruction_template"] = self.instruction_template
            d["text_bucket"] = self.text_bucket
        if self.lllite_subset is not None:
            d["lllite_subset"] = self.lllite_subset
        comps = {k: v.to_json() for k, v in self.components.items() if v != ComponentRef(path=k)}
        if comps:
            d["components"] = comps
        return d


_MANIFEST_KEYS = {"format", "stack", "size", "steps", "strength", "text_length", "image_size", "concat",
                  "source_scale", "timestep_spacing", "instruction_template", "lllite_subset", "components",
                  "description", "license", "text_bucket"}


def unknown_stack(stack: object) -> str:
    """The message for a stack name that has no record."""
    return f"unknown stack {stack!r} (known: {', '.join(_stacks.STACKS)})"


def default_manifest(stack: str, **overrides) -> Manifest:
    """The manifest of ``stack`` with its record's defaults, ``overrides`` applied and checked."""
    if stack not in _stacks.STACKS:
        raise BundleError(unknown_stack(stack))
    return manifest_from_dict({"stack": stack, **overrides}, f"the default {stack} manifest")


def manifest_from_dict(d: Mapping, origin: str) -> Manifest:
    """Validate a manifest mapping; ``origin`` (usually the file) starts every error message."""

    def bad(msg: str) -> BundleError:
        return BundleError(f"{origin}: {msg}")

    if not isinstance(d, Mapping):
        raise bad("the manifest must be a table/object")
    unknown = set(d) - _MANIFEST_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(map(repr, unknown)))} "
                  f"(known: {', '.join(sorted(_MANIFEST_KEYS))})")
    fmt = d.get("format", MANIFEST_FORMAT)
    if fmt != MANIFEST_FORMAT:
        raise bad(f"manifest format {fmt!r} is not supported by this stylecam (expected {MANIFEST_FORMAT})")
    stack = d.get("stack")
    if stack not in _stacks.STACKS:
        raise bad(unknown_stack(stack))
    record = _stacks.STACKS[stack]
    v = dict(record.defaults)
    v.update({k: d[k] for k in d if k not in ("format", "stack", "components", "description", "license")})

    size = v["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise bad(f"'size' must be [width, height], got {size!r}")
    if not all(16 <= s <= 4096 and s % 8 == 0 for s in size):
        raise bad(f"'size' sides must be multiples of 8 between 16 and 4096, got {list(size)}")
    steps = v["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 50:
        raise bad(f"'steps' must be a whole number from 1 to 50, got {steps!r}")
    strength = v["strength"]
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 < strength <= 1:
        raise bad(f"'strength' must be a number in (0, 1], got {strength!r}")
    for key, lo, hi in (("text_length", 1, 4096), ("image_size", 32, 2048)):
        val = v.get(key, 256)
        if not isinstance(val, int) or isinstance(val, bool) or not lo <= val <= hi:
            raise bad(f"{key!r} must be a whole number from {lo} to {hi}, got {val!r}")
    bucket = v.get("text_bucket", 0)
    if not isinstance(bucket, int) or isinstance(bucket, bool) or not 0 <= bucket <= 4096:
        raise bad(f"'text_bucket' must be a whole number from 0 (off) to 4096, got {bucket!r}")
    if v["concat"] not in _CONCAT_MODES:
        raise bad(f"'concat' must be one of {', '.join(_CONCAT_MODES)}, got {v['concat']!r}")
    expected_concat = record.concat_modes
    if v["concat"] not in expected_concat:
        raise bad(f"stack {stack} needs concat {' or '.join(expected_concat)}, got {v['concat']!r}")
    scale = v["source_scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale < 1000:
        raise bad(f"'source_scale' must be a positive number, got {scale!r}")
    if v["timestep_spacing"] not in _SPACINGS:
        raise bad(f"'timestep_spacing' must be one of {', '.join(_SPACINGS)}, got {v['timestep_spacing']!r}")
    template = v.get("instruction_template", "{}")
    if not isinstance(template, str) or template.count("{}") != 1:
        raise bad("'instruction_template' must be a string with exactly one {} where the instruction goes")
    subset = v.get("lllite_subset")
    if subset is not None and not isinstance(subset, str):
        raise bad(f"'lllite_subset' must be a block name such as 'down_blocks', got {subset!r}")

    comps = _components(d.get("components", {}), record, bad)
    return Manifest(stack=stack, size=(int(size[0]), int(size[1])), steps=steps, strength=float(strength),
                    text_length=v["text_length"], image_size=v.get("image_size", 256), concat=v["concat"],
                    source_scale=float(scale), timestep_spacing=v["timestep_spacing"],
                    instruction_template=template, lllite_subset=subset, text_bucket=bucket, components=comps)


def _components(raw: object, record: _stacks.Stack, bad) -> dict[str, ComponentRef]:
    """The manifest's ``components`` table: name -> folder, or {repo, subfolder} on the hub."""
    if not isinstance(raw, Mapping):
        raise bad("'components' must be a table of component name -> folder or {repo, subfolder}")
    comps: dict[str, ComponentRef] = {}
    for name, ref in raw.items():
        if name not in record.components and name not in _stacks.OPTIONAL:
            raise bad(f"component {name!r} is not part of the {record.name} stack "
                      f"(expected: {', '.join(record.components + _stacks.OPTIONAL)})")
        if isinstance(ref, str):
            comps[name] = ComponentRef(path=ref)
        elif isinstance(ref, Mapping) and set(ref) <= {"repo", "subfolder"} and isinstance(ref.get("repo"), str):
            sub = str(ref.get("subfolder", "")).strip("/")
            if ".." in Path(sub).parts:
                raise bad(f"component {name!r}: subfolder {sub!r} must be a folder inside the repository")
            comps[name] = ComponentRef(repo=ref["repo"], subfolder=sub)
        else:
            raise bad(f"component {name!r} must be a folder name or {{repo = \"owner/name\", subfolder = \"...\"}}")
    return comps


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``, or None if it has none. Raises BundleError for a bad one."""
    for name in MANIFEST_NAMES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text("utf-8")
            data = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path}: the manifest is corrupt ({e}); fix it or write it again "
                              f"(`stylecam models tiny` shows the format)") from None
        except OSError as e:
            raise BundleError(f"{path}: cannot read the manifest ({e})") from None
        return manifest_from_dict(data, str(path))
    return None


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; BundleError naming the file if it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is damaged ({e}); {FIX}", damaged=(path,)) from None
    except OSError as e:
        raise BundleError(f"cannot read {path} ({e})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object")
    return data
