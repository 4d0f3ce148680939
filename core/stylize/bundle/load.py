"""The loaded bundle: :class:`Bundle` (its models) and :func:`load_bundle`.

Contract: :func:`load_bundle` resolves (``hub.py``), checks every file (``checks.py``) and only
then calls the libraries' ``from_pretrained`` with ``use_safetensors=True`` and
``local_files_only=True`` (never remote code); any failure is one :class:`BundleError` and
nothing stays loaded half-way. :meth:`Bundle.save` writes a folder the same loader reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .checks import _Checked, check_bundle
from .hub import resolve_bundle
from .manifest import BundleError, Manifest

log = logging.getLogger(__name__)


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
            from ..lllite import save_adapters

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
    for name in sorted(resolved.outside):
        log.warning("bundle %s: the %s component comes from %s, outside the bundle folder (its manifest "
                    "names that path)", resolved.origin, name, resolved.paths[name])
    m = resolved.manifest
    parts: dict[str, Any] = {}
    for name, c in checked.items():
        try:
            with quiet_libraries():
                parts[name] = _load_component(name, c, m, dtype, parts)
        except Exception as e:  # corrupt safetensors, adapter shapes, config keys from a newer library
            parts.clear()
            from ..lllite import LLLiteError

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
        from ..qwen_vl import QwenVLConditioner

        return QwenVLConditioner.from_pretrained(c.path, c.path, image_size=m.image_size, text_length=m.text_length,
                                                 pad_to_multiple_of=m.text_bucket or None, dtype=dtype,
                                                 local_files_only=True)
    if name == "lllite":
        from .. import lllite

        if c.weight_file.is_dir():
            return lllite.load_adapters(c.weight_file, loaded["unet"]).to(dtype)
        return lllite.load_kohya(c.weight_file, loaded["unet"], width_concat=2 if m.concat == "width" else 1).to(dtype)
    raise BundleError(f"unknown component {name!r}")


def bundle_nbytes(folder: str | os.PathLike) -> int:
    """Bytes of every file in a bundle folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def describe(bundle: Bundle) -> str:
    """One line: stack, origin, size, steps, strength, U-Net size, dtype and device."""
    m = bundle.manifest
    n = count_parameters(bundle.unet)
    return (f"{m.stack} bundle from {bundle.origin}: {m.size[0]}x{m.size[1]}, {m.steps} step(s), strength "
            f"{m.strength:g}, U-Net {n / 1e6:.1f} M parameters, {bundle.dtype} on {bundle.device}")


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters of a module (any device, meta included)."""
    return sum(p.numel() for p in module.parameters())
