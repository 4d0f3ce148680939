"""Checking a resolved bundle's files before anything loads.

Contract: :func:`check_bundle` reads only configs, index files and the file tree (no weights, no
model library) and either returns what it found per component or raises one
:class:`BundleError` that lists every problem with the file it is in. What it enforces:

* weights are safetensors only: a ``*.safetensors.index.json`` may name only ``*.safetensors``
  shards in its own folder, and pickle files (``.bin``, ``.pt``, ...) are refused;
* a local bundle's components stay inside the bundle folder after symlinks are resolved (a
  ``../elsewhere`` in the manifest, a symlinked component folder or file pointing out), except a
  component the manifest names by an absolute path, which the user wrote on purpose;
* configs name known classes, and the shapes that must agree between components do;
* every weight file it will load is whole, read from its header (``damage.py``): one cut short by
  an interrupted download is named here, not met as an ``OSError`` inside the model library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .. import stacks as _stacks
from ..damage import safetensors_problem
from .hub import ResolvedBundle
from .manifest import BundleError, Manifest, read_json

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: A tokenizer's JSON files, where present.
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "special_tokens_map.json",
                   "added_tokens.json")

_SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDPMScheduler", "DDIMScheduler",
               "LCMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler")
_FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)


@dataclass(frozen=True)
class _Spec:
    """What one component folder must hold."""

    config: str | None = None           # the config file ...
    key: str = ""                       # ... its field that names the class ...
    allowed: tuple[str, ...] = ()       # ... and the values we can load
    weights: str | None = None          # stem of the safetensors weights (None: no weights)
    tokenizer: bool = False             # tokenizer files too


_SPECS = {
    "unet": _Spec("config.json", "_class_name", ("UNet2DConditionModel",), "diffusion_pytorch_model"),
    "vae": _Spec("config.json", "_class_name", ("AutoencoderTiny", "AutoencoderKL"), "diffusion_pytorch_model"),
    "text_encoder": _Spec("config.json", "model_type", ("clip_text_model",), "model"),
    "tokenizer": _Spec(tokenizer=True),
    "scheduler": _Spec("scheduler_config.json", "_class_name", _SCHEDULERS),
    "qwen": _Spec("config.json", "model_type", ("qwen3_vl",), "model", tokenizer=True),
}


@dataclass(frozen=True)
class _Checked:
    path: Path
    variant: str | None = None
    config: Mapping = field(default_factory=dict)
    weight_file: Path | None = None
    files: tuple[Path, ...] = ()       # the weight files it will load (each checked whole)


def check_bundle(resolved: ResolvedBundle) -> dict[str, _Checked]:
    """Check every component's files and their agreement; raise one BundleError listing all problems."""
    m = resolved.manifest
    checked: dict[str, _Checked] = {}
    problems = _outside_problems(resolved)
    for name, path in resolved.paths.items():
        c, p = _check_component(name, path)
        problems += p
        if c is not None:
            checked[name] = c
            for file in c.files:
                problem = safetensors_problem(file)
                if problem:
                    problems.append(BundleError(problem, damaged=(file,)))
    if not problems:
        problems += _cross_check(m, checked)
    if problems:
        # A problem is its sentence; one found damaged (a file cut short...) also carries the file.
        texts = [str(p) for p in problems]
        damaged = tuple(f for p in problems if isinstance(p, BundleError) for f in p.damaged)
        head = f"bundle {resolved.origin} ({m.stack}) cannot be loaded"
        raise BundleError(head + ": " + "; ".join(texts) if len(texts) == 1
                          else head + ":\n  - " + "\n  - ".join(texts), damaged=damaged)
    return checked


# --------------------------------------------------------------------------------------------
# Components stay inside the bundle folder


def _outside_problems(resolved: ResolvedBundle) -> list[str]:
    """Components of a local bundle (and anything in their folders) that resolve outside it."""
    root = resolved.root
    if root is None:
        return []
    fix = ("copy it into the bundle folder, or name its absolute path in the manifest's components "
           "if it is meant to live elsewhere")
    problems = []
    for name, path in resolved.paths.items():
        if name in resolved.outside or not path.exists():
            continue  # chosen on purpose (said when loading) / reported as missing below
        real = path.resolve()
        if not real.is_relative_to(root):
            problems.append(f"{path} (the {name} component) resolves to {real}, outside the bundle "
                            f"folder {root}; {fix}")
            continue
        for entry, target in _escaping_entries(real, root):
            problems.append(f"{entry} (in the {name} component) is a link to {target}, outside the bundle "
                            f"folder {root}; {fix}")
    return problems


def _escaping_entries(folder: Path, root: Path) -> list[tuple[Path, Path]]:
    """(entry, where it resolves) for every entry under ``folder`` whose real path is outside
    ``root``. Follows links that stay inside, each real folder once (a link loop ends)."""
    found, seen, todo = [], set(), [folder]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # unreadable: the component check reports what it cannot read
        for entry in entries:
            path = Path(entry.path)
            real = path.resolve()
            if not real.is_relative_to(root):
                found.append((path, real))
            elif real.is_dir():
                todo.append(real)
    return found


# --------------------------------------------------------------------------------------------
# One component's files


def _check_component(name: str, folder: Path) -> tuple[_Checked | None, list[str | BundleError]]:
    if not folder.is_dir():
        return None, [f"{folder} is missing (the {name} component)"]
    if name == "lllite":
        return _check_lllite(folder)
    spec = _SPECS.get(name)
    if spec is None:
        return None, [f"unknown component {name!r}"]
    problems: list[str | BundleError] = []
    cfg: dict = {}
    if spec.config:
        cfg = _config(folder / spec.config, spec.key, spec.allowed, problems)
    variant, files = None, ()
    if spec.weights:
        variant, problem, files = _weights(folder, spec.weights)
        problems += [problem] if problem else []
    if spec.tokenizer and not ((folder / "tokenizer.json").is_file()
                               or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        problems.append(f"{folder} has no tokenizer files (expected tokenizer.json, or vocab.json + merges.txt)")
    if spec.tokenizer:
        # The tokenizer libraries parse these with no word of which file failed.
        for text in _TOKENIZER_JSON:
            if (folder / text).is_file():
                try:
                    read_json(folder / text)
                except BundleError as e:
                    problems.append(e)
    return _Checked(folder, variant, cfg, files=files), problems


def _config(path: Path, key: str, allowed: tuple[str, ...], problems: list) -> dict:
    if not path.is_file():
        problems.append(f"{path} is missing")
        return {}
    try:
        cfg = read_json(path)
    except BundleError as e:
        problems.append(e)
        return {}
    if cfg.get(key) not in allowed:
        problems.append(f"{path}: {key} is {cfg.get(key)!r}, expected {' or '.join(allowed)}")
    return cfg


def _weights(folder: Path, stem: str) -> tuple[str | None, str | BundleError | None, tuple[Path, ...]]:
    """(variant, problem, the files to load) for the safetensors weights
    ``stem``[.variant].safetensors[.index.json]."""
    for variant in (None, "fp16", "bf16"):
        name = f"{stem}.{variant}" if variant else stem
        index = folder / f"{name}.safetensors.index.json"
        if index.is_file():
            # The libraries load whatever shard files an index names: check them ourselves.
            problem, shards = _index_shards(index)
            return variant, problem, shards
        if (folder / f"{name}.safetensors").is_file():
            return variant, None, (folder / f"{name}.safetensors",)
    others = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))
    if others:
        return None, (f"{others[0]} is a pickle weight file; stylecam loads only safetensors "
                      f"(expected {folder / (stem + '.safetensors')}; convert it, or download the "
                      f"component's .safetensors file)"), ()
    return None, f"{folder} has no weights (expected {folder / (stem + '.safetensors')})", ()


def _index_shards(index: Path) -> tuple[str | BundleError | None, tuple[Path, ...]]:
    """(what is wrong with a sharded-weights index, the shard files it names): every shard must be
    a ``.safetensors`` file beside it; no shards where anything is wrong."""
    try:
        weight_map = read_json(index).get("weight_map")
    except BundleError as e:
        return e, ()
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        return f"{index} has no weight_map of parameter -> shard file; replace it with the component's original", ()
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not shard.endswith(".safetensors"):
            return (f"{index} names the shard {shard!r}, which is not a .safetensors file; stylecam loads only "
                    f"safetensors (convert the shards, or download the component's .safetensors files)"), ()
        if Path(shard).name != shard:
            return f"{index} names the shard {shard!r} outside its own folder; shards must sit beside the index", ()
        if not (index.parent / shard).is_file():
            return f"{index} names the shard {shard!r}, which is missing from {index.parent}", ()
    return None, tuple(index.parent / shard for shard in shards)


def _check_lllite(folder: Path) -> tuple[_Checked, list[str]]:
    """Our layout (lllite_config.json + lllite.safetensors, diffusers names) or one kohya file."""
    problems: list[str] = []
    weight_file = None
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
    files = (folder / "lllite.safetensors",) if weight_file == folder else (weight_file,) if weight_file else ()
    return _Checked(folder, None, {}, weight_file, files=tuple(f for f in files if f.is_file())), problems


# --------------------------------------------------------------------------------------------
# Shapes that must agree


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
    needs_flow = _stacks.STACKS[m.stack].flow
    if flow != needs_flow:
        want = "a flow-matching scheduler" if needs_flow else "a DDPM-family (Euler/LCM/DDIM) scheduler"
        problems.append(f"{c['scheduler'].path / 'scheduler_config.json'}: {sched} but the {m.stack} stack "
                        f"needs {want}")
    levels = len(unet.get("block_out_channels", ())) - 1
    vae_factor = 8
    w, h = m.size
    for side in (w, h):
        if side % (vae_factor * 2 ** max(levels, 0)):
            problems.append(f"manifest size {w}x{h}: sides must be multiples of {vae_factor * 2 ** max(levels, 0)} "
                            f"for this U-Net ({levels + 1} levels) and VAE")
            break
    return problems
