"""The diffusion backend: a thin adapter from the :class:`~.base.Backend` interface to the
streaming engine (:mod:`.engine`, or a pool of engines over several devices, :mod:`.devices`).

``stylecam run --backend diffusion --bundle PATH_OR_ID`` lands here. The backend loads the bundle
(safetensors only), checks a style against it, and hands frames to the engine at the source's own
size; the engine resizes them on the device to the model size and its output to the size the
runner asked for (:meth:`DiffusionBackend.set_output_size`), so the host never resizes.

It computes what :func:`~.reference.stylize_frames` computes; the tests hold it to that.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..styles import Style
from .base import Backend, BackendError
from .bundle import HUB_BUNDLES, Bundle, BundleError, check_bundle, describe, load_bundle, resolve_bundle
from .denoiser import make_schedule
from .engine import EngineError
from .params import style_settings

log = logging.getLogger(__name__)

from .stacks import DEFAULT_STACK  # noqa: E402  (the record's module says which stack is the default)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU half precision is slow and lossy


class DiffusionBackend(Backend):
    """Stylizes with a model bundle (see :mod:`.bundle`) on CUDA if there is one, else the CPU.

    ``bundle``: a folder, hub id, stack alias or loaded :class:`Bundle`; None takes sd-turbo
    from the hub cache (never downloading). ``batch_size``: frames per U-Net call (default 4 on
    a GPU, 1 on the CPU). ``qwen_fast``: the Qwen3-VL conditioner's sync-free forward (default
    on for CUDA). ``engine``: :class:`~.engine.EngineSettings` fields for the streaming engine
    (``mode``, ``refresh``, ...; the benchmark's end-to-end rows use it to match the engine-only
    rows); a style's own engine keys still apply over them. ``devices``: a device list
    (:mod:`.devices`: ``"0,1"`` splits the encoders and the U-Net over two GPUs, ``"all"`` runs
    one engine per GPU; None: ``device``), also taken from ``engine["devices"]``.
    """

    name = "diffusion"
    resizes = True

    def __init__(self, bundle=None, device=None, *, dtype: torch.dtype | None = None,
                 batch_size: int | None = None, offline: bool | None = None, qwen_fast: bool | None = None,
                 engine: dict | None = None, devices=None, **options):
        if options:
            raise BackendError(f"the diffusion backend has no option(s) {', '.join(sorted(options))}")
        from .devices import parse_devices

        engine = dict(engine or {})
        try:
            plan = parse_devices(devices if devices is not None else engine.get("devices"))
        except ValueError as e:
            raise BackendError(str(e)) from None
        engine["devices"] = str(plan) if plan is not None else None  # settings stay plain data
        if plan is not None:
            device = plan.devices[0]
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.batch_size = int(batch_size or (4 if self.device.type == "cuda" else 1))
        # On CUDA the engine overlaps batch k+1's encoders with batch k's U-Net: let the runner
        # keep two batches in flight. On the CPU everything runs in turn, so one is enough.
        self.max_inflight = (2 * (plan.engines if plan is not None else 1)) if self.device.type == "cuda" else 1
        if self.batch_size < 1:
            raise BackendError(f"batch_size must be 1 or more, got {batch_size}")
        self.bundle: Bundle | None = _load(bundle, self.device, self.dtype, offline)
        b = self.bundle
        m = b.manifest
        log.info("diffusion backend: %s, batch %d", describe(b), self.batch_size)
        self.size = m.size
        if b.qwen is not None:
            b.qwen.fast = self.device.type == "cuda" if qwen_fast is None else bool(qwen_fast)
        self._engine = None  # the streaming engine runs process(); made at the first style
        self._engine_options = engine
        self._out_size: tuple[int, int] | None = None

    # -- Backend interface ------------------------------------------------------------------

    def set_style(self, style: Style) -> None:
        if self.bundle is None:
            raise BackendError("the diffusion backend is closed")
        if style.backend != "diffusion":
            raise BackendError(f"style {style.name!r} is for the {style.backend!r} backend, not 'diffusion'")
        m = self.bundle.manifest
        wanted = style.params.get("stack")
        if wanted and wanted != m.stack:
            raise BackendError(f"style {style.name!r} is written for the {wanted} stack, but the bundle "
                               f"{self.bundle.origin} is {m.stack}; pass a {wanted} bundle with --bundle "
                               f"or pick a style without a stack (see `stylecam styles`)")
        settings = style_settings(style.params, self.bundle)
        try:  # checked here, so a bad style is refused before the engine sees it
            make_schedule(self.bundle, settings["steps"], settings["strength"])
        except ValueError as e:
            raise BackendError(f"style {style.name!r}: {e}") from None
        if self._engine is None:
            from .compile import default_mode, fused_vae_override
            from .devices import open_engine
            from .engine_settings import EngineSettings

            fused = fused_vae_override()
            options = {"mode": default_mode(), **({} if fused is None else {"fused_vae": fused}),
                       **self._engine_options, "batch_size": self.batch_size}
            # The base settings, without the style: set_style below lays the style's engine
            # keys over them, and the next style's over them again (not over this one's).
            self._engine = open_engine(self.bundle, EngineSettings(**options))
        self._engine.set_style(style)

    def reset_temporal(self) -> None:
        if self._engine is not None:
            self._engine.reset_temporal()

    def set_output_size(self, size: tuple[int, int] | None) -> None:
        self._out_size = tuple(size) if size is not None else None

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Any number of frames; the engine keeps two batches in flight."""
        self._prepare(images)
        return self._engine.process(images) if images else []

    def submit(self, images: list[np.ndarray]):
        """Queue one batch (at most ``batch_size`` frames) on the streaming engine; returns at once."""
        self._prepare(images)
        return self._engine.submit(images) if images else None

    def collect(self, ticket) -> list[np.ndarray]:
        return [] if ticket is None else self._engine.collect(ticket)

    def pace(self) -> float:
        pace = getattr(self._engine, "pace", None)  # a device pool does not pace
        return pace() if pace is not None else 0.0

    def _prepare(self, images: list[np.ndarray]) -> None:
        # Frames come at the source's size and leave at the sinks' (or their own) size; the
        # engine resizes on the device. A new size re-captures only the resize steps.
        if self._engine is None:
            raise BackendError("set_style must be called before process")
        if not images:
            return
        _check_images(images)
        h, w = images[0].shape[:2]
        try:
            self._engine.set_io_size((w, h), self._out_size or (w, h))
        except EngineError as e:
            raise BackendError(f"the frame size changed to {w}x{h} with batches in flight: {e}") from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()  # unfolds LLLite, restores the VAE/encoder settings
            self._engine = None
        self.bundle = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- for tests and the benchmark's checks ----------------------------------------------

    @torch.no_grad()
    def denoise(self, images: list[np.ndarray]) -> torch.Tensor:
        """The denoised latents ``(len(images), C, h, w)`` the engine makes for up to
        ``batch_size`` frames (of the model size): the tests' tighter check than pixels."""
        if not 1 <= len(images) <= self.batch_size:
            raise BackendError(f"denoise takes 1 to {self.batch_size} frames, got {len(images)}")
        self.process(images)
        return self._engine.latents()[:len(images)].clone()

    # -- streams (base.Backend's contract): the engine's feedback, flow, skip reference and
    # reused conditioning are the stream's (:meth:`.engine.StreamEngine.detach_temporal`).

    def temporal(self, style: Style) -> bool:
        engine = self._engine
        if engine is None or not hasattr(engine, "temporal"):
            return True  # no engine yet, or a pool over several devices: assume it keeps state
        return engine.temporal(style.params)

    def detach_temporal(self):
        if self._engine is None:
            return None
        if not hasattr(self._engine, "detach_temporal"):
            self.reset_temporal()
            return None
        return self._engine.detach_temporal()

    def attach_temporal(self, state) -> None:
        if self._engine is None:
            return
        if not hasattr(self._engine, "attach_temporal"):
            self.reset_temporal()
            return
        self._engine.attach_temporal(state)


def _load(ref, device: torch.device, dtype: torch.dtype, offline: bool | None) -> Bundle:
    if isinstance(ref, Bundle):
        return ref.to(device, dtype).eval()
    if ref is None:
        try:
            resolved = resolve_bundle(DEFAULT_STACK, offline=True)
        except BundleError:
            raise BackendError(f"no bundle given and {DEFAULT_STACK} not in the cache; run `stylecam models "
                               f"pull {DEFAULT_STACK}` or pass --bundle DIR") from None
        try:
            check_bundle(resolved)
        except BundleError as e:
            raise BackendError(f"no bundle given and the cached {DEFAULT_STACK} is incomplete ({e}); run "
                               f"`stylecam models pull {DEFAULT_STACK}` again or pass --bundle DIR") from None
        ref = DEFAULT_STACK
        offline = True
    try:
        return load_bundle(ref, device=device, dtype=dtype, offline=offline)
    except BundleError as e:
        hint = ""
        if e.damaged and isinstance(ref, str) and ref in HUB_BUNDLES:
            hint = f" (`stylecam models pull {ref}` downloads the damaged files again)"
        raise BackendError(f"{e}{hint}") from None


def _check_images(images: list[np.ndarray]) -> None:
    first = images[0]
    for img in images:
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise BackendError(f"the diffusion backend takes RGB uint8 (H, W, 3) frames, got {desc}")
        if img.shape != first.shape:
            raise BackendError(f"frames of one batch must share a size, got {first.shape} and {img.shape}")
