"""The reference stylizer: one frame at a time, written the plain way, as the correctness oracle.

Everything here goes through the libraries' own high-level calls, one frame at a time: the
tokenizer and text encoder without any cache, ``vae.encode``/``vae.decode``, the diffusers
scheduler's ``set_timesteps``/``add_noise``/``scale_model_input``/``step``, the U-Net called
as the pipelines call it, LLLite attached the usual hooked way. The diffusion backend (and
later the streaming engine) batches, caches, folds and precomputes; on the same frames with
the same seed they must give the same pictures as this.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .bundle import Bundle, load_bundle
from . import stacks
from .geometry import resize, to_uint8
from .params import style_settings  # noqa: F401  (the oracle's callers read it here too)
from .denoiser import flow_shift_mu, flow_sigmas, inference_steps, latent_size, stream_noise


@torch.no_grad()
def stylize_frames(frames: list[np.ndarray], style, bundle) -> list[np.ndarray]:
    """Stylize RGB uint8 frames one by one; outputs have each input's size.

    ``style`` is a :class:`~stylecam.core.styles.Style` (or its params mapping); ``bundle`` a
    loaded :class:`Bundle` or anything :func:`load_bundle` takes (then loaded on CPU, float32).
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    params = getattr(style, "params", style)
    return [stylize_frame(frame, params, bundle) for frame in frames]


@torch.no_grad()
def stylize_frame(frame: np.ndarray, params: Mapping, bundle: Bundle) -> np.ndarray:
    # The frame geometry of the engine (:mod:`.geometry`, tested against OpenCV's on its own):
    # stretched to the model size and back, with the same filters.
    h, w = frame.shape[:2]
    image = _resize(frame, bundle.manifest.size)
    latent = reference_latent(image, params, bundle)
    out = _decode(bundle.vae, latent)
    return _resize(out, (w, h))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return to_uint8(resize(torch.from_numpy(np.ascontiguousarray(image))[None], size))[0].numpy()


@torch.no_grad()
def reference_latent(image: np.ndarray, params: Mapping, bundle: Bundle) -> torch.Tensor:
    """The denoised latent (1, C, h, w) of one frame already at the bundle's size."""
    m = bundle.manifest
    s = style_settings(params, bundle)
    device, dtype = bundle.device, bundle.dtype
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device)[None]  # (1, H, W, 3) uint8
    source = _encode(bundle.vae, pixels)
    noise = stream_noise(s["seed"], tuple(source.shape)).to(device)
    cond = _conditioning(bundle, s["text"], pixels)

    lllite = None
    if bundle.lllite is not None:
        from .lllite import attach_reference, to_control_image

        lllite = attach_reference(bundle.unet, bundle.lllite, hooks=m.lllite_subset)
        lllite.set_cond_image(to_control_image(pixels).to(dtype))
    try:
        if stacks.STACKS[m.stack].flow:
            return _flow_loop(bundle, source, noise, cond, s)
        return _euler_loop(bundle, source, noise, cond, s)
    finally:
        if lllite is not None:
            lllite.detach()


def _encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    x = pixels.permute(0, 3, 1, 2).to(vae.dtype) / 127.5 - 1.0
    if type(vae).__name__ == "AutoencoderTiny":
        return vae.encode(x).latents * vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (vae.encode(x).latent_dist.mode() - shift) * vae.config.scaling_factor


def _decode(vae, latent: torch.Tensor) -> np.ndarray:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    y = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor + shift).sample[0]
    y = y.float().permute(1, 2, 0).cpu().numpy()
    return (np.clip(y / 2 + 0.5, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _conditioning(bundle: Bundle, text: str, pixels: torch.Tensor) -> torch.Tensor:
    if bundle.qwen is not None:
        return bundle.qwen.encode(pixels, text).to(bundle.dtype)
    tok = bundle.tokenizer
    ids = tok(text, padding="max_length", max_length=bundle.manifest.text_length, truncation=True,
              return_tensors="pt").input_ids.to(bundle.device)
    return bundle.text_encoder(ids)[0]


def _euler_loop(bundle: Bundle, source, noise, cond, s: dict) -> torch.Tensor:
    from diffusers import EulerDiscreteScheduler

    m = bundle.manifest
    scheduler = EulerDiscreteScheduler.from_config(bundle.scheduler.config, timestep_spacing=m.timestep_spacing)
    n = inference_steps(s["steps"], s["strength"])
    scheduler.set_timesteps(n, device=bundle.device)
    start = n - s["steps"]
    timesteps = scheduler.timesteps[start:]
    scheduler.set_begin_index(start)
    if s["strength"] >= 1.0:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(source.float(), noise, timesteps[:1])
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t).to(bundle.dtype)
        if m.concat == "channel":
            model_input = torch.cat([model_input, (source * m.source_scale).to(bundle.dtype)], dim=1)
        out = bundle.unet(model_input, t, encoder_hidden_states=cond).sample
        latents = scheduler.step(out, t, latents).prev_sample
    return latents


def _flow_loop(bundle: Bundle, source, noise, cond, s: dict) -> torch.Tensor:
    from diffusers import FlowMatchEulerDiscreteScheduler

    m = bundle.manifest
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(bundle.scheduler.config)
    n = inference_steps(s["steps"], s["strength"])
    scheduler.set_timesteps(sigmas=flow_sigmas(n), mu=flow_shift_mu(scheduler.config, latent_size(m, bundle.vae)),
                            device=bundle.device)
    start = n - s["steps"]
    timesteps = scheduler.timesteps[start:]
    scheduler.set_begin_index(start)
    if s["strength"] >= 1.0:
        latents = noise
    else:
        latents = scheduler.scale_noise(source.float(), timesteps[:1], noise)
    width = latents.shape[3]
    for t in timesteps:
        src = (source * m.source_scale).to(bundle.dtype)
        x = latents.to(bundle.dtype)
        if m.concat == "width":
            out = bundle.unet(torch.cat([x, src], dim=3), t, encoder_hidden_states=cond).sample[..., :width]
        else:
            out = bundle.unet(torch.cat([x, src], dim=1), t, encoder_hidden_states=cond).sample
        latents = scheduler.step(out, t, latents).prev_sample
    return latents
