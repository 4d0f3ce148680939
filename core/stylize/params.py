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
``refresh``        vision-aware conditioning every N batches (whole number >= 1; unset: every
                 64 frames whatever the batch size)
``broadcast``      encode one representative frame per batch and broadcast it (true/false;
                 unset: on whenever the conditioning is kept across batches)
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


def _check_table(params, backend: str, known) -> None:
    """A style's params must be a table of known keys; the error names what is wrong."""
    if not isinstance(params, dict):
        raise ValueError(f"{backend} params must be a table, got {type(params).__name__}")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{backend} styles have no parameter(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(known)})")


def validate(params: dict) -> dict:
    """Check a diffusion style's params; return them with ``seed`` filled in."""
    _check_table(params, "diffusion", _KEYS)
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


# --------------------------------------------------------------------------------------------
# Neural styles (core/stylize/neural.py), validated here too so that presets load without torch.
#
# ``style``   which of the 26 built-in styles, by index (0-25) or name (see NEURAL_STYLES)
# ``blend``   a second built-in style to blend with the first, and ``mix`` its weight (0-1,
#             default 0.5): the networks' conditional norms are mixed, not the pictures
# ``image``   instead of a built-in style: any picture (JPEG/PNG path) as the style
# ``size``    the short side, in pixels, the network paints at (64-1080; the frame is scaled back)
# ``steady``  temporal steadiness, as the classic styles' (0 = off, at most 0.95)
# ``texture`` how much of the network's own fine texture to keep, 0-1 (default 0: its colours
#             and strokes on the frame's own fine structure, the steadiest; 1: all of it)

#: The 26 styles of multistyle26.onnx, in the file's order: (name, label). The file comes
#: without names; these describe what each one paints (looked at on the bundled clip).
NEURAL_STYLES: tuple[tuple[str, str], ...] = (
    ("pastel-wash", "Pastel wash"),
    ("yellow-ink", "Yellow ink"),
    ("charcoal", "Charcoal"),
    ("confetti", "Confetti shards"),
    ("crimson-impasto", "Crimson impasto"),
    ("autumn-mosaic", "Autumn mosaic"),
    ("indigo-cells", "Indigo cells"),
    ("blaze-bands", "Blaze bands"),
    ("rose-sketch", "Rose sketch"),
    ("teal-scales", "Teal scales"),
    ("sepia-oil", "Sepia oil"),
    ("cream-etching", "Cream etching"),
    ("lilac-haze", "Lilac haze"),
    ("verdant-glass", "Verdant glass"),
    ("ice-wash", "Ice wash"),
    ("stained-glass", "Stained glass"),
    ("starry-blue", "Starry blue"),
    ("woven-grid", "Woven grid"),
    ("sand-dune", "Sand dune"),
    ("night-swirl", "Night swirl"),
    ("red-fresco", "Red fresco"),
    ("cutout-collage", "Cut-out collage"),
    ("blue-cubist", "Blue cubist"),
    ("dusk", "Dusk"),
    ("harbour-print", "Harbour print"),
    ("blue-mosaic", "Blue mosaic"),
)
#: Default working short side: measured to keep >= 15 fps on the 2-core CPU (docs/quality.md).
NEURAL_DEFAULT_SIDE = 240
_NEURAL_KEYS = ("style", "blend", "mix", "image", "size", "steady", "texture")


def _style_index(value, key: str) -> int:
    names = [n for n, _ in NEURAL_STYLES]
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(NEURAL_STYLES):
        raise ValueError(f"{key!r} must be a built-in neural style, 0-{len(NEURAL_STYLES) - 1} or one of "
                         f"{', '.join(names)}; got {value!r}")
    return value


def validate_neural(params: dict) -> dict:
    """Check a neural style's params; return them with ``style``/``blend`` as indices."""
    _check_table(params, "neural", _NEURAL_KEYS)
    out = dict(params)
    if "image" in out:
        if not isinstance(out["image"], str) or not out["image"].strip():
            raise ValueError("'image' must be the path of a picture")
        if "style" in out or "blend" in out:
            raise ValueError("a neural style takes either 'image' or 'style' (and 'blend'), not both")
    elif "style" not in out:
        raise ValueError("a neural style needs a 'style' (a built-in one) or an 'image' (any picture)")
    for key in ("style", "blend"):
        if key in out:
            out[key] = _style_index(out[key], key)
    if "mix" in out:
        if "blend" not in out:
            raise ValueError("'mix' is the weight of the 'blend' style; give a 'blend' too")
        m = out["mix"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
            raise ValueError(f"'mix' must be a number from 0 to 1, got {m!r}")
        out["mix"] = float(m)
    if "size" in out:
        n = out["size"]
        if isinstance(n, bool) or not isinstance(n, int) or not 64 <= n <= 1080:
            raise ValueError(f"'size' must be a whole number of pixels from 64 to 1080, got {n!r}")
    for key, hi in (("steady", 0.95), ("texture", 1)):
        if key in out:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise ValueError(f"{key!r} must be a number from 0 to {hi}, got {v!r}")
            out[key] = float(v)
    return out


register_backend_params("neural", validate_neural)


def style_settings(params, bundle) -> dict:
    """The text, steps, strength and seed a diffusion style asks of ``bundle`` (a loaded bundle or
    its manifest; defaults from the manifest). The one reading of a style's diffusion keys, shared
    by the backend, the engine, the benchmark and the frame-by-frame oracle."""
    m = getattr(bundle, "manifest", bundle)
    record = _stacks.STACKS[m.stack]
    prompt, instruction = params.get("prompt"), params.get("instruction")
    text = (prompt or instruction) if record.prefers == "prompt" else (instruction or prompt)
    if record.vision:  # the MLLM reads the instruction inside the bundle's template
        text = m.instruction_template.format(text)
    return {"text": text, "steps": int(params.get("steps") or m.steps),
            "strength": float(params.get("strength") or m.strength), "seed": int(params.get("seed", 0))}
