"""The embedded default stylizer: painterly filters built from OpenCV primitives.

No network, no weights, no GPU. Each effect is a pure function of one RGB uint8 ``(H, W, 3)``
frame that returns a frame of the same shape; the same input always gives the same output (the
paper and brush textures are seeded, and cached per frame size).

Speed comes from two habits: the heavy filtering runs at a reduced working resolution (a short
side of about 360 px) and is brought back up at the end, and every per-pixel operation on a
full frame is an OpenCV call (SIMD, both cores) rather than a NumPy expression with temporaries.
Sizes are expressed at that working resolution, so a preset looks the same at 720p and 1080p;
frames smaller than it are filtered as they are, with sizes scaled down to match.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Callable

import cv2
import numpy as np

from ..styles import Style, register_backend_params
from ..temporal import Stabilizer, Steadiness
from .base import BackendError
from .steadied import SteadiedBackend

#: The short side, in pixels, at which the filters do their work.
WORK_SIDE = 360


# --------------------------------------------------------------------------------------------
# Parameters


STEADY_HELP = "temporal steadiness: weight of the previous frame, moved along the motion (0 = off)"


@dataclass(frozen=True)
class Knob:
    default: float | int
    lo: float | int
    hi: float | int
    help: str

    @property
    def is_int(self) -> bool:
        return isinstance(self.default, int)


EFFECTS: dict[str, dict[str, Knob]] = {
    "oil": {
        "radius": Knob(4, 1, 12, "brush radius in pixels at the working size (larger = coarser strokes)"),
        "saturation": Knob(1.25, 0.0, 3.0, "colour saturation multiplier"),
        "texture": Knob(0.5, 0.0, 1.0, "strength of the brush-stroke and canvas texture"),
        "varnish": Knob(0.5, 0.0, 1.0, "paint's own range: warm whites, lifted blacks (0 = the picture's range)"),
        "steady": Knob(0.7, 0.0, 0.95, STEADY_HELP),
    },
    "toon": {
        "levels": Knob(6, 2, 16, "brightness bands of the flat colour regions"),
        "edges": Knob(1.0, 0.0, 2.0, "strength of the ink outlines (0 = none)"),
        "smoothing": Knob(2, 1, 4, "edge-preserving smoothing passes before flattening"),
        "saturation": Knob(1.2, 0.0, 3.0, "colour saturation multiplier"),
        "steady": Knob(0.95, 0.0, 0.95, STEADY_HELP),
    },
    "sketch": {
        "blur": Knob(6.0, 1.0, 30.0, "pencil softness: blur radius of the colour dodge"),
        "darkness": Knob(1.0, 0.2, 3.0, "how dark the pencil lines are"),
        "hatching": Knob(0.6, 0.0, 1.0, "cross-hatching in the dark areas (0 = none)"),
        "paper": Knob(0.5, 0.0, 1.0, "paper tone and grain (0 = plain white)"),
        "steady": Knob(0.9, 0.0, 0.95, STEADY_HELP),
    },
}

#: How each effect is steadied over time (core/temporal.py): (mode, input change in grey levels at
#: which the past stops counting[, reach of the marks in mix pixels]). All blend the previous
#: picture in. Toon blends its quantized colours and ink: where the picture is scaled up, the
#: palette snap after the upscale turns that into hysteresis (a pixel changes band only once the
#: blend has crossed the middle, not at every toggle of the input); sketch's lines reach 3 px
#: beside the edge that makes them (measured with tests/test_temporal.py's moving square).
STEADY_MODE: dict[str, tuple] = {"oil": ("blend", 24.0), "toon": ("blend", 24.0), "sketch": ("blend", 40.0, 3)}


def validate_params(params: dict) -> dict:
    """Check a classic style's params and return them with every knob filled in.

    ``params`` holds ``effect`` (one of :data:`EFFECTS`) and any of that effect's knobs. Raises
    ``ValueError`` naming the offending key for an unknown effect or key, a wrong type, or a
    value out of range.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"classic params must be a table, got {type(params).__name__}")
    if "effect" not in params:
        raise ValueError(f"classic params need an 'effect' (one of: {', '.join(EFFECTS)})")
    effect = params["effect"]
    if not isinstance(effect, str) or effect not in EFFECTS:
        raise ValueError(f"unknown classic effect {effect!r} (known: {', '.join(EFFECTS)})")
    knobs = EFFECTS[effect]
    unknown = sorted(set(params) - {"effect"} - set(knobs))
    if unknown:
        raise ValueError(f"classic effect {effect!r} has no parameter(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(knobs)})")
    out: dict = {"effect": effect}
    for key, knob in knobs.items():
        value = params.get(key, knob.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{effect} {key!r} must be a number, got {value!r}")
        if knob.is_int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{effect} {key!r} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not knob.lo <= value <= knob.hi:  # also rejects NaN
            raise ValueError(f"{effect} {key!r} must be between {knob.lo} and {knob.hi}, got {value!r}")
        out[key] = value
    return out


register_backend_params("classic", validate_params)


# --------------------------------------------------------------------------------------------
# Shared pieces


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"classic effects take an RGB uint8 (H, W, 3) image, got {desc}")
    return np.ascontiguousarray(image)


#: Frames with a side shorter than this are padded up to it: OpenCV's Python bindings read
#: tiny single-channel arrays as scalars, and a filter on a 1-pixel image means nothing anyway.
MIN_SIDE = 8


def _effect(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Check the input frame and handle frames too small to filter (pad, filter, crop).

    Every effect takes ``anchor=`` (a :class:`~stylecam.core.temporal.Anchor` or None): where its
    picture-bound textures are read, so that they move with the picture across frames.
    """

    @wraps(fn)
    def wrapper(image: np.ndarray, *args, anchor=None, **knobs) -> np.ndarray:
        image = _check_image(image)
        h, w = image.shape[:2]
        if h >= MIN_SIDE and w >= MIN_SIDE:
            return fn(image, *args, anchor=anchor, **knobs)
        pad_y, pad_x = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        big = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(fn(big, *args, **knobs)[:h, :w])  # too small to anchor

    return wrapper


def _pad(image: np.ndarray) -> np.ndarray:
    """``image`` padded (edges replicated) to at least MIN_SIDE on each side."""
    h, w = image.shape[:2]
    if h >= MIN_SIDE and w >= MIN_SIDE:
        return image
    return cv2.copyMakeBorder(image, 0, max(0, MIN_SIDE - h), 0, max(0, MIN_SIDE - w), cv2.BORDER_REPLICATE)


def _work_size(h: int, w: int, side: int = WORK_SIDE) -> tuple[int, int, float]:
    """(work height, work width, scale of a work-size length in this frame's work pixels)."""
    short = min(h, w)
    if short <= side:
        return h, w, short / side
    f = side / short
    return max(1, round(h * f)), max(1, round(w * f)), 1.0


def _down(image: np.ndarray, wh: int, ww: int) -> np.ndarray:
    if image.shape[:2] == (wh, ww):
        return image
    return cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)


def _up(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)


def _saturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    """Scale chroma around the luma, float32 in [0, 1] (no clipping: callers clip once)."""
    if amount == 1.0:
        return rgb
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(rgb, amount, grey, 1.0 - amount, 0.0)


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    t = np.deg2rad(angle_deg)
    for s in np.linspace(-c, c, 2 * length):
        x, y = c + s * np.cos(t), c - s * np.sin(t)
        k[int(round(y)), int(round(x))] = 1.0
    return k / k.sum()


#: uint8 code of the zero-mean textures: value = TEX_ZERO + TEX_SCALE * t (t clipped at +-3.2).
TEX_ZERO, TEX_SCALE = 128.0, 40.0


@lru_cache(maxsize=8)
def _stroke_textures(h: int, w: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Brush-stroke noise along 0°, 45°, 90° and 135° (one uint8 (h, w, 4) array, in that channel
    order), plus blotchy isotropic canvas noise (uint8 (h, w)).

    Zero-mean, unit-ish contrast, stored as ``TEX_ZERO + TEX_SCALE * t``: one uint8 remap moves
    all four stroke directions with the picture, a third of the cost of four float ones.
    Read-only: shared by every frame of a size.
    """
    base = _noise(h + 2 * length, w + 2 * length, seed=1234)
    base = cv2.GaussianBlur(base, (0, 0), 0.7)
    strokes = []
    for angle in (0, 45, 90, 135):
        t = cv2.filter2D(base, -1, _line_kernel(length, angle))[length:-length, length:-length]
        strokes.append((t - t.mean()) / (t.std() + 1e-6))
    canvas = _noise(h, w, seed=99)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.8)
    canvas = (canvas - canvas.mean()) / (canvas.std() + 1e-6)
    out = (np.clip(np.round(TEX_ZERO + TEX_SCALE * np.dstack(strokes)), 0, 255).astype(np.uint8),
           np.clip(np.round(TEX_ZERO + TEX_SCALE * canvas), 0, 255).astype(np.uint8))
    for t in out:
        t.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------
# oil


def _oil_mix(h: int, w: int, **_knobs) -> tuple[int, int]:
    wh, ww, _ = _work_size(h, w)
    return ww, wh


def _oil_paint(image: np.ndarray, anchor=None, radius: int = 4, saturation: float = 1.25,
               texture: float = 0.5, varnish: float = 0.5) -> np.ndarray:
    h, w = image.shape[:2]
    wh, ww, scale = _work_size(h, w)
    r = max(1, round(radius * scale))
    small = _down(image, wh, ww).astype(np.float32) * (1.0 / 255.0)
    painted = _kuwahara(small, r)
    painted = _kuwahara(painted, max(1, r // 2))
    painted = _brush(painted, r, texture, anchor)
    painted = _saturate(painted, saturation)
    out = cv2.convertScaleAbs(painted, alpha=255.0)
    return cv2.LUT(out, _varnish_lut(varnish)) if varnish > 0 else out


#: Oil paint's range at ``varnish=1``: the darkest and the lightest paint (RGB). No paint is as dark
#: as a shadow or as bright as a lit white, and oil whites yellow: a warm, slightly compressed range.
#: (It also softens every edge a little: the picture's own contrast is what flickers.)
PAINT_BLACK = (30.0, 24.0, 18.0)
PAINT_WHITE = (248.0, 236.0, 208.0)


@lru_cache(maxsize=16)
def _varnish_lut(amount: float) -> np.ndarray:
    x = np.arange(256, dtype=np.float64)
    chans = [x + amount * (lo + x / 255.0 * (hi - lo) - x) for lo, hi in zip(PAINT_BLACK, PAINT_WHITE)]
    lut = np.round(np.stack(chans, -1)).clip(0, 255).astype(np.uint8).reshape(256, 1, 3)
    lut.setflags(write=False)
    return lut


def _oil_finish(picture: np.ndarray, h: int, w: int, anchor=None, **_knobs) -> np.ndarray:
    return _up(picture, h, w)


@_effect
def oil(image: np.ndarray, radius: int = 4, saturation: float = 1.25, texture: float = 0.5, varnish: float = 0.5,
        anchor=None) -> np.ndarray:
    """Oil paint: a generalized Kuwahara filter with brush strokes that follow the image's edges.

    Each pixel becomes a blend of the mean colours of eight round sectors around it, weighted
    by how flat each sector is (variance to the power -4): flat regions merge into dabs of
    paint, while at an edge the sectors on either side win and the edge stays sharp. One
    separable blur gives every sector's mean and variance, so the cost per pixel barely grows
    with the radius. A second, smaller pass softens the dabs; then stroke texture and a
    saturation lift, paint's own warm range (``varnish``), at the working size (where the
    stabilizer mixes too), and a cubic upscale that keeps the edges crisp.
    """
    h, w = image.shape[:2]
    return _oil_finish(_oil_paint(image, anchor, radius=radius, saturation=saturation, texture=texture,
                                  varnish=varnish), h, w)


def _kuwahara(img: np.ndarray, r: int) -> np.ndarray:
    d = max(1, round(r * 0.6))
    sigma = max(0.6, r * 0.45)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    # One blur gives every sector's mean colour and mean squared luma (Gaussian-weighted
    # sectors: round dabs rather than the square blocks of box-filter sectors).
    # (cv2.merge/split are slow on float images; colour conversions move channels far faster.)
    stats = cv2.insertChannel(cv2.multiply(grey, grey), cv2.cvtColor(img, cv2.COLOR_RGB2RGBA), 3)
    stats = cv2.GaussianBlur(stats, _gauss_ksize(sigma), sigma, borderType=cv2.BORDER_REPLICATE)
    mean = cv2.cvtColor(stats, cv2.COLOR_RGBA2RGB)
    sq = cv2.extractChannel(stats, 3)
    mean_g = cv2.cvtColor(mean, cv2.COLOR_RGB2GRAY)
    var = cv2.max(cv2.subtract(sq, cv2.multiply(mean_g, mean_g)), 0.0)
    # Weight (var + eps)^-4; eps ~ a std of 2.5 grey levels, below which a sector counts as flat.
    weight = cv2.pow(cv2.add(var, 1e-4), -2.0)
    weight = cv2.multiply(weight, weight)
    # Summing weight * mean over the sector centres around each pixel is a correlation with a
    # kernel of a few unit taps, so one filter2D does all sectors and the normalisation.
    ring = _ring_kernel(d)
    num = cv2.filter2D(cv2.multiply(mean, cv2.cvtColor(weight, cv2.COLOR_GRAY2RGB)), -1, ring,
                       borderType=cv2.BORDER_REPLICATE)
    den = cv2.filter2D(weight, -1, ring, borderType=cv2.BORDER_REPLICATE)
    return cv2.divide(num, cv2.cvtColor(den, cv2.COLOR_GRAY2RGB))


def _gauss_ksize(sigma: float) -> tuple[int, int]:
    # OpenCV's default for float images is 8 sigma wide; 5 sigma is visually the same here.
    k = 2 * int(np.ceil(2.5 * sigma)) + 1
    return k, k


@lru_cache(maxsize=32)
def _ring_kernel(d: int) -> np.ndarray:
    """Unit taps at eight sector centres on a circle of radius d."""
    k = np.zeros((2 * d + 1, 2 * d + 1), np.float32)
    for i in range(8):
        t = i * np.pi / 4
        k[d + int(round(d * np.sin(t))), d + int(round(d * np.cos(t)))] = 1.0
    k.setflags(write=False)
    return k


#: Oil texture: weight of the crossed strokes laid where no direction dominates (flat paint), of
#: the canvas grain, and the blur (working px) of the relief. A fine, strong texture on flat or
#: featureless areas is what flickers most: it cannot follow motion that the picture does not
#: show (docs/quality.md), so flat areas get a light ground and the relief is soft.
FLAT_STROKES = 0.2
CANVAS = 0.25
RELIEF_SIGMA = 1.5


def _brush(img: np.ndarray, r: int, strength: float, anchor=None) -> np.ndarray:
    """Brush strokes: stroke-shaped noise laid along the local edge direction, lit as relief."""
    if strength <= 0:
        return img
    wh, ww = img.shape[:2]
    strokes, canvas = _stroke_textures(wh, ww, max(3, 2 * r + 1))
    if anchor is not None:  # the strokes and the canvas move with the picture
        strokes, canvas = anchor.sample(strokes), anchor.sample(canvas)
    t0, t45, t90, t135 = cv2.split(cv2.subtract(strokes, (TEX_ZERO,) * 4, dtype=cv2.CV_32F))
    # Stroke direction from the structure tensor, computed at half size: it only needs to be
    # smooth, and the blur that smooths it is the costly part.
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if min(wh, ww) >= 16:
        grey = cv2.resize(grey, (ww // 2, wh // 2), interpolation=cv2.INTER_AREA)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    # Doubled-angle vector (c, s) of the stroke direction (across the gradient): c > 0 is
    # horizontal, c < 0 vertical, s > 0 the 45° diagonal (image y points down), s < 0 135°.
    c = cv2.subtract(cv2.multiply(gy, gy), cv2.multiply(gx, gx))
    s = cv2.multiply(cv2.multiply(gx, gy), -2.0)
    sigma = max(1.0, r / 2)
    c = cv2.GaussianBlur(c, _gauss_ksize(sigma), sigma)
    s = cv2.GaussianBlur(s, _gauss_ksize(sigma), sigma)
    if c.shape[:2] != (wh, ww):
        c = cv2.resize(c, (ww, wh), interpolation=cv2.INTER_LINEAR)
        s = cv2.resize(s, (ww, wh), interpolation=cv2.INTER_LINEAR)
    mag = cv2.magnitude(c, s)
    norm = cv2.add(mag, 1e-4 + 0.3 * float(cv2.mean(mag)[0]))
    c = cv2.divide(c, norm)
    s = cv2.divide(s, norm)
    # Where no direction dominates (flat areas) thin crossed strokes, like a scumbled ground.
    flat = cv2.max(cv2.subtract(1.0, cv2.add(cv2.absdiff(c, 0.0), cv2.absdiff(s, 0.0))), 0.0)
    flat = cv2.multiply(flat, FLAT_STROKES)
    tex = cv2.multiply(cv2.add(cv2.max(c, 0.0), flat), t0)
    cv2.accumulateProduct(cv2.add(cv2.max(cv2.multiply(c, -1.0), 0.0), flat), t90, tex)
    cv2.accumulateProduct(cv2.max(s, 0.0), t45, tex)
    cv2.accumulateProduct(cv2.max(cv2.multiply(s, -1.0), 0.0), t135, tex)
    cv2.scaleAdd(cv2.subtract(canvas, TEX_ZERO, dtype=cv2.CV_32F), CANVAS, tex, dst=tex)
    tex = cv2.multiply(tex, 1.0 / TEX_SCALE)
    # Paint ridges catch a light from the top left: an additive highlight/shadow, so that dark
    # paint shows its strokes too, on top of a small change of the paint's own brightness.
    soft = cv2.GaussianBlur(tex, _gauss_ksize(RELIEF_SIGMA), RELIEF_SIGMA)
    relief = cv2.add(cv2.Sobel(soft, -1, 1, 0, ksize=3), cv2.Sobel(soft, -1, 0, 1, ksize=3))
    shade = cv2.add(cv2.multiply(tex, 0.035 * strength), 1.0)
    out = cv2.multiply(img, cv2.cvtColor(shade, cv2.COLOR_GRAY2RGB))
    return cv2.scaleAdd(cv2.cvtColor(relief, cv2.COLOR_GRAY2RGB), -0.012 * strength, out)


# --------------------------------------------------------------------------------------------
# toon


#: Chroma (Cr/Cb) grid step of the toon palette: coarse enough for flat colour, fine enough
#: not to push near-greys into a hue.
CHROMA_STEP = 6.0


def _toon_mix(h: int, w: int, **_knobs) -> tuple[int, int]:
    wh, ww, _ = _work_size(h, w)
    return ww, wh


def _toon_paint(image: np.ndarray, anchor=None, levels: int = 6, edges: float = 1.0, smoothing: int = 2,
                saturation: float = 1.2) -> np.ndarray:
    """The flat colours at the working size, with the ink lines (255 = paper) as a fourth channel
    when there are any: the picture the stabilizer steadies, so that bands and lines stay put."""
    h, w = image.shape[:2]
    wh, ww, scale = _work_size(h, w)
    small = _down(image, wh, ww)
    # Smoothing even smaller: bilateral cost grows with area, and flat regions need no detail.
    sh, sw = max(1, round(wh * 2 / 3)), max(1, round(ww * 2 / 3))
    flat = _down(small, sh, sw)
    for _ in range(smoothing):
        flat = cv2.bilateralFilter(flat, 7, 24.0, 4.0 * max(scale, 0.5), borderType=cv2.BORDER_REPLICATE)
    ink = None
    if edges > 0 and min(sh, sw) >= 3:
        ink = _up(_ink(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY), scale, edges), wh, ww)
    flat = _up(flat, wh, ww)
    ycc = cv2.LUT(cv2.cvtColor(flat, cv2.COLOR_RGB2YCrCb), _toon_lut(levels, saturation))
    out = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    if ink is None:
        return out
    return cv2.insertChannel(ink, cv2.cvtColor(out, cv2.COLOR_RGB2RGBA), 3)


def _toon_finish(picture: np.ndarray, h: int, w: int, anchor=None, levels: int = 6, **_knobs) -> np.ndarray:
    """Back to the frame size: the colours are scaled up smoothly and snapped to the palette
    again (crisp band borders at full resolution, placed between the working pixels), then inked."""
    ink = None
    if picture.shape[2] == 4:
        ink = cv2.extractChannel(picture, 3)
        picture = cv2.cvtColor(picture, cv2.COLOR_RGBA2RGB)
    out = picture
    if picture.shape[:2] != (h, w):
        up = cv2.resize(picture, (w, h), interpolation=cv2.INTER_LINEAR)
        # Saturation 1: the palette's own colours map to themselves (the snap is idempotent).
        out = cv2.cvtColor(cv2.LUT(cv2.cvtColor(up, cv2.COLOR_RGB2YCrCb), _toon_lut(levels, 1.0)),
                           cv2.COLOR_YCrCb2RGB)
    if ink is not None:
        out = cv2.multiply(out, cv2.cvtColor(_up(ink, h, w), cv2.COLOR_GRAY2RGB), scale=1.0 / 255.0)
    return out


@_effect
def toon(image: np.ndarray, levels: int = 6, edges: float = 1.0, smoothing: int = 2,
         saturation: float = 1.2, anchor=None) -> np.ndarray:
    """Cartoon: flat colour regions with dark ink outlines.

    Bilateral smoothing at two thirds of the working size (a third of 720p) removes texture
    but keeps the borders between regions; the result, at the working size, is flattened with
    a lookup table in YCrCb (a few brightness bands, a coarse chroma grid), and ink lines come
    from a difference of Gaussians on the smoothed luma, so that they outline regions rather
    than texture. The stabilizer steadies that flat picture; then it is brought to full size.
    """
    h, w = image.shape[:2]
    knobs = dict(levels=levels, edges=edges, saturation=saturation)
    return _toon_finish(_toon_paint(image, smoothing=smoothing, **knobs), h, w, **knobs)


@lru_cache(maxsize=64)
def _toon_lut(levels: int, saturation: float) -> np.ndarray:
    """A 3-channel LUT for YCrCb: Y in ``levels`` bands, Cr/Cb scaled and snapped to a grid."""
    x = np.arange(256, dtype=np.float32)
    # Band centres spread over the usable luma range, so the darkest band is not pure black.
    band = np.minimum(np.floor(x / 256.0 * levels), levels - 1)
    y = 24.0 + (band + 0.5) / levels * (240.0 - 24.0)
    step = CHROMA_STEP
    chroma = np.clip(128.0 + (x - 128.0) * saturation, 0, 255)
    chroma = np.clip(128.0 + np.round((chroma - 128.0) / step) * step, 0, 255)
    lut = np.stack([y, chroma, chroma], axis=-1).round().astype(np.uint8).reshape(256, 1, 3)
    lut.setflags(write=False)
    return lut


#: Ink: DoG contrast (grey levels) from paper to full ink, contrast below which no line is
#: drawn, and the inner Gaussian's sigma at the working size.
INK_RAMP = 6.0
INK_OFFSET = 2.5
INK_SIGMA = 1.0


def _ink(grey: np.ndarray, scale: float, strength: float) -> np.ndarray:
    """Ink lines (uint8, 255 = paper, dark = line) from a difference of Gaussians of the luma."""
    g = grey.astype(np.float32)
    sigma = max(0.5, INK_SIGMA * scale)
    g1 = cv2.GaussianBlur(g, _gauss_ksize(sigma), sigma, borderType=cv2.BORDER_REPLICATE)
    g2 = cv2.GaussianBlur(g, _gauss_ksize(1.6 * sigma), 1.6 * sigma, borderType=cv2.BORDER_REPLICATE)
    # Negative where a pixel is darker than its surroundings (the dark side of every edge);
    # the small offset keeps sensor noise in flat areas from drawing lines.
    dog = cv2.addWeighted(g1, 1.0, g2, -1.0, INK_OFFSET)
    # Linear ramp from paper to full ink over INK_RAMP grey levels of contrast.
    darkness = cv2.convertScaleAbs(cv2.min(dog, 0.0), alpha=255.0 / INK_RAMP * strength)
    return cv2.subtract(255, darkness)


# --------------------------------------------------------------------------------------------
# sketch

#: Paper colour (RGB) at ``paper=1``; a warm off-white.
PAPER_RGB = (246.0, 239.0, 224.0)


#: Short side the sketch is drawn at, at most (lines are fine detail: more than the other effects'
#: working size); its sizes (blur, hatching) are given for a short side of twice WORK_SIDE.
SKETCH_SIDE = 540


def _sketch_size(h: int, w: int) -> tuple[int, int, float]:
    """(draw height, draw width, scale of a size given at 720 px short side)."""
    dh, dw, _ = _work_size(h, w, SKETCH_SIDE)
    return dh, dw, min(dh, dw) / (2 * WORK_SIDE)


def _sketch_mix(h: int, w: int, **_knobs) -> tuple[int, int]:
    dh, dw, _ = _sketch_size(h, w)
    return dw, dh


#: Pencil lines: the dodge divides (luma + DODGE_FLOOR) by (its blur + DODGE_FLOOR), so that
#: dark areas are not amplified into noise (a plain dodge turns 3 levels of sensor noise on a
#: dark coat into 30 levels of scribble, new every frame); darkening below LINE_THRESHOLD grey
#: levels is dropped (faint texture flickers, it does not draw).
DODGE_FLOOR = 50.0
LINE_THRESHOLD = 10.0
#: Hatching: the picture's own fine detail (luma minus its blur at HATCH_DETAIL px), smeared
#: along 45° and 135° over HATCH_LENGTH px (both at the working size, scaled with it) and
#: amplified HATCH_GAIN times; and a soft graphite fill of up to HATCH_FILL in the darkest areas.
HATCH_DETAIL = 1.2
HATCH_LENGTH = 9
HATCH_GAIN = 4.0
HATCH_FILL = 0.8


def _sketch_paint(image: np.ndarray, anchor=None, blur: float = 6.0, darkness: float = 1.0, hatching: float = 0.6,
                  paper: float = 0.5) -> np.ndarray:
    h, w = image.shape[:2]
    dh, dw, scale = _sketch_size(h, w)
    grey = cv2.cvtColor(_down(image, dh, dw), cv2.COLOR_RGB2GRAY)
    sigma = max(0.5, blur * scale)
    soft = cv2.GaussianBlur(grey, _gauss_ksize(sigma), sigma, borderType=cv2.BORDER_REPLICATE)
    lines = cv2.divide(cv2.add(grey, DODGE_FLOOR, dtype=cv2.CV_32F), cv2.add(soft, DODGE_FLOOR, dtype=cv2.CV_32F),
                       scale=255.0)
    lines = cv2.LUT(cv2.convertScaleAbs(lines), _pencil_lut(darkness))
    if hatching <= 0:
        return lines
    # Tone: how dark each region is, from a much larger blur, drives the hatching.
    tone = cv2.resize(grey, (max(1, dw // 4), max(1, dh // 4)), interpolation=cv2.INTER_AREA)
    tone = cv2.GaussianBlur(tone, (0, 0), max(1.0, 4.0 * sigma) / 4, borderType=cv2.BORDER_REPLICATE)
    tone = cv2.resize(tone, (dw, dh), interpolation=cv2.INTER_LINEAR)
    one, two = _hatch_strokes(grey, scale)
    # Amount of hatching per tone level: none on light areas, one direction in the
    # mid-darks, crossed in the darkest.
    a1 = cv2.LUT(tone, _ramp_lut(150, 60, hatching))
    a2 = cv2.LUT(tone, _ramp_lut(95, 25, hatching))
    # The darkest areas also get a soft graphite fill, so that black reads darker than grey.
    fill = cv2.LUT(tone, _ramp_lut(110, 0, HATCH_FILL * hatching))
    shade = cv2.subtract(255, cv2.multiply(a1, one, scale=1.0 / 255.0))
    shade = cv2.subtract(shade, cv2.multiply(a2, two, scale=1.0 / 255.0))
    shade = cv2.subtract(shade, fill)
    return cv2.multiply(lines, shade, scale=1.0 / 255.0)


def _hatch_strokes(grey: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 stroke layers (255 = full stroke) at 45° and 135°, drawn from the picture itself.

    The fine detail of the luma (its grain, texture, small shapes), smeared along a diagonal,
    becomes short strokes of varied length and pressure that overlap like hand hatching. Because
    they are made of the picture, they move with it exactly, frame after frame: hatching laid
    from a fixed noise texture would have to be carried along an estimated motion, and wherever
    that estimate is off by a pixel, a fine stroke pattern flickers (docs/quality.md).
    """
    g = grey.astype(np.float32)
    hs = max(0.7, HATCH_DETAIL * max(scale, 0.5))
    detail = cv2.subtract(g, cv2.GaussianBlur(g, _gauss_ksize(hs), hs, borderType=cv2.BORDER_REPLICATE))
    length = max(5, int(round(HATCH_LENGTH * max(scale, 0.5))) | 1)
    gain = HATCH_GAIN * 255.0 / 40.0
    out = []
    for angle in (45.0, 135.0):
        streak = cv2.filter2D(detail, -1, _line_kernel(length, angle), borderType=cv2.BORDER_REPLICATE)
        out.append(cv2.convertScaleAbs(cv2.min(streak, 0.0), alpha=gain))  # the dark streaks
    return out[0], out[1]


def _sketch_finish(drawing: np.ndarray, h: int, w: int, anchor=None, paper: float = 0.5, **_knobs) -> np.ndarray:
    if paper > 0:  # the grain at the drawing's size (anchored there), then the whole sheet scaled up
        dh, dw = drawing.shape[:2]
        grain = _paper_grain(dh, dw) if anchor is None else anchor.sample(_paper_grain(dh, dw))
        grain = cv2.convertScaleAbs(grain, alpha=paper, beta=255.0 * (1.0 - paper))
        rgb = cv2.cvtColor(_up(cv2.multiply(drawing, grain, scale=1.0 / 255.0), h, w), cv2.COLOR_GRAY2RGB)
        tint = tuple(255.0 - (255.0 - c) * paper for c in PAPER_RGB) + (0.0,)
        return cv2.multiply(rgb, tint, scale=1.0 / 255.0)
    return cv2.cvtColor(_up(drawing, h, w), cv2.COLOR_GRAY2RGB)


@_effect
def sketch(image: np.ndarray, blur: float = 6.0, darkness: float = 1.0, hatching: float = 0.6,
           paper: float = 0.5, anchor=None) -> np.ndarray:
    """Pencil drawing: colour-dodged luma for the lines, hatching for the shadows, on paper.

    Dividing the luma by its blur leaves white wherever the picture is flat and grey strokes
    where it is darker than its surroundings, i.e. along edges, as a pencil would. Large dark
    areas, which the dodge turns white, get diagonal hatching instead (crossed where darkest),
    drawn from the picture's own detail so that it moves with the picture, and a graphite fill.
    The paper's grain is a texture anchored to the picture (``anchor``).
    """
    h, w = image.shape[:2]
    drawing = _sketch_paint(image, anchor, blur=blur, darkness=darkness, hatching=hatching, paper=paper)
    return _sketch_finish(drawing, h, w, anchor, paper=paper)


@lru_cache(maxsize=16)
def _pencil_lut(darkness: float) -> np.ndarray:
    """Dodge value -> pencil: darkening under LINE_THRESHOLD dropped, the rest stretched back to
    the full range and darkened with a power of 0.5 + 1.5 * darkness (2 by default)."""
    x = np.arange(256, dtype=np.float64)
    d = np.maximum(0.0, (255.0 - x) - LINE_THRESHOLD) * 255.0 / (255.0 - LINE_THRESHOLD)
    lut = np.round(255.0 * ((255.0 - d) / 255.0) ** (0.5 + 1.5 * darkness)).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=16)
def _ramp_lut(light: int, dark: int, amount: float) -> np.ndarray:
    """0 at tones >= ``light``, rising to 255 * amount at tones <= ``dark``."""
    x = np.arange(256, dtype=np.float64)
    t = np.clip((light - x) / (light - dark), 0.0, 1.0)
    lut = np.round(255.0 * amount * t).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=8)
def _paper_grain(h: int, w: int) -> np.ndarray:
    """uint8 paper grain around 245: a fine speckle over a soft mottle."""
    fine = cv2.GaussianBlur(_noise(h, w, seed=31), (0, 0), 0.7)
    soft = cv2.GaussianBlur(_noise(h, w, seed=32), (0, 0), 6.0)
    fine = cv2.normalize(fine, None, -1.0, 1.0, cv2.NORM_MINMAX)
    soft = cv2.normalize(soft, None, -1.0, 1.0, cv2.NORM_MINMAX)
    grain = np.clip(245.0 + 7.0 * fine + 5.0 * soft, 0, 255).astype(np.uint8)
    grain.setflags(write=False)
    return grain


# --------------------------------------------------------------------------------------------
# Backend


#: effect name -> function; the knobs of :data:`EFFECTS` are its keyword arguments.
FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {"oil": oil, "toon": toon, "sketch": sketch}


@dataclass(frozen=True)
class Stages:
    """An effect cut where the stabilizer steps in, so that it mixes the small picture the effect
    works on rather than the full frame (a quarter of the pixels at 720p for oil).

    ``mix(h, w, **knobs)`` -> (w, h) of that picture for a frame of (h, w);
    ``paint(image, anchor, **knobs)`` -> that picture (uint8, RGB or grey);
    ``finish(picture, h, w, anchor, **knobs)`` -> the RGB frame of (h, w).
    ``finish(paint(image))`` is exactly the effect function's output.
    """

    mix: Callable[..., tuple[int, int]]
    paint: Callable[..., np.ndarray]
    finish: Callable[..., np.ndarray]


STAGES: dict[str, Stages] = {
    "oil": Stages(_oil_mix, _oil_paint, _oil_finish),
    "toon": Stages(_toon_mix, _toon_paint, _toon_finish),
    "sketch": Stages(_sketch_mix, _sketch_paint, _sketch_finish),
}


class ClassicBackend(SteadiedBackend):
    """Runs one effect; frames of a batch are painted in parallel, one per worker thread, and
    steadied in frame order (``core/temporal.py``).

    Every effect is a chain of OpenCV calls on a small working image, which release the GIL,
    so one frame per core scales almost linearly where OpenCV's own threads do not (see
    ``core/runtime.py`` and docs/benchmarks.md). ``batch_size`` equals the worker count; the
    runner never waits to fill a batch, so a live source gains throughput, not latency.

    With the stabilizer on, each frame of a batch is one task (:class:`_Batch`): its look and
    motion, its texture anchor, its painting at the effect's working size, the mix with the
    previous picture, its finish (upscale, paper); only the anchor and the mix wait for the frame
    before. ``steady=False`` turns the stabilizer off whatever the style says (the benchmark's
    and the quality harness's "before").
    """

    name = "classic"

    def __init__(self, workers: int | None = None, steady: bool = True) -> None:
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.batch_size = self.workers
        super().__init__(steady)
        self._pool: ThreadPoolExecutor | None = None
        self._fn: Callable[..., np.ndarray] | None = None
        self._stages: Stages | None = None
        self._knobs: dict = {}

    def _new_stabilizer(self, steadiness: Steadiness | None) -> Stabilizer:
        # Every other frame may carry the flow before it on (core/temporal.py): the classic
        # effects paint in a few ms, so the flow and its warp maps are a large share of a frame.
        return Stabilizer(steadiness, carry=True)

    def _style_steady(self, style: Style) -> float:
        return validate_params(dict(style.params))["steady"]

    def set_style(self, style: Style) -> None:
        if style.backend != "classic":
            raise BackendError(f"style {style.name!r} is for the {style.backend!r} backend, not 'classic'")
        params = validate_params(dict(style.params))
        effect = params.pop("effect")
        strength = params.pop("steady")
        strength = strength if self.steady else 0.0
        mode, threshold, *reach = STEADY_MODE[effect]
        self._fn = FUNCTIONS[effect]
        self._stages = STAGES[effect]
        self._knobs = params
        self._restart_steady(Steadiness(strength, mode, threshold, *reach))

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if self._fn is None:
            raise BackendError("ClassicBackend.process called before set_style")
        if not images:
            return []
        pool = self._ensure_pool() if self.workers >= 2 and len(images) >= 2 else None
        run = pool.map if pool is not None else map
        if not self.stabilizer.steadiness.on:
            return list(run(lambda i: self._fn(i, **self._knobs), images))
        images = [_check_image(i) for i in images]
        batch = _Batch(self, images)
        if pool is None:
            return [batch.frame(i) for i in range(len(images))]
        # One task per frame, in order: each waits only where it needs the frame before it.
        return [f.result() for f in [pool.submit(batch.frame, i) for i in range(len(images))]]

    def _ensure_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="stylecam-classic")
            # Start every worker now (each waits at the barrier, so no submit finds one idle):
            # the pool's size must not depend on how fast the first batches happened to finish.
            barrier = threading.Barrier(self.workers)
            list(self._pool.map(lambda _: barrier.wait(), range(self.workers)))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # (Streams: the stabilizer and the last frame's view are the stream's, steadied.py; the
    # style's knobs and the worker pool are shared.)


class _Batch:
    """One batch of a steadied stream, one task per frame.

    A frame's steps: its luma and thumbnail (``look``); its motion from the frame before (a
    frame at an even place in the stream may carry the flow before it on where that one is
    already measured: the first frame of a full batch, every even frame with one worker, so one
    worker and two give the same stream; the others measure their own, in parallel); where its
    textures sit (the anchor: a chain over the motions); its painting; the mix with the previous
    picture (the stabilizer's state: a chain over the frames); its finish. Only the two chains
    need the frame before, so each task waits at those two points for the previous frame's step
    and runs everything else in parallel with the other frames. The mix, the longer
    of the two, is cut into one band of rows per worker (``Stabilizer.begin``): the task of the
    next frame, which has to wait for it anyway, runs a band instead of idling, and the task of
    this frame runs a band of the next one's mix when that frame is already painted (bands of
    one mix are independent; docs/quality.md has the cost it saves). Tasks are started in frame
    order (the pool takes them first in, first out), so a task only ever waits for one already
    running. A failing frame still releases its followers, which then fail too.
    """

    def __init__(self, backend: ClassicBackend, images: list[np.ndarray]):
        self.backend = backend
        self.images = images
        self.first = 0 if backend._last_view is None else backend._last_view.index + 1  # (stream place)
        n = len(images)
        self.views: list = [None] * n
        self.mixings: list = [None] * n
        self.looked = [threading.Event() for _ in range(n)]
        self.anchored = [threading.Event() for _ in range(n)]
        self.painted = [threading.Event() for _ in range(n)]
        self.begun = [threading.Event() for _ in range(n)]
        self.failed = False

    def _after(self, events: list[threading.Event], i: int) -> None:
        if i > 0:
            events[i - 1].wait()
        if self.failed:
            raise BackendError("an earlier frame of this batch failed")

    def _help(self, k: int) -> None:
        """Run what is left of frame ``k``'s mix (once it has begun)."""
        self.begun[k].wait()
        if self.failed:
            raise BackendError("an earlier frame of this batch failed")
        self.mixings[k].help()

    def frame(self, i: int) -> np.ndarray:
        be, image = self.backend, self.images[i]
        stab, st, knobs = be.stabilizer, be._stages, be._knobs
        n = len(self.images)
        try:
            shape = image.shape[:2]
            image = _pad(image)
            view = self.views[i] = stab.look(image, st.mix(*image.shape[:2], **knobs))
            self.looked[i].set()
            self._after(self.looked, i)
            prev = self.views[i - 1] if i else be._last_view
            view.index = self.first + i
            motion = stab.motion(prev, view, carry=i == 0 and view.index % 2 == 0)
            self._after(self.anchored, i)
            anchor = stab.anchor(motion)
            self.anchored[i].set()
            picture = st.paint(image, anchor, **knobs)
            self.painted[i].set()
            if i > 0:  # the frame before's mix: a band of it, then the rest of it done by others
                self._help(i - 1)
                self.mixings[i - 1].wait()
            mixing = self.mixings[i] = stab.begin(picture, motion, parts=be.workers)
            if i == n - 1:
                be._last_view = view
            self.begun[i].set()
            mixing.help()
            picture = mixing.result()
            if i + 1 < n and self.painted[i + 1].is_set():  # the next frame begins its mix now
                self._help(i + 1)
            out = st.finish(picture, *image.shape[:2], anchor, **knobs)
            return out if out.shape[:2] == shape else np.ascontiguousarray(out[:shape[0], :shape[1]])
        except BaseException:
            self.failed = True
            raise
        finally:
            for e in (self.looked[i], self.anchored[i], self.painted[i], self.begun[i]):
                e.set()
