"""Where a bundle's files are: a local folder, a hub repository of a bundle, or a stack's public
weights assembled from the hub cache.

Contract: :func:`resolve_bundle` returns the manifest and a local folder per component
(:class:`ResolvedBundle`), downloading from the hub only when the user has not asked for no
network (``HF_HUB_OFFLINE``), and only configs, tokenizer files and safetensors weights. It
checks no file contents (``checks.py`` does); every failure is one :class:`BundleError` the user
can act on. Downloaded manifests may name only folders inside their own repository.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import stacks as _stacks
from ..stacks import OPTIONAL
from .manifest import (MANIFEST_NAMES, BundleError, ComponentRef, Manifest, default_manifest, read_json,
                       read_manifest)

log = logging.getLogger(__name__)


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
    #: The user's bundle folder (symlinks resolved) that its components must stay inside; None
    #: for bundles assembled from the hub cache (huggingface_hub lays those out).
    root: Path | None = None
    #: Components the manifest of a local folder places at an absolute path of the user's
    #: choosing: allowed outside ``root``, and said when loading.
    outside: frozenset[str] = frozenset()


def resolve_bundle(ref: str | os.PathLike, *, offline: bool | None = None,
                   progress: bool = False) -> ResolvedBundle:
    """Manifest and local component folders for a bundle folder, hub id or stack alias."""
    offline = offline_requested() if offline is None else offline
    text = os.fspath(ref)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return _resolve_folder(folder, offline, progress)
    hub_stacks = {name: st.hub for name, st in _stacks.STACKS.items() if st.hub}
    if text in hub_stacks:
        manifest = default_manifest(text, components={k: {"repo": r, "subfolder": s}
                                                     for k, (r, s) in hub_stacks[text].items()})
        return ResolvedBundle(manifest, _component_paths(manifest, None, offline, progress), text)
    if folder.exists():
        raise BundleError(f"{folder} is a file, not a bundle folder")
    if folder.is_absolute() or text.startswith((".", "~")):
        # Plainly a path (a folder the user picked once, now moved, deleted or on a drive that
        # is not connected): say that, not what a hub id looks like.
        raise BundleError(f"the model folder {folder} does not exist (moved or deleted, or on a drive "
                          f"that is not connected)")
    if not _HUB_ID.match(text):
        raise BundleError(f"bundle {text!r}: no such folder, and not a hub id (owner/name) "
                          f"or a stack name ({', '.join(hub_stacks)})")
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
    # An absolute path in the user's own manifest is a choice; anything else stays inside.
    outside = frozenset(name for name, ref in manifest.components.items()
                        if ref.repo is None and ref.path is not None and Path(ref.path).expanduser().is_absolute())
    return ResolvedBundle(manifest, _component_paths(manifest, folder, offline, progress), origin or str(folder),
                          root=folder.resolve(), outside=outside)


def _infer_manifest(folder: Path) -> Manifest:
    """The stack of a plain diffusers folder without a manifest, from its U-Net's input channels."""
    config = folder / "unet" / "config.json"
    if not (folder / "qwen").is_dir() and not config.is_file():
        raise BundleError(f"{folder} has no manifest ({' or '.join(MANIFEST_NAMES)}) and no unet/config.json; "
                          f"it is not a bundle (`stylecam models tiny --stack sd-turbo --out DIR` writes one)")
    # A qwen/ folder means a vision-aware stack; otherwise 8 U-Net input channels mean the
    # frame's latent rides in extra channels (4 of noise + 4 of source).
    vision = (folder / "qwen").is_dir()
    channel = not vision and read_json(config).get("in_channels") == 8
    stack = next(st.name for st in _stacks.STACKS.values()
                 if st.vision == vision and (vision or (st.concat_modes[0] == "channel") == channel))
    log.info("%s has no manifest; using the default %s settings", folder, stack)
    return default_manifest(stack)


def _component_paths(manifest: Manifest, folder: Path | None, offline: bool, progress: bool,
                     hub_repo: str | None = None) -> dict[str, Path]:
    names = list(_stacks.STACKS[manifest.stack].components) + [n for n in OPTIONAL if n in manifest.components]
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
            # A downloaded manifest names folders of its own repository, nothing else.
            if not _plain_relative(ref.path or name):
                raise BundleError(f"bundle {hub_repo}: component {name!r} points to {ref.path!r}, outside the "
                                  f"repository; only folders inside it can be used")
            ref = ComponentRef(repo=hub_repo, subfolder=(ref.path or name).strip("/"))
        if ref.repo is None:
            if folder is None:
                raise BundleError(f"component {name!r} of the {manifest.stack} stack has no location")
            paths[name] = folder / Path(ref.path or name).expanduser()
        else:
            by_repo.setdefault(ref.repo, []).append((name, ref.subfolder))
    # One snapshot per repository (one progress bar, one listing), restricted to the files the
    # components need.
    for repo, parts in by_repo.items():
        root = fetch_repo(repo, [sub for _, sub in parts], offline=offline, progress=progress)
        for name, sub in parts:
            paths[name] = root / sub if sub else root
    return paths


def _plain_relative(path: str) -> bool:
    """A relative path that cannot climb out of its folder (no "..", not absolute)."""
    p = Path(path)
    return not p.is_absolute() and ".." not in p.parts and not path.startswith("~")


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
