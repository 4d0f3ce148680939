"""Denoiser steps with explicit tensor inputs and fixed shapes, and TAESD encode/decode.

One step function per stack takes the current sample, the model timestep, the conditioning and
(for the edit stacks) the source latent, and returns the next sample. The scheduler maths is
plain tensor arithmetic on constants computed once on the host from the bundle's diffusers
scheduler (``set_timesteps`` runs there, never per frame), so a step does no host
synchronisation and compiles to one graph. :class:`Denoiser` unrolls the steps of one style.

Latent conventions. ``encode_frames`` returns latents in the *diffusion* space the U-Net works
in: TAESD (``AutoencoderTiny``) already outputs SD's scaled latents (its ``scaling_factor`` is
1.0; its ``scale_latents``/``unscale_latents`` are only for 8-bit storage and are not used); an
``AutoencoderKL`` gives ``(mode - shift_factor) * scaling_factor``. ``decode_latents`` undoes
that. TAESD's decoder clamps its input with ``tanh(x / 3) * 3`` and outputs [-1, 1].

Sample spaces. DDPM-family stacks (sd-turbo, pix2pix) run Euler in sigma space as diffusers'
``EulerDiscreteScheduler`` does: the U-Net sees ``sample / sqrt(sigma² + 1)`` and predicts
epsilon (or v). The flow stack (mllm-edit) interpolates ``(1 - sigma) * x0 + sigma * noise``
and the U-Net predicts the velocity ``noise - x0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .bundle import Bundle, Manifest
from . import stacks

#: Model outputs and latents are clamped to this magnitude (finite in float16, whose largest
#: value is 65504): a random-weight U-Net in half precision can overflow to inf, and one inf
#: turns the whole next step into NaN.
FINITE_LIMIT = 1.0e4


# --------------------------------------------------------------------------------------------
# Schedules (host side, once per style)


@dataclass(frozen=True)
class Schedule:
    """The constants of a few-step run, as Python floats (baked into a compiled graph).

    ``timesteps[i]`` is what the U-Net gets at step i; ``sigmas`` has one more entry than
    ``timesteps`` and ends at 0. ``from_noise``: start from pure noise scaled by ``init_sigma``
    (strength 1) rather than from the source latent noised to ``sigmas[0]``.
    """

    kind: str  # "epsilon" | "v_prediction" | "flow"
    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]
    from_noise: bool
    init_sigma: float

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def inference_steps(steps: int, strength: float) -> int:
    """Scheduler steps to set so that the last ``steps`` of them start at ``strength``.

    diffusers' img2img keeps ``int(n * strength)`` of ``n`` steps; the smallest n with
    ``int(n * strength) == steps`` is ``ceil(steps / strength)``.
    """
    if strength >= 1.0:
        return steps
    return max(steps, math.ceil(steps / strength - 1e-9))


def flow_sigmas(n: int) -> list[float]:
    """The flow-matching pipelines' default sigmas for ``n`` steps (before any shift)."""
    if n == 1:
        return [1.0]
    return [1.0 - i * (1.0 - 1.0 / n) / (n - 1) for i in range(n)]


def flow_shift_mu(config, latent_hw: tuple[int, int]) -> float | None:
    """The resolution-dependent shift ``mu`` for schedulers with dynamic shifting (else None)."""
    if not config.get("use_dynamic_shifting", False):
        return None
    seq = (latent_hw[0] // 2) * (latent_hw[1] // 2)
    base_seq, max_seq = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_seq - base_seq)
    return seq * m + base_shift - m * base_seq


def latent_size(manifest: Manifest, vae) -> tuple[int, int]:
    """(h, w) of a frame's latent at the bundle's engine size."""
    factor = vae_scale_factor(vae)
    w, h = manifest.size
    return h // factor, w // factor


def vae_scale_factor(vae) -> int:
    cfg = vae.config
    if type(vae).__name__ == "AutoencoderTiny":
        return 2 ** (len(cfg.encoder_block_out_channels) - 1)
    return 2 ** (len(cfg.block_out_channels) - 1)


def sd_scheduler(bundle: Bundle):
    """Deterministic Euler over the bundle scheduler's training schedule (any DDPM-family class)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(bundle.scheduler.config,
                                              timestep_spacing=bundle.manifest.timestep_spacing)


def flow_scheduler(bundle: Bundle):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(bundle.scheduler.config)


def make_schedule(bundle: Bundle, steps: int | None = None, strength: float | None = None) -> Schedule:
    """Run the scheduler's ``set_timesteps`` once on the host and keep the numbers."""
    m = bundle.manifest
    steps = int(steps or m.steps)
    strength = float(strength if strength is not None else m.strength)
    if not 1 <= steps <= 50:
        raise ValueError(f"steps must be from 1 to 50, got {steps}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    n = inference_steps(steps, strength)
    if stacks.STACKS[m.stack].flow:
        sched = flow_scheduler(bundle)
        sched.set_timesteps(sigmas=flow_sigmas(n), mu=flow_shift_mu(sched.config, latent_size(m, bundle.vae)))
        kind, init_sigma = "flow", 1.0
    else:
        sched = sd_scheduler(bundle)
        sched.set_timesteps(n)
        kind = sched.config.prediction_type
        if kind not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {kind!r} is not supported (epsilon or v_prediction)")
        init_sigma = float(sched.init_noise_sigma)
    timesteps = [float(t) for t in sched.timesteps[n - steps:]]
    sigmas = [float(s) for s in sched.sigmas[n - steps:]]
    return Schedule(kind=kind, timesteps=tuple(timesteps), sigmas=tuple(sigmas),
                    from_noise=strength >= 1.0, init_sigma=init_sigma)


# --------------------------------------------------------------------------------------------
# TAESD / VAE


def frames_to_tensor(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """RGB uint8 ``(B, H, W, 3)`` -> float ``(B, 3, H, W)`` in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).to(dtype).div(127.5).sub(1.0)


@torch.no_grad()
def encode_frames(vae, frames: torch.Tensor) -> torch.Tensor:
    """RGB uint8 ``(B, H, W, 3)`` on the VAE's device -> diffusion-space latents ``(B, C, H/8, W/8)``."""
    x = frames_to_tensor(frames, vae.dtype)
    cfg = vae.config
    if type(vae).__name__ == "AutoencoderTiny":
        raw = vae.encode(x, return_dict=False)[0]
    else:
        raw = vae.encode(x, return_dict=False)[0].mode()
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return (raw - shift) * cfg.scaling_factor if (shift or cfg.scaling_factor != 1.0) else raw


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latents -> RGB uint8 ``(B, H, W, 3)`` on the same device."""
    cfg = vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    z = latents.to(vae.dtype)
    if shift or cfg.scaling_factor != 1.0:
        z = z / cfg.scaling_factor + shift
    y = vae.decode(z, return_dict=False)[0]
    return (y.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
            .permute(0, 2, 3, 1).contiguous())


# --------------------------------------------------------------------------------------------
# Step functions: one per stack, explicit tensors in, next sample out

UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def finite(x: torch.Tensor, limit: float = FINITE_LIMIT) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=limit, neginf=-limit).clamp_(-limit, limit)


def _euler_x0(sample: torch.Tensor, out: torch.Tensor, sigma: float, kind: str) -> torch.Tensor:
    if kind == "epsilon":
        return sample - sigma * out
    # v-prediction in sigma space (diffusers' EulerDiscreteScheduler)
    return sample / (sigma * sigma + 1.0) - out * (sigma / math.sqrt(sigma * sigma + 1.0))


def _euler_next(sample: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    # dx/dsigma = (sample - x0) / sigma, one Euler step to sigma_next (x0 itself when it is 0).
    return sample + (sample - x0) * ((sigma_next - sigma) / sigma)


def sd_turbo_step(unet: UNetFn, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor, *,
                  sigma: float, sigma_next: float, kind: str = "epsilon") -> torch.Tensor:
    """One img2img Euler step of a 4-channel U-Net (sample in sigma space, float32)."""
    x_in = (sample * (1.0 / math.sqrt(sigma * sigma + 1.0))).to(cond.dtype)
    out = finite(unet(x_in, timestep, cond).float())
    return _euler_next(sample, _euler_x0(sample, out, sigma, kind), sigma, sigma_next)


def pix2pix_step(unet: UNetFn, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor,
                 source: torch.Tensor, *, sigma: float, sigma_next: float, kind: str = "epsilon") -> torch.Tensor:
    """One Euler step of a channel-concat edit U-Net: input ``[scaled sample, source latent]``."""
    x_in = (sample * (1.0 / math.sqrt(sigma * sigma + 1.0))).to(cond.dtype)
    out = finite(unet(torch.cat([x_in, source.to(cond.dtype)], dim=1), timestep, cond).float())
    return _euler_next(sample, _euler_x0(sample, out, sigma, kind), sigma, sigma_next)


def mllm_edit_step(unet: UNetFn, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor,
                   source: torch.Tensor, *, sigma: float, sigma_next: float, concat: str = "width") -> torch.Tensor:
    """One flow-matching Euler step of the in-context edit U-Net.

    ``concat="width"``: the U-Net sees ``[noisy | source]`` side by side (B, C, h, 2w) and its
    output's left half is the velocity; ``"channel"``: stacked along channels.
    """
    x = sample.to(cond.dtype)
    src = source.to(cond.dtype)
    if concat == "width":
        out = unet(torch.cat([x, src], dim=3), timestep, cond)[..., : sample.shape[3]]
    else:
        out = unet(torch.cat([x, src], dim=1), timestep, cond)
    return sample + finite(out.float()) * (sigma_next - sigma)


# --------------------------------------------------------------------------------------------
# The unrolled denoiser of one style


def unet_function(unet) -> UNetFn:
    """``f(x, t, cond) -> output`` for a diffusers U-Net or a folded LLLite U-Net."""
    from .lllite import FoldedLLLiteUNet

    if isinstance(unet, FoldedLLLiteUNet):
        return unet
    return lambda x, t, cond: unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]


class Denoiser(torch.nn.Module):
    """All steps of one style: ``(source latent, noise, conditioning) -> denoised latent``.

    Inputs keep fixed shapes: ``source_latent`` (B, C, h, w), ``noise`` (1 or B, C, h, w) — the
    stream's fixed noise —, ``cond`` (1 or B, L, D). The constants of the schedule are Python
    floats, so the unrolled loop is straight-line tensor code. ``source_scale`` multiplies the
    source latent the edit stacks see (pix2pix U-Nets were trained on unscaled latents).
    """

    def __init__(self, unet, manifest: Manifest, schedule: Schedule):
        super().__init__()
        self.unet = unet
        self.schedule = schedule
        self.stack = manifest.stack
        self.concat = manifest.concat
        self.source_scale = float(manifest.source_scale)
        fn = unet_function(unet)
        kind = schedule.kind
        # Pick the step once here: nothing string-valued is tested per frame. The stack's
        # scheduler family and how the frame enters the U-Net decide it.
        if not stacks.STACKS[self.stack].flow and self.concat == "none":
            self._step = lambda s, t, c, src, a, b: sd_turbo_step(fn, s, t, c, sigma=a, sigma_next=b, kind=kind)
        elif not stacks.STACKS[self.stack].flow:
            self._step = lambda s, t, c, src, a, b: pix2pix_step(fn, s, t, c, src, sigma=a, sigma_next=b, kind=kind)
        else:
            concat = self.concat
            self._step = lambda s, t, c, src, a, b: mllm_edit_step(fn, s, t, c, src, sigma=a, sigma_next=b,
                                                                   concat=concat)

    def init_sample(self, source_latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        s = self.schedule
        x0 = source_latent.float()
        noise = noise.float().expand_as(x0)
        if s.from_noise:
            return noise * s.init_sigma
        sigma = s.sigmas[0]
        if s.kind == "flow":
            return x0 * (1.0 - sigma) + noise * sigma
        return x0 + noise * sigma

    def forward(self, source_latent: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.schedule
        sample = self.init_sample(source_latent, noise)
        source = source_latent * self.source_scale if self.source_scale != 1.0 else source_latent
        batch = source_latent.shape[0]
        if cond.shape[0] != batch:
            cond = cond.expand(batch, -1, -1)
        for i, t in enumerate(s.timesteps):
            timestep = torch.full((), t, dtype=torch.float32, device=sample.device)
            sample = self._step(sample, timestep, cond, source, s.sigmas[i], s.sigmas[i + 1])
        return finite(sample).to(source_latent.dtype)


def stream_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixed per-stream noise (float32, CPU): the same seed gives the same noise anywhere."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


__all__ = ["Denoiser", "Schedule", "decode_latents", "encode_frames", "finite", "make_schedule",
           "mllm_edit_step", "pix2pix_step", "sd_turbo_step", "stream_noise"]
