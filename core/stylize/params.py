"""Parameters of diffusion styles, validated without importing torch.

``core/styles.py`` imports this module to validate ``backend = "diffusion"`` presets, so it must
stay light: no torch, diffusers or transformers here.

A diffusion style's ``params``:

``prompt``       what the picture should look like (sd-turbo's text)
``instruction``  how to change the frame (the edit stacks' text: pix2pix, mllm-edit)
                 — a style needs at least one; each stack falls back to the other
``strength``     how far from the frame to go, (0, 1] (default: the bundle's)
``steps``        denoising steps, 1-8 (default: the bundle's; the stacks are distilled for 1-4)
``seed``         the stream's fixed noise, a whole number >= 0 (default 0)
``stack``        the stack the style is written for; a bundle of another stack refuses it

Streaming-engine policies (see ``engine.py``; the engine's settings otherwise):
``refresh``        vision-aware conditioning every N batches (whole number >= 1)
``broadcast``      encode one representative frame per batch and broadcast it (true/false)
``lllite_refresh`` LLLite conditioning every M batches (whole number >= 1)
``feedback``       weight of the previous output in each frame, [0, 1)
``feedback_warp``  move the previous output along the optical flow before blending (true/false)
``skip_threshold`` reuse the last output while frames change less than this (8-bit levels, >= 0)
"""

from __future__ import annotations

from ..styles import register_backend_params
from . import stacks as _stacks
MAX_STEPS = 8
MAX_TEXT = 2000
_KEYS = ("prompt", "instruction", "strength", "steps", "seed", "stack",
         "refresh", "broadcast", "lllite_refresh", "feedback", "feedback_warp", "skip_threshold")


def validate(params: dict) -> dict:
    """Check a diffusion style's params; return them with ``seed`` filled in."""
    if not isinstance(params, dict):
        raise ValueError(f"diffusion params must be a table, got {type(params).__name__}")
    unknown = sorted(set(params) - set(_KEYS))
    if unknown:
        raise ValueError(f"diffusion styles have no parameter(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(_KEYS)})")
    out = dict(params)
    for key in ("prompt", "instruction"):
        if key in out:
            text = out[key]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{key!r} must be a non-empty string")
            if len(text) > MAX_TEXT:
                raise ValueError(f"{key!r} is {len(text)} characters; keep it under {MAX_TEXT}")
            out[key] = text.strip()
    if "prompt" not in out and "instruction" not in out:
        raise ValueError("a diffusion style needs a 'prompt' (what to paint) or an 'instruction' (how to edit)")
    if "strength" in out:
        s = out["strength"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise ValueError(f"'strength' must be a number in (0, 1], got {s!r}")
        out["strength"] = float(s)
    if "steps" in out:
        n = out["steps"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STEPS:
            raise ValueError(f"'steps' must be a whole number from 1 to {MAX_STEPS}, got {n!r}")
    seed = out.setdefault("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"'seed' must be a whole number >= 0, got {seed!r}")
    for key in ("refresh", "lllite_refresh"):
        n = out.get(key, 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{key!r} must be a whole number of batches >= 1, got {n!r}")
    for key in ("broadcast", "feedback_warp"):
        if not isinstance(out.get(key, False), bool):
            raise ValueError(f"{key!r} must be true or false, got {out[key]!r}")
    for key, ok, what in (("feedback", lambda v: 0 <= v < 1, "in [0, 1)"),
                          ("skip_threshold", lambda v: v >= 0, ">= 0")):
        v = out.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
            raise ValueError(f"{key!r} must be a number {what}, got {v!r}")
        if key in out:
            out[key] = float(v)
    if "stack" in out and out["stack"] not in _stacks.STACKS:  # the records, read now: one table
        raise ValueError(f"unknown stack {out['stack']!r} (known: {', '.join(_stacks.STACKS)})")
    return out


register_backend_params("diffusion", validate)
