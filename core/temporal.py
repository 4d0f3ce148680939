"""One temporal stabilizer for every CPU backend: the previous output moved along the motion of
the *input* and blended into the new output where that motion can be trusted.

Contract. ``Stabilizer.prepare(prev_input, input)`` looks only at two input frames (so the
classic backend runs it in its worker threads, beside the effect): it measures the backward
optical flow (where each pixel of this frame was in the previous one), checks it against the
forward flow, and says whether the pair is a scene cut. ``Stabilizer.apply(output, motion)``
must then be called in frame order: it warps the stabilizer's state (the last stabilized output
plus, as a fourth channel, the input luma that output stands for) along the flow and mixes it
with the new output. Frames keep their size, dtype (RGB uint8) and order; the first frame, a
frame after :meth:`reset`, a frame of another size and the frame after a scene cut come out
exactly as the style painted them.

Where the previous output is not used (per pixel, multiplied):

* the forward and backward flows disagree (occlusion, disocclusion, flow failure): consistency
  test of Sundaram et al. 2010 on low-resolution flows;
* the input there changed since the output it stands for was made (the fourth channel, warped,
  against this frame's luma): anything the flow got wrong — the background behind a moving
  object, a light switched on — is repainted at once instead of leaving a ghost;
* the whole frame, at a scene cut (most of the flow inconsistent, or the warped previous input
  far from this one).

Two ways to mix, a style's choice (:class:`Steadiness`):

``blend``  ``out = w * warped + (1 - w) * new`` with ``w = strength`` where the tests pass,
           falling to 0 over the ``threshold`` ramp of input change; for painterly styles.
``hold``   hysteresis for quantized styles (toon): a pixel keeps its previous (warped) colour
           while the input stays within ``threshold`` levels of what it was when that colour was
           chosen, and takes the new one, whole, once it leaves that band. A pixel near a band
           edge no longer toggles with sensor noise, and flat colours stay flat (no mixing).

Flows are OpenCV DIS (ultrafast preset) on grey thumbnails with a longer side of
:data:`FLOW_SIDE`; the change test runs at half size; only the warp and the mix touch every
pixel, and :meth:`apply` can split those over a thread pool in horizontal strips (OpenCV
releases the GIL). No Qt, no torch.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import cv2
import numpy as np

#: Longer side of the grey thumbnails the flows are computed on.
FLOW_SIDE = 256
#: Forward-backward consistency (Sundaram et al.): |f + b|^2 < A * (|f|^2 + |b|^2) + B, thumb px.
FB_ALPHA = 0.01
FB_BETA = 0.5
#: A pair is a scene cut when fewer than this share of thumbnail pixels have a consistent flow…
CUT_CONSISTENT = 0.35
#: …or when the input, moved along the flow, still differs by this many grey levels on average.
CUT_ERROR = 28.0
#: Modes of mixing the previous output in.
MODES = ("blend", "hold")


@dataclass(frozen=True)
class Steadiness:
    """How a style is steadied: ``strength`` in [0, 1) is the weight of the previous output where
    the motion is trusted (0 = off); ``threshold`` is the input change in grey levels at which the
    previous output stops counting (blend: the end of a linear ramp that starts at a third of it;
    hold: the hysteresis band)."""

    strength: float = 0.0
    mode: str = "blend"
    threshold: float = 24.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"steadiness strength must be in [0, 1), got {self.strength!r}")
        if self.mode not in MODES:
            raise ValueError(f"steadiness mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.threshold > 0:
            raise ValueError(f"steadiness threshold must be > 0, got {self.threshold!r}")

    @property
    def on(self) -> bool:
        return self.strength > 0.0


@dataclass
class Motion:
    """What :meth:`Stabilizer.prepare` found between two input frames."""

    size: tuple[int, int]            # (w, h) of the frames
    luma_half: np.ndarray            # this input's luma at half size, uint8
    cut: bool                        # a scene cut (or no previous frame): start afresh
    maps: tuple | None = None        # cv2.remap fixed-point maps, full size (backward flow)
    maps_half: tuple | None = None   # the same at half size
    trust: np.ndarray | None = None  # flow consistency at half size, float32 in [0, 1]
    flow: np.ndarray | None = None   # the backward flow itself, thumbnail pixels
    fresh: np.ndarray | None = None  # bool, thumbnail: nothing continues here (texture anchors reset)
    consistent: float = 0.0          # share of thumbnail pixels with a consistent flow
    error: float = 0.0               # mean grey error of the warped previous thumbnail


def thumb_size(w: int, h: int, side: int = FLOW_SIDE) -> tuple[int, int]:
    s = min(1.0, side / max(w, h))
    return max(8, round(w * s)), max(8, round(h * s))


def half_size(w: int, h: int) -> tuple[int, int]:
    return max(1, (w + 1) // 2), max(1, (h + 1) // 2)


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _thumb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(grey(img), thumb_size(w, h), interpolation=cv2.INTER_AREA)


def flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(backward, forward) DIS flows between grey images ``a`` (earlier) and ``b`` (later):
    ``backward[y, x]`` is where pixel (x, y) of ``b`` was in ``a``; ``forward`` the reverse."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    # calc(I0, I1) gives I0(x) ~ I1(x + flow(x)).
    return dis.calc(b, a, None), dis.calc(a, b, None)


def grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs, ys


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    g = _GRIDS.get((w, h))
    if g is None:
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        g = _GRIDS[(w, h)] = grid(w, h)
    return g


def consistency(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """bool mask of pixels whose backward flow, followed by the forward flow from where it lands,
    comes back to the start (Sundaram et al. 2010)."""
    h, w = backward.shape[:2]
    xs, ys = _grid(w, h)
    fw = cv2.remap(forward, xs + backward[..., 0], ys + backward[..., 1], cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)
    s = fw + backward
    err = s[..., 0] ** 2 + s[..., 1] ** 2
    mag = (fw ** 2).sum(-1) + (backward ** 2).sum(-1)
    return err < FB_ALPHA * mag + FB_BETA


def warp_maps(flow: np.ndarray, w: int, h: int, fixed: bool = True):
    """cv2.remap maps for frames of (w, h) from a thumbnail backward flow (upsampled, rescaled)."""
    fh, fw_ = flow.shape[:2]
    f = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    xs, ys = _grid(w, h)
    mx = cv2.scaleAdd(f[..., 0], w / fw_, xs)
    my = cv2.scaleAdd(f[..., 1], h / fh, ys)
    if not fixed:
        return mx, my
    return cv2.convertMaps(mx, my, cv2.CV_16SC2)


#: Flow is set to zero where not moving explains the frame as well, within this (grey levels).
SNAP_LEVELS = 1.0
#: Texture anchors start afresh where the frame differs from the moved one by this (grey levels).
ANCHOR_RESET = 12.0


def _snap_still(a: np.ndarray, b: np.ndarray, back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The backward flow with the sub-pixel jitter of still areas removed.

    DIS on a still, noisy area (water, sensor noise, compression blocks) returns small random
    vectors, and next to a moving object it smears the object's motion over the still scene;
    warping along them moves fine lines by a fraction of a pixel every frame, which is
    itself shimmer, and the texture anchor would wander. Where the unmoved previous thumbnail
    matches this one as well as the moved one does, the area is still: its flow becomes zero.
    """
    h, w = b.shape
    xs, ys = _grid(w, h)
    moved = cv2.remap(a, xs + back[..., 0], ys + back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    e_still = cv2.blur(cv2.absdiff(a, b).astype(np.float32), (5, 5))
    e_moved = cv2.blur(cv2.absdiff(moved, b).astype(np.float32), (5, 5))
    # No limit on the flow's size: DIS smears a moving object's motion over the still background
    # behind it, and warping that background along it would drag its texture (a ghost).
    still = e_still <= e_moved + SNAP_LEVELS
    out = back.copy()
    out[still] = 0.0
    # Where even the moved frame does not match (an object arrived or left), nothing on the
    # picture continues: textures are laid anew there.
    return out, np.minimum(e_still, e_moved) > ANCHOR_RESET


def scene_cut(prev: np.ndarray, image: np.ndarray) -> tuple[bool, float, float]:
    """(cut?, share of consistent flow, mean grey error after the flow) for two RGB frames."""
    a, b = _thumb(prev), _thumb(image)
    back, fwd = flows(a, b)
    share, err = _cut_stats(a, b, back, consistency(back, fwd))
    return (share < CUT_CONSISTENT or err > CUT_ERROR), share, err


def _cut_stats(a, b, back, ok) -> tuple[float, float]:
    th, tw = b.shape
    xs, ys = _grid(tw, th)
    moved = cv2.remap(a, xs + back[..., 0], ys + back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(ok.mean()), float(cv2.mean(cv2.absdiff(moved, b))[0])


class Anchor:
    """Where a picture-bound texture (hatching, paper, canvas, brush strokes) is read for each
    pixel of one frame, so that the texture moves with the picture instead of staying on the
    screen. ``offset`` is the accumulated backward flow (thumbnail pixels) from the frame at which
    the texture was laid down; ``sample`` reads a texture of any size through it, wrapping at the
    edges (the textures are noise: a wrap seam does not show)."""

    def __init__(self, offset: np.ndarray):
        self.offset = offset

    def sample(self, texture: np.ndarray) -> np.ndarray:
        h, w = texture.shape[:2]
        th, tw = self.offset.shape[:2]
        mx, my = warp_maps(self.offset, w, h, fixed=False)
        return cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


class Stabilizer:
    """Steadies one stream of stylized frames (see the module docstring for the contract)."""

    def __init__(self, steadiness: Steadiness | None = None) -> None:
        self.steadiness = steadiness or Steadiness()
        self._state: np.ndarray | None = None       # RGBA uint8: last output + the luma it stands for
        self._ref_half: np.ndarray | None = None    # that luma at half size (the change test)
        self._offset: np.ndarray | None = None      # texture anchor of the last frame (thumbnail px)
        self.cuts = 0

    def set_steadiness(self, steadiness: Steadiness) -> None:
        if steadiness != self.steadiness:
            self.steadiness = steadiness
            self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame comes out as painted."""
        self._state = None
        self._ref_half = None
        self._offset = None

    # ----------------------------------------------------------------------------------------
    # Motion: inputs only (thread-safe, no state)

    def anchor(self, motion: Motion) -> Anchor | None:
        """The texture anchor of the frame ``motion`` was made for (call in frame order, before
        painting it); None where textures should sit where they are (the first frame, a cut)."""
        if not self.steadiness.on or motion.cut or motion.flow is None or self._offset is None \
                or self._offset.shape != motion.flow.shape:
            self._offset = None if motion.flow is None else np.zeros_like(motion.flow)
            return None
        h, w = motion.flow.shape[:2]
        xs, ys = _grid(w, h)
        moved = cv2.remap(self._offset, xs + motion.flow[..., 0], ys + motion.flow[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        offset = cv2.add(moved, motion.flow)
        if motion.fresh is not None:
            offset[motion.fresh] = 0.0
        self._offset = offset
        return Anchor(offset)

    def prepare(self, prev_input: np.ndarray | None, image: np.ndarray) -> Motion:
        h, w = image.shape[:2]
        luma = grey(image)
        luma_half = cv2.resize(luma, half_size(w, h), interpolation=cv2.INTER_AREA)
        if prev_input is None or prev_input.shape != image.shape or not self.steadiness.on:
            return Motion((w, h), luma_half, cut=True)
        a, b = _thumb(prev_input), cv2.resize(luma, thumb_size(w, h), interpolation=cv2.INTER_AREA)
        back, fwd = flows(a, b)
        ok = consistency(back, fwd)
        share, err = _cut_stats(a, b, back, ok)
        if share < CUT_CONSISTENT or err > CUT_ERROR:
            return Motion((w, h), luma_half, cut=True, consistent=share, error=err, flow=back)
        back, fresh = _snap_still(a, b, back)
        fresh |= ~ok
        hw, hh = luma_half.shape[1], luma_half.shape[0]
        # Soft edges on the trust mask: a hard 0/1 mask upsampled draws seams.
        trust = cv2.resize(ok.astype(np.float32), (hw, hh), interpolation=cv2.INTER_LINEAR)
        trust = cv2.erode(trust, np.ones((3, 3), np.uint8))
        return Motion((w, h), luma_half, cut=False, maps=warp_maps(back, w, h), maps_half=warp_maps(back, hw, hh),
                      trust=trust, consistent=share, error=err, flow=back, fresh=fresh)

    # ----------------------------------------------------------------------------------------
    # Mixing: in frame order

    def apply(self, output: np.ndarray, motion: Motion, pool: Executor | None = None, parts: int = 1) -> np.ndarray:
        """The stabilized frame for ``output`` (painted from the input ``motion`` was made for)."""
        s = self.steadiness
        h, w = output.shape[:2]
        fresh = motion.cut or self._state is None or self._state.shape[:2] != (h, w) or not s.on
        if fresh:
            if motion.cut and self._state is not None:
                self.cuts += 1
            self._remember(output, motion)
            return output
        # The change test at half size: warped reference luma against this frame's.
        ref = cv2.remap(self._ref_half, *motion.maps_half, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        change = cv2.absdiff(ref, motion.luma_half)
        weight = cv2.LUT(change, _weight_lut(s.strength, s.mode, s.threshold)).astype(np.float32)
        weight = cv2.multiply(weight, motion.trust, scale=1.0 / 255.0)
        weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
        new = cv2.cvtColor(output, cv2.COLOR_RGB2RGBA)
        new[..., 3] = cv2.resize(motion.luma_half, (w, h), interpolation=cv2.INTER_LINEAR) \
            if (motion.luma_half.shape[1], motion.luma_half.shape[0]) != (w, h) else motion.luma_half
        state = np.empty_like(new)
        bands = _bands(h, parts if pool is not None else 1)
        if len(bands) == 1:
            self._mix(new, weight, motion.maps, state, 0, h)
        else:
            list(pool.map(lambda b: self._mix(new, weight, motion.maps, state, *b), bands))
        self._state = state
        self._ref_half = cv2.resize(state[..., 3], (motion.luma_half.shape[1], motion.luma_half.shape[0]),
                                    interpolation=cv2.INTER_AREA) if (w, h) != motion.luma_half.shape[::-1] \
            else state[..., 3].copy()
        return cv2.cvtColor(state, cv2.COLOR_RGBA2RGB)

    def _mix(self, new: np.ndarray, weight: np.ndarray, maps, state: np.ndarray, y0: int, y1: int) -> None:
        m1, m2 = maps
        # Remap reads the whole source; writing rows y0..y1 only needs those rows of the maps.
        warped = cv2.remap(self._state, m1[y0:y1], m2[y0:y1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        wt = weight[y0:y1]
        state[y0:y1] = cv2.blendLinear(warped, new[y0:y1], wt, cv2.subtract(1.0, wt))

    def _remember(self, output: np.ndarray, motion: Motion) -> None:
        h, w = output.shape[:2]
        state = cv2.cvtColor(output, cv2.COLOR_RGB2RGBA)
        lh = motion.luma_half
        state[..., 3] = lh if lh.shape == (h, w) else cv2.resize(lh, (w, h), interpolation=cv2.INTER_LINEAR)
        self._state = state
        self._ref_half = lh


def _bands(h: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, h // 16 or 1))
    edges = [round(i * h / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


_LUTS: dict[tuple, np.ndarray] = {}


def _weight_lut(strength: float, mode: str, threshold: float) -> np.ndarray:
    """uint8 weight (255 = strength 1) of the previous output for each level of input change."""
    key = (strength, mode, threshold)
    lut = _LUTS.get(key)
    if lut is None:
        d = np.arange(256, dtype=np.float32)
        if mode == "hold":
            wgt = np.where(d < threshold, strength, 0.0)
        else:
            start = threshold / 3.0
            wgt = strength * np.clip((threshold - d) / (threshold - start), 0.0, 1.0)
        lut = _LUTS[key] = np.round(255.0 * wgt).astype(np.uint8)
    return lut


__all__ = ["FLOW_SIDE", "MODES", "Anchor", "Motion", "scene_cut", "Stabilizer", "Steadiness", "consistency", "flows",
           "grid", "thumb_size", "warp_maps"]
