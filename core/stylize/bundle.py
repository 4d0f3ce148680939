"""Model bundles: a folder (or hub id) of standard diffusers/transformers components + a manifest.

A bundle is what the diffusion backend runs. On disk it is::

    BUNDLE/
      stylecam.json        the manifest: stack and settings (size, steps, strength, ...)
      unet/                UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)
      vae/                 AutoencoderTiny (TAESD) or AutoencoderKL
      text_encoder/        CLIPTextModel              (sd-turbo, pix2pix)
      tokenizer/           CLIP tokenizer files       (sd-turbo, pix2pix)
      qwen/                Qwen3-VL model + tokenizer (mllm-edit)
      scheduler/           scheduler_config.json
      lllite/              optional ControlNet-LLLite adapter: lllite_config.json + lllite.safetensors,
                           or one kohya-style .safetensors file

A manifest may point a component somewhere else (``"components": {"vae": {"repo":
"madebyollin/taesd"}}``), which is how the ``sd-turbo`` and ``pix2pix`` hub bundles are assembled
from two hub repositories that carry no manifest of their own.

Loading checks every file first (manifest, configs, safetensors weights, shapes that must agree)
and only then calls ``from_pretrained``; a bad bundle raises one :class:`BundleError` that names
the file and says what to do, and nothing is left loaded half-way. Weights are safetensors only
and no remote code is ever run.

This module also builds bundles with random weights: tiny ones (seeded, a few MB, for tests and
``stylecam models tiny``) and full-size ones (for benchmarks, built directly in the target dtype
on the target device).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from . import stacks as _stacks
from .stacks import OPTIONAL, SD_LATENT_SCALE  # noqa: F401  (bundle.SD_LATENT_SCALE: older imports)

log = logging.getLogger(__name__)

#: Stack names, in listing order. Each stack's facts: ``stacks.STACKS`` (the record).
STACKS = tuple(_stacks.STACKS)
MANIFEST_NAMES = ("stylecam.json", "stylecam.toml")
MANIFEST_FORMAT = 1

#: Views of the stack records, for older imports: components each stack needs (in load order),
#: its manifest defaults, and its public hub weights (stack -> component -> (repo, subfolder)).
REQUIRED = {name: st.components for name, st in _stacks.STACKS.items()}
STACK_DEFAULTS = {name: st.defaults for name, st in _stacks.STACKS.items()}
HUB_BUNDLES = {name: st.hub for name, st in _stacks.STACKS.items() if st.hub}


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and says what to do."""


# --------------------------------------------------------------------------------------------
# Manifest


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


def default_manifest(stack: str, **overrides) -> Manifest:
    if stack not in STACKS:
        raise BundleError(f"unknown stack {stack!r} (known: {', '.join(STACKS)})")
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
    if stack not in STACKS:
        raise bad(f"unknown stack {stack!r} (known: {', '.join(STACKS)})")
    v = dict(STACK_DEFAULTS[stack])
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
    expected_concat = _stacks.STACKS[stack].concat_modes
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

    comps: dict[str, ComponentRef] = {}
    raw = d.get("components", {})
    if not isinstance(raw, Mapping):
        raise bad("'components' must be a table of component name -> folder or {repo, subfolder}")
    for name, ref in raw.items():
        if name not in REQUIRED[stack] and name not in OPTIONAL:
            raise bad(f"component {name!r} is not part of the {stack} stack "
                      f"(expected: {', '.join(REQUIRED[stack] + OPTIONAL)})")
        if isinstance(ref, str):
            comps[name] = ComponentRef(path=ref)
        elif isinstance(ref, Mapping) and set(ref) <= {"repo", "subfolder"} and isinstance(ref.get("repo"), str):
            comps[name] = ComponentRef(repo=ref["repo"], subfolder=str(ref.get("subfolder", "")).strip("/"))
        else:
            raise bad(f"component {name!r} must be a folder name or {{repo = \"owner/name\", subfolder = \"...\"}}")

    return Manifest(stack=stack, size=(int(size[0]), int(size[1])), steps=steps, strength=float(strength),
                    text_length=v["text_length"], image_size=v.get("image_size", 256), concat=v["concat"],
                    source_scale=float(scale), timestep_spacing=v["timestep_spacing"],
                    instruction_template=template, lllite_subset=subset, text_bucket=bucket, components=comps)


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


# --------------------------------------------------------------------------------------------
# Resolving a bundle reference to local folders (downloading from the hub where allowed)


def offline_requested() -> bool:
    """True when the user asked for no network (``HF_HUB_OFFLINE``), read at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _component_patterns(subfolder: str, files: list[str] | None = None) -> list[str]:
    """``allow_patterns`` for one component: configs, tokenizer files and safetensors only.

    With the repo's file list at hand, a component that ships an fp16 safetensors variant gets
    only that (half the download; the backend runs in half precision on a GPU anyway).
    """
    p = f"{subfolder}/" if subfolder else ""
    weights = [f"{p}*.safetensors", f"{p}*.safetensors.index.json"]
    if files is not None:
        in_folder = [f for f in files if f.startswith(p) and "/" not in f[len(p):]]
        if any(f.endswith(".fp16.safetensors") for f in in_folder):
            weights = [f"{p}*.fp16.safetensors", f"{p}*.fp16.safetensors.index.json"]
    # Root-level components (e.g. madebyollin/taesd) must not drag in every subfolder: "*" in
    # fnmatch crosses "/", so list root files explicitly when we know them.
    patterns = [f"{p}*.json", f"{p}*.txt", f"{p}*.model"] + weights
    if files is not None and not p:
        import fnmatch

        return sorted({f for f in files if "/" not in f and any(fnmatch.fnmatch(f, pat) for pat in patterns)})
    return patterns


def fetch_component(repo: str, subfolder: str = "", *, offline: bool | None = None,
                    progress: bool = False) -> Path:
    """Local folder of ``repo``/``subfolder`` from the hub cache, downloading unless offline."""
    root = fetch_repo(repo, [subfolder], offline=offline, progress=progress)
    return root / subfolder if subfolder else root


def hub_error_message(repo: str, error: BaseException, offline: bool) -> str:
    from huggingface_hub import errors as hub_errors

    name = type(error).__name__
    if isinstance(error, hub_errors.GatedRepoError):
        return (f"{repo} is gated: accept its licence on https://huggingface.co/{repo} and log in "
                f"with `hf auth login`, then try again")
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return f"{repo} was not found on the hub (check the name, or log in if it is private)"
    if isinstance(error, (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)) or offline:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached (no network?)"
        return (f"{repo} is not in the local hub cache and {why}; download it on a machine with "
                f"network access (`stylecam models pull`) or pass a bundle folder")
    return f"cannot fetch {repo} from the hub ({name}: {error}); check the network or pass a bundle folder"


@dataclass(frozen=True)
class ResolvedBundle:
    manifest: Manifest
    paths: Mapping[str, Path]  # component -> local folder (may not exist yet: checked later)
    origin: str  # what the user passed, for messages


def resolve_bundle(ref: str | os.PathLike, *, offline: bool | None = None,
                   progress: bool = False) -> ResolvedBundle:
    """Manifest and local component folders for a bundle folder, hub id or stack alias."""
    offline = offline_requested() if offline is None else offline
    text = os.fspath(ref)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return _resolve_folder(folder, offline, progress)
    if text in HUB_BUNDLES:
        manifest = default_manifest(text, components={k: {"repo": r, "subfolder": s}
                                                     for k, (r, s) in HUB_BUNDLES[text].items()})
        return ResolvedBundle(manifest, _component_paths(manifest, None, offline, progress), text)
    if folder.exists():
        raise BundleError(f"{folder} is a file, not a bundle folder")
    if not _HUB_ID.match(text) or text.startswith((".", "~", "/")):
        raise BundleError(f"bundle {text!r}: no such folder, and not a hub id (owner/name) "
                          f"or a stack name ({', '.join(HUB_BUNDLES)})")
    # A bundle repository on the hub: its manifest first (a few small files), then the
    # components it names, in one snapshot.
    light = list(MANIFEST_NAMES) + ["model_index.json", "unet/config.json", "qwen/config.json"]
    root = _snapshot(text, light, offline, progress=False)
    manifest = read_manifest(root) or _infer_manifest(root)
    return ResolvedBundle(manifest, _component_paths(manifest, root, offline, progress, hub_repo=text), text)


def _resolve_folder(folder: Path, offline: bool, progress: bool, origin: str | None = None) -> ResolvedBundle:
    manifest = read_manifest(folder)
    if manifest is None:
        manifest = _infer_manifest(folder)
    return ResolvedBundle(manifest, _component_paths(manifest, folder, offline, progress), origin or str(folder))


def _infer_manifest(folder: Path) -> Manifest:
    """The stack of a plain diffusers folder without a manifest, from its U-Net's input channels."""
    config = folder / "unet" / "config.json"
    if not (folder / "qwen").is_dir() and not config.is_file():
        raise BundleError(f"{folder} has no manifest ({' or '.join(MANIFEST_NAMES)}) and no unet/config.json; "
                          f"it is not a bundle (`stylecam models tiny --stack sd-turbo --out DIR` writes one)")
    # A qwen/ folder means a vision-aware stack; otherwise 8 U-Net input channels mean the
    # frame's latent rides in extra channels (4 of noise + 4 of source).
    vision = (folder / "qwen").is_dir()
    channel = not vision and _read_json(config).get("in_channels") == 8
    stack = next(st.name for st in _stacks.STACKS.values()
                 if st.vision == vision and (vision or (st.concat_modes[0] == "channel") == channel))
    log.info("%s has no manifest; using the default %s settings", folder, stack)
    return default_manifest(stack)


def _component_paths(manifest: Manifest, folder: Path | None, offline: bool, progress: bool,
                     hub_repo: str | None = None) -> dict[str, Path]:
    names = list(REQUIRED[manifest.stack]) + [n for n in OPTIONAL if n in manifest.components]
    if folder is not None and (hub_repo is None or offline):
        # A local folder, or a hub snapshot already in the cache: optional parts are folders there.
        names += [n for n in OPTIONAL if n not in manifest.components and (folder / n).is_dir()]
    elif hub_repo is not None:
        listing = _list_repo_files(hub_repo) or []
        names += [n for n in OPTIONAL if n not in manifest.components and any(f.startswith(n + "/") for f in listing)]
    paths: dict[str, Path] = {}
    by_repo: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        ref = manifest.component(name)
        if ref.repo is None and hub_repo is not None:
            ref = ComponentRef(repo=hub_repo, subfolder=(ref.path or name).strip("/"))
        if ref.repo is None:
            if folder is None:
                raise BundleError(f"component {name!r} of the {manifest.stack} stack has no location")
            paths[name] = folder / (ref.path or name)
        else:
            by_repo.setdefault(ref.repo, []).append((name, ref.subfolder))
    # One snapshot per repository (one progress bar, one listing), restricted to the files the
    # components need.
    for repo, parts in by_repo.items():
        root = fetch_repo(repo, [sub for _, sub in parts], offline=offline, progress=progress)
        for name, sub in parts:
            paths[name] = root / sub if sub else root
    return paths


def fetch_repo(repo: str, subfolders: list[str], *, offline: bool | None = None, progress: bool = False) -> Path:
    """Local snapshot of ``repo`` holding the given component subfolders ("" = the root)."""
    offline = offline_requested() if offline is None else offline
    files = None if offline else _list_repo_files(repo)
    patterns = sorted({p for sub in subfolders for p in _component_patterns(sub, files)})
    return _snapshot(repo, patterns, offline, progress)


def _snapshot(repo: str, patterns: list[str], offline: bool, progress: bool) -> Path:
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = {}
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=offline, **kwargs))
    except Exception as e:  # the hub raises many types; each becomes one message the user can act on
        raise BundleError(hub_error_message(repo, e, offline)) from None


def _silent_tqdm():
    from tqdm import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _list_repo_files(repo: str) -> list[str] | None:
    from huggingface_hub import list_repo_files

    try:
        return list_repo_files(repo)
    except Exception:  # offline or rate-limited: fall back to patterns, snapshot_download reports
        return None


# --------------------------------------------------------------------------------------------
# Checking component folders before anything loads

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class _Checked:
    path: Path
    variant: str | None = None
    config: Mapping = field(default_factory=dict)
    weight_file: Path | None = None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is corrupt ({e}); replace it with the component's original file") from None
    except OSError as e:
        raise BundleError(f"cannot read {path} ({e})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object")
    return data


def _weights(folder: Path, stem: str) -> tuple[str | None, str | None]:
    """(variant, problem) for the safetensors weights ``stem``[.variant].safetensors[.index.json]."""
    for variant in (None, "fp16", "bf16"):
        name = f"{stem}.{variant}" if variant else stem
        if (folder / f"{name}.safetensors").is_file() or (folder / f"{name}.safetensors.index.json").is_file():
            return variant, None
    others = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES)) \
        if folder.is_dir() else []
    if others:
        return None, (f"{others[0]} is a pickle weight file; stylecam loads only safetensors "
                      f"(expected {folder / (stem + '.safetensors')}; convert it, or download the "
                      f"component's .safetensors file)")
    return None, f"{folder} has no weights (expected {folder / (stem + '.safetensors')})"


def _check_component(name: str, folder: Path) -> tuple[_Checked | None, list[str]]:
    if not folder.is_dir():
        return None, [f"{folder} is missing (the {name} component)"]
    problems: list[str] = []

    def config(file: str, key: str, allowed: tuple[str, ...]) -> dict:
        path = folder / file
        if not path.is_file():
            problems.append(f"{path} is missing")
            return {}
        try:
            cfg = _read_json(path)
        except BundleError as e:
            problems.append(str(e))
            return {}
        if cfg.get(key) not in allowed:
            problems.append(f"{path}: {key} is {cfg.get(key)!r}, expected {' or '.join(allowed)}")
        return cfg

    def tokenizer_files() -> None:
        if not ((folder / "tokenizer.json").is_file()
                or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
            problems.append(f"{folder} has no tokenizer files (expected tokenizer.json, or vocab.json + merges.txt)")

    variant = None
    weight_file = None
    cfg: dict = {}
    if name == "unet":
        cfg = config("config.json", "_class_name", ("UNet2DConditionModel",))
        variant, problem = _weights(folder, "diffusion_pytorch_model")
        problems += [problem] if problem else []
    elif name == "vae":
        cfg = config("config.json", "_class_name", ("AutoencoderTiny", "AutoencoderKL"))
        variant, problem = _weights(folder, "diffusion_pytorch_model")
        problems += [problem] if problem else []
    elif name == "text_encoder":
        cfg = config("config.json", "model_type", ("clip_text_model",))
        variant, problem = _weights(folder, "model")
        problems += [problem] if problem else []
    elif name == "tokenizer":
        tokenizer_files()
    elif name == "scheduler":
        cfg = config("scheduler_config.json", "_class_name", _SCHEDULERS)
    elif name == "qwen":
        cfg = config("config.json", "model_type", ("qwen3_vl",))
        variant, problem = _weights(folder, "model")
        problems += [problem] if problem else []
        tokenizer_files()
    elif name == "lllite":
        # Our layout (lllite_config.json + lllite.safetensors, diffusers names) or one kohya file.
        safes = sorted(folder.glob("*.safetensors"))
        pickles = sorted(p for p in folder.iterdir() if p.name.endswith(_PICKLE_SUFFIXES))
        if (folder / "lllite_config.json").is_file():
            weight_file = folder
            if not (folder / "lllite.safetensors").is_file():
                problems.append(f"{folder / 'lllite.safetensors'} is missing (named by {folder / 'lllite_config.json'})")
        elif len(safes) == 1:
            weight_file = safes[0]
        elif len(safes) > 1:
            problems.append(f"{folder} holds {len(safes)} .safetensors files and no lllite_config.json; "
                            f"keep exactly one kohya-style adapter file there")
        elif pickles:
            problems.append(f"{pickles[0]} is a pickle weight file; stylecam loads only safetensors "
                            f"(convert the adapter to .safetensors)")
        else:
            problems.append(f"{folder} has no adapter (expected lllite_config.json + lllite.safetensors, "
                            f"or one kohya-style .safetensors file)")
    return _Checked(folder, variant, cfg, weight_file), problems


_SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDPMScheduler", "DDIMScheduler",
               "LCMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler")
_FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)


def check_bundle(resolved: ResolvedBundle) -> dict[str, _Checked]:
    """Check every component's files and their agreement; raise one BundleError listing all problems."""
    m = resolved.manifest
    checked: dict[str, _Checked] = {}
    problems: list[str] = []
    for name, path in resolved.paths.items():
        c, p = _check_component(name, path)
        problems += p
        if c is not None:
            checked[name] = c
    if not problems:
        problems += _cross_check(m, checked)
    if problems:
        head = f"bundle {resolved.origin} ({m.stack}) cannot be loaded"
        raise BundleError(head + ": " + "; ".join(problems) if len(problems) == 1
                          else head + ":\n  - " + "\n  - ".join(problems))
    return checked


def _cross_check(m: Manifest, c: Mapping[str, _Checked]) -> list[str]:
    """Shapes that must agree between components, read from their configs (nothing loaded)."""
    problems = []
    unet, vae = c["unet"].config, c["vae"].config
    unet_cfg = c["unet"].path / "config.json"
    latent = vae.get("latent_channels", 4)
    want_in = 2 * latent if m.concat == "channel" else latent
    if unet.get("in_channels", 4) != want_in:
        problems.append(f"{unet_cfg}: in_channels is {unet.get('in_channels')}, but a {m.stack} U-Net with "
                        f"concat {m.concat!r} and a {latent}-channel VAE needs {want_in}")
    if unet.get("out_channels", 4) != latent:
        problems.append(f"{unet_cfg}: out_channels is {unet.get('out_channels')}, the VAE has {latent} latent channels")
    if "text_encoder" in c:
        width = c["text_encoder"].config.get("hidden_size")
        if unet.get("cross_attention_dim") != width:
            problems.append(f"{unet_cfg}: cross_attention_dim is {unet.get('cross_attention_dim')}, but "
                            f"{c['text_encoder'].path / 'config.json'} has hidden_size {width}")
    if "qwen" in c:
        qcfg = c["qwen"].config
        width = (qcfg.get("text_config") or {}).get("hidden_size", qcfg.get("hidden_size"))
        if unet.get("cross_attention_dim") != width:
            problems.append(f"{unet_cfg}: cross_attention_dim is {unet.get('cross_attention_dim')}, but "
                            f"{c['qwen'].path / 'config.json'} has hidden size {width}")
    sched = c["scheduler"].config.get("_class_name")
    flow = sched in _FLOW_SCHEDULERS
    if flow != _stacks.STACKS[m.stack].flow:
        want = "a flow-matching scheduler" if _stacks.STACKS[m.stack].flow else "a DDPM-family (Euler/LCM/DDIM) scheduler"
        problems.append(f"{c['scheduler'].path / 'scheduler_config.json'}: {sched} but the {m.stack} stack needs {want}")
    levels = len(unet.get("block_out_channels", ())) - 1
    vae_factor = 8
    w, h = m.size
    for side in (w, h):
        if side % (vae_factor * 2 ** max(levels, 0)):
            problems.append(f"manifest size {w}x{h}: sides must be multiples of {vae_factor * 2 ** max(levels, 0)} "
                            f"for this U-Net ({levels + 1} levels) and VAE")
            break
    return problems


# --------------------------------------------------------------------------------------------
# The loaded bundle


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers/transformers info chatter and progress bars while loading or saving.

    Their loggers would print advice about accelerate, per-shard progress bars and config keys
    they ignore on every tiny load; warnings and errors still get through.
    """
    import diffusers.utils.logging  # noqa: F401  (they set their loggers' levels on first import)
    import transformers.utils.logging  # noqa: F401

    names = ("diffusers", "transformers", "huggingface_hub")
    saved = {n: logging.getLogger(n).level for n in names}
    bars = []
    try:
        from transformers.utils import logging as tlog

        bars.append((tlog.is_progress_bar_enabled(), tlog.enable_progress_bar, tlog.disable_progress_bar))
    except ImportError:
        pass
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        for _, _, disable in bars:
            disable()
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        for was, enable, _ in bars:
            if was:
                enable()


@dataclass
class Bundle:
    """Loaded components of one stack. ``conditioner`` is the Qwen3-VL encoder (mllm-edit)."""

    manifest: Manifest
    unet: Any
    vae: Any
    scheduler: Any
    text_encoder: Any = None
    tokenizer: Any = None
    qwen: Any = None
    lllite: Any = None  # LLLiteAdapters (see .lllite), folded into the U-Net by the backend
    origin: str = "memory"

    @property
    def stack(self) -> str:
        return self.manifest.stack

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device=None, dtype=None) -> "Bundle":
        for module in (self.unet, self.vae, self.text_encoder, self.qwen, self.lllite):
            if module is None:
                continue
            kwargs = {} if device is None else {"device": device}
            # Only cast when needed: diffusers warns on every .to() that names a dtype.
            if dtype is not None and dtype != next(module.parameters()).dtype:
                kwargs["dtype"] = dtype
            if kwargs:
                module.to(**kwargs)
        return self

    def eval(self) -> "Bundle":
        for module in (self.unet, self.vae, self.text_encoder, self.qwen, self.lllite):
            if module is not None:
                module.eval().requires_grad_(False)
        return self

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the bundle as a folder of safetensors components + ``stylecam.json``.

        Written next to ``out_dir`` first and moved into place at the end, so an interrupted
        save never leaves a folder that looks like a bundle.
        """
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BundleError(f"{out} already exists and is not an empty folder; pick a new --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            with quiet_libraries():
                self._write(tmp)
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def _write(self, tmp: Path) -> None:
        self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        self.scheduler.save_pretrained(tmp / "scheduler")
        if self.text_encoder is not None:
            self.text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "tokenizer")
        if self.qwen is not None:
            self.qwen.save_pretrained(tmp / "qwen")
        if self.lllite is not None:
            from .lllite import save_adapters

            save_adapters(self.lllite, tmp / "lllite")
        manifest = dataclasses.replace(self.manifest, components={})
        (tmp / "stylecam.json").write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", "utf-8")


def load_bundle(ref: "str | os.PathLike | Bundle", *, device: str | torch.device | None = None,
                dtype: torch.dtype | None = None, offline: bool | None = None, progress: bool = False) -> Bundle:
    """Load a bundle folder, hub id or stack alias (``sd-turbo``) onto ``device`` in ``dtype``.

    Every file is checked before anything loads; a bad bundle raises one BundleError naming the
    file. ``offline`` (default: ``HF_HUB_OFFLINE``) never touches the network.
    """
    if isinstance(ref, Bundle):
        return ref.to(device, dtype).eval()
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    resolved = resolve_bundle(ref, offline=offline, progress=progress)
    checked = check_bundle(resolved)
    m = resolved.manifest
    parts: dict[str, Any] = {}
    for name, c in checked.items():
        try:
            with quiet_libraries():
                parts[name] = _load_component(name, c, m, dtype, parts)
        except Exception as e:  # corrupt safetensors, adapter shapes, config keys from a newer library
            parts.clear()
            from .lllite import LLLiteError

            if isinstance(e, (BundleError, LLLiteError)):
                raise BundleError(f"bundle {resolved.origin}: {e}") from None
            raise BundleError(f"bundle {resolved.origin}: loading {c.path} failed ({type(e).__name__}: {e})") from None
    bundle = Bundle(manifest=m, unet=parts["unet"], vae=parts["vae"], scheduler=parts["scheduler"],
                    text_encoder=parts.get("text_encoder"), tokenizer=parts.get("tokenizer"),
                    qwen=parts.get("qwen"), lllite=parts.get("lllite"), origin=resolved.origin)
    return bundle.to(device, dtype).eval()


def _load_component(name: str, c: _Checked, m: Manifest, dtype: torch.dtype, loaded: Mapping[str, Any]) -> Any:
    common = dict(use_safetensors=True, local_files_only=True)
    if name in ("unet", "vae"):
        import diffusers

        cls = getattr(diffusers, c.config["_class_name"])
        return cls.from_pretrained(c.path, torch_dtype=dtype, variant=c.variant, **common)
    if name == "text_encoder":
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(c.path, dtype=dtype, variant=c.variant, **common)
    if name == "tokenizer":
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(c.path, local_files_only=True)
    if name == "scheduler":
        import diffusers

        cls = getattr(diffusers, c.config["_class_name"])
        return cls.from_pretrained(c.path, local_files_only=True)
    if name == "qwen":
        from .qwen_vl import QwenVLConditioner

        return QwenVLConditioner.from_pretrained(c.path, c.path, image_size=m.image_size, text_length=m.text_length,
                                                 pad_to_multiple_of=m.text_bucket or None, dtype=dtype,
                                                 local_files_only=True)
    if name == "lllite":
        from . import lllite

        if c.weight_file.is_dir():
            return lllite.load_adapters(c.weight_file, loaded["unet"]).to(dtype)
        return lllite.load_kohya(c.weight_file, loaded["unet"], width_concat=2 if m.concat == "width" else 1).to(dtype)
    raise BundleError(f"unknown component {name!r}")


# --------------------------------------------------------------------------------------------
# Random-weight bundles: tiny (tests) and full size (benchmarks)

#: Tiny presets: the real classes at toy size. 64x64 frames -> 8x8 latents.
TINY_SIZE = (64, 64)
TINY_TEXT_LENGTH = 32
TINY_QWEN_IMAGE_SIZE = 64
TINY_QWEN_TEXT_LENGTH = 64

_TINY_CORPUS = (
    "an oil painting of a person in a car, thick brush strokes, vivid colours",
    "turn it into a watercolor painting with soft washes of colour",
    "make it look like a pencil sketch, black and white line art",
    "a comic book drawing with bold ink outlines and flat colours",
    "van gogh style, swirling sky, impasto, ukiyo-e woodblock print",
    "transfer this to oil painting style, vibrant colors, cinematic lighting, neon cyberpunk city at night",
    "a photo of a swan on a lake, cyclists on a street, a kite surfer on the sea, 0123456789",
)


def tiny_clip_tokenizer(max_length: int = TINY_TEXT_LENGTH):
    """A CLIP tokenizer with a small BPE vocabulary, trained offline on a fixed corpus.

    Same pre-tokenization and special tokens as CLIP; every byte is in the vocabulary (with and
    without the end-of-word mark), so any text encodes without unknown tokens. Deterministic.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import CLIPTokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    trainer_tok = Tokenizer(BPE(unk_token=eos, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = BpeTrainer(vocab_size=700, special_tokens=[], initial_alphabet=alphabet,
                         end_of_word_suffix="</w>", show_progress=False)
    trainer_tok.train_from_iterator(list(_TINY_CORPUS) * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges = []
    for a, b in trained["merges"]:
        vocab.setdefault(a + b, len(vocab))
        merges.append((a, b))
    vocab[bos] = len(vocab)
    vocab[eos] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _tiny_unet(stack: str, cross_dim: int, concat: str):
    from diffusers import UNet2DConditionModel

    common = dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, out_channels=4,
                  norm_num_groups=8, cross_attention_dim=cross_dim, attention_head_dim=(2, 4),
                  use_linear_projection=True)
    if _stacks.STACKS[stack].vision:
        # The full edit U-Net's shape at toy size: no mid block, cross-attention at every level.
        return UNet2DConditionModel(**common, in_channels=8 if concat == "channel" else 4,
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                    mid_block_type=None)
    return UNet2DConditionModel(**common, in_channels=8 if concat == "channel" else 4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))


def _tiny_vae():
    from diffusers import AutoencoderTiny

    # Four stages as in TAESD (8x down/up-sampling), one block each, 16 channels.
    vae = AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    _calibrate_tiny_vae(vae)
    return vae


@torch.no_grad()
def _calibrate_tiny_vae(vae) -> None:
    """Rescale the last layer of each side so a random VAE behaves like a trained one in range.

    At default init the encoder's latents have a std of ~0.04 and the decoder's pictures sit
    within a few levels of black, which would hide differences in tests: scale the encoder to
    centred unit-std latents and the decoder to mid-grey pictures spanning most of [0, 255].
    """
    gen = torch.Generator().manual_seed(1234)
    enc_out = vae.encoder.layers[-1]
    lat = vae.encoder(torch.rand(4, 3, 64, 64, generator=gen) * 2 - 1)
    mean, std = lat.mean(dim=(0, 2, 3)), lat.std(dim=(0, 2, 3)).clamp_min(1e-6)
    enc_out.weight.div_(std.view(-1, 1, 1, 1))
    enc_out.bias.copy_((enc_out.bias - mean) / std)
    dec_out = vae.decoder.layers[-1]
    pre = (vae.decoder(torch.randn(4, 4, 8, 8, generator=gen)) + 1) / 2  # the last conv's output
    mean, std = pre.mean(dim=(0, 2, 3)), pre.std(dim=(0, 2, 3)).clamp_min(1e-6)
    scale = 0.25 / std
    dec_out.weight.mul_(scale.view(-1, 1, 1, 1))
    dec_out.bias.copy_(0.5 + (dec_out.bias - mean) * scale)


def _sd_scheduler():
    from diffusers import EulerDiscreteScheduler

    # SD 2.x's training schedule (what sd-turbo and instruct-pix2pix ship).
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", prediction_type="epsilon",
                                  timestep_spacing="trailing", steps_offset=1)


def _flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_bundle(stack: str, *, seed: int = 0, size: tuple[int, int] = TINY_SIZE,
                      lllite: bool = False) -> Bundle:
    """A seeded random-weight bundle of the real classes at toy size (a few MB), in float32 on CPU.

    ``lllite=True`` adds a random ControlNet-LLLite adapter (its ``up`` weights non-zero so it
    changes the output) from the lllite module's tiny builder.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if stack not in STACKS:
        raise BundleError(f"unknown stack {stack!r} (known: {', '.join(STACKS)})")
    text_encoder = tokenizer = qwen = None
    if _stacks.STACKS[stack].vision:
        from .qwen_vl import QwenVLConditioner, build_tiny_qwen3vl

        manifest = default_manifest(stack, size=list(size), image_size=TINY_QWEN_IMAGE_SIZE,
                                    text_length=TINY_QWEN_TEXT_LENGTH)
        model, qtok = build_tiny_qwen3vl(seed=seed)
        qwen = QwenVLConditioner(model, qtok, image_size=manifest.image_size, text_length=manifest.text_length,
                                 pad_to_multiple_of=manifest.text_bucket or None)
        cross_dim = model.config.text_config.hidden_size
        scheduler = _flow_scheduler()
    else:
        manifest = default_manifest(stack, size=list(size), text_length=TINY_TEXT_LENGTH)
        tokenizer = tiny_clip_tokenizer(manifest.text_length)
        with _seeded(seed):
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=manifest.text_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id))
        cross_dim = 32
        scheduler = _sd_scheduler()
    with _seeded(seed + 1):
        unet = _tiny_unet(stack, cross_dim, manifest.concat)
    with _seeded(seed + 2):
        vae = _tiny_vae()
    adapters = None
    if lllite:
        from . import lllite as lllite_mod

        config = lllite_mod.LLLiteConfig(cond_emb_dim=8, mlp_dim=8, hooks=manifest.lllite_subset or "all",
                                         width_concat=2 if manifest.concat == "width" else 1)
        with _seeded(seed + 3):
            adapters = lllite_mod.randomize_(lllite_mod.build_adapters(unet, config), std=0.1, seed=seed + 3)
    bundle = Bundle(manifest=manifest, unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer, qwen=qwen, lllite=adapters, origin=f"tiny {stack}")
    return bundle.eval()


def write_tiny_bundle(stack: str, out_dir: str | os.PathLike, *, seed: int = 0,
                      size: tuple[int, int] = TINY_SIZE, lllite: bool = False) -> Path:
    return build_tiny_bundle(stack, seed=seed, size=size, lllite=lllite).save(out_dir)


# Full-size reference configs (published shapes; random weights for benchmarks).

#: SD 2.1-base U-Net, which SD-Turbo uses unchanged: 865,910,724 parameters.
SD_TURBO_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True)

#: SD 1.5-shaped InstructPix2Pix U-Net: 8 input channels, CLIP ViT-L text (768).
PIX2PIX_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=8, layers_per_block=2,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])

#: The 0.39 B-class in-context edit U-Net: BK-SDM-v2-tiny's layout (three stages 320/640/1280,
#: one resnet+attention pair per down stage, two per up stage, no mid block) with 2048-d
#: cross-attention for Qwen3-VL-2B hidden states. That alone is 0.341 B; the deepest down stage
#: gets a second transformer layer to land in the published size class (0.375 B). The true
#: DreamLite-mobile layout is not public; speed depends on these shapes, not on weight values.
EDIT_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3,
    mid_block_type=None, layers_per_block=1, transformer_layers_per_block=[1, 1, 2],
    reverse_transformer_layers_per_block=[[1, 1], [1, 1], [1, 1]], flip_sin_to_cos=True, freq_shift=0,
    in_channels=4, out_channels=4, norm_eps=1e-5, norm_num_groups=32, sample_size=64, use_linear_projection=True)

#: Text encoders: OpenCLIP ViT-H/14 text tower as shipped by SD 2.x (23 of 24 layers) and
#: OpenAI CLIP ViT-L/14 (SD 1.5 / InstructPix2Pix).
SD2_TEXT_ENCODER = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
SD1_TEXT_ENCODER = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)

FULL_UNETS = {"sd-turbo": SD_TURBO_UNET, "pix2pix": PIX2PIX_UNET, "mllm-edit": EDIT_UNET}
FULL_TEXT_ENCODERS = {"sd-turbo": SD2_TEXT_ENCODER, "pix2pix": SD1_TEXT_ENCODER}


@contextlib.contextmanager
def build_context(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed inside are created on ``device`` in ``dtype`` directly: one allocation.

    ``torch.device("meta")`` gives shapes without memory (parameter counts). The default dtype is
    process-wide, so build in one thread at a time.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def full_parameter_counts(stack: str) -> dict[str, int]:
    """Parameters of each full-size component, counted on the meta device (nothing allocated)."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    counts = {}
    with build_context("meta", torch.float32):
        counts["unet"] = _numel(UNet2DConditionModel(**FULL_UNETS[stack]))
        vae = AutoencoderTiny()
        counts["vae_encoder"], counts["vae_decoder"] = _numel(vae.encoder), _numel(vae.decoder)
        if stack in FULL_TEXT_ENCODERS:
            counts["text_encoder"] = _numel(CLIPTextModel(CLIPTextConfig(**FULL_TEXT_ENCODERS[stack])))
        else:
            from transformers import Qwen3VLForConditionalGeneration

            from .qwen_vl import full_qwen3vl_config

            counts["qwen"] = _numel(Qwen3VLForConditionalGeneration(full_qwen3vl_config()))
    return counts


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_full_bundle(stack: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                      seed: int = 0, size: tuple[int, int] = (512, 512)) -> Bundle:
    """A full-size bundle with random weights, built in ``dtype`` on ``device`` (for benchmarks).

    Speed does not depend on weight values. Tokenizers are the tiny ones (their ids are valid
    for the full vocabularies); conditioning then costs the same as with the real tokenizer.
    """
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if stack not in STACKS:
        raise BundleError(f"unknown stack {stack!r} (known: {', '.join(STACKS)})")
    text_encoder = tokenizer = qwen = None
    with _seeded(seed), build_context(device, dtype):
        unet = UNet2DConditionModel(**FULL_UNETS[stack])
        vae = AutoencoderTiny()
        if stack in FULL_TEXT_ENCODERS:
            text_encoder = CLIPTextModel(CLIPTextConfig(**FULL_TEXT_ENCODERS[stack]))
        else:
            from transformers import Qwen3VLForConditionalGeneration

            from .qwen_vl import QwenVLConditioner, full_qwen3vl_config

            model = Qwen3VLForConditionalGeneration(full_qwen3vl_config())
    if stack in FULL_TEXT_ENCODERS:
        manifest = default_manifest(stack, size=list(size))
        tokenizer = tiny_clip_tokenizer(manifest.text_length)
        scheduler = _sd_scheduler()
    else:
        manifest = default_manifest(stack, size=list(size))
        qwen = QwenVLConditioner(model, full_vocab_qwen_tokenizer(), image_size=manifest.image_size,
                                 text_length=manifest.text_length, pad_to_multiple_of=manifest.text_bucket or None)
        scheduler = _flow_scheduler()
    return Bundle(manifest=manifest, unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                  tokenizer=tokenizer, qwen=qwen, origin=f"full {stack} (random weights)").eval()


def full_vocab_qwen_tokenizer():
    """The tiny offline Qwen tokenizer with its special tokens moved to the real ids (151643+).

    Full-size random Qwen3-VL models expect ``<|image_pad|>`` and friends at the published ids;
    the ordinary tokens keep their small ids, which are valid rows of the full embedding.
    """
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from .qwen_vl import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer

    state = json.loads(build_tiny_tokenizer().backend_tokenizer.to_str())["model"]
    vocab = {t: i for t, i in state["vocab"].items() if t not in QWEN_SPECIAL_TOKENS}
    first = 151643  # <|endoftext|> in the real vocabulary; the others follow one by one
    vocab.update({t: first + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)})
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token="<|endoftext|>",
                          extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS
                                                if t not in ("<|endoftext|>", "<|im_end|>")])


def bundle_nbytes(folder: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def describe(bundle: Bundle) -> str:
    m = bundle.manifest
    n = _numel(bundle.unet)
    return (f"{m.stack} bundle from {bundle.origin}: {m.size[0]}x{m.size[1]}, {m.steps} step(s), strength "
            f"{m.strength:g}, U-Net {n / 1e6:.1f} M parameters, {bundle.dtype} on {bundle.device}")


__all__ = ["STACKS", "Bundle", "BundleError", "Manifest", "build_full_bundle", "build_tiny_bundle",
           "check_bundle", "default_manifest", "full_parameter_counts", "load_bundle", "read_manifest",
           "resolve_bundle", "tiny_clip_tokenizer", "write_tiny_bundle"]
