"""One temporal stabilizer for every CPU backend: the previous output moved along the motion of
the *input* and blended into the new output where that motion can be trusted.

Contract. Three steps per frame, the first two free of the stabilizer's state (the classic
backend runs them in its worker threads, beside the painting):

1. ``Stabilizer.look(image, mix)`` -> :class:`View`: the input's luma at the *test size* (the
   *mix size* — the size of the picture the style will hand to :meth:`Stabilizer.apply`, usually
   its working size, before it is scaled up — capped at :data:`TEST_SIDE`) and a grey thumbnail
   for the flow;
2. ``Stabilizer.motion(prev_view, view)`` -> :class:`Motion`: the backward optical flow between
   the two thumbnails (where each pixel of this frame was in the previous one), where it can be
   trusted, whether the pair is a scene cut, and the warp maps at the mix (and test) size (none
   where nothing moved). With ``Stabilizer(carry=True)`` every other frame may carry the flow
   and maps of the frame before on (kept on the previous :class:`View`): it then needs that
   frame's motion measured first (``motion(..., carry=False)`` where it cannot wait);
3. ``Stabilizer.apply(picture, motion)``, in frame order: warps the stabilizer's state (the last
   stabilized picture plus the input luma that picture stands for) along the flow and mixes it
   with the new picture. ``Stabilizer.begin(picture, motion, parts)`` is the same step cut into
   bands of rows that several threads may share (:class:`Mixing`).

``prepare(prev_input, image, mix)`` does 1 and 2 in one call. Pictures are uint8, (h, w) or
(h, w, 1 / 3 / 4), at the mix size; they keep their shape and order. The first frame, a frame after
:meth:`reset`, a frame of another size and the frame after a scene cut come out exactly as
painted.

Where the previous picture is not used (per pixel, multiplied):

* the previous thumbnail, moved along the flow, does not match this one there (occlusion,
  disocclusion, flow failure): a photometric consistency test on the thumbnails, which measured
  as steady as the forward-backward test of Sundaram et al. 2010 at half the cost (one flow);
* the input there changed since the picture it stands for was made (the warped luma of the state
  against this frame's): anything the flow got wrong — the background behind a moving object, a
  light switched on — is repainted at once instead of leaving a ghost;
* the whole frame, at a scene cut (most of the flow untrusted, or the warped previous input
  far from this one).

Two ways to mix, a style's choice (:class:`Steadiness`):

``blend``  ``out = w * warped + (1 - w) * new`` with ``w = strength`` where the tests pass,
           falling to 0 over the ``threshold`` ramp of input change; for painterly styles.
``hold``   hysteresis: a pixel keeps its previous (warped) value while the input stays within
           ``threshold`` levels of what it was when that value was chosen, and takes the new
           one once it leaves that band. (The classic toon blends its quantized picture and
           snaps it to the palette after the upscale, which measured steadier: docs/quality.md.)

Cost. One OpenCV DIS flow (ultrafast preset) on grey thumbnails with a longer side of
:data:`FLOW_SIDE` (a backend may ask for a finer one; ``carry`` skips it on every other frame
where the flow before still explains the pair); everything else works at the mix size,
which a style keeps small (oil mixes at 640x360 for a 720p frame), or the test size: a remap and
a blend per plane, in OpenCV calls, the blend on uint8 weights; the remaps (the state's and
the anchored textures') only inside the box around the pixels that moved. No float64, no Python loops over
pixels, no Qt, no torch. docs/quality.md has each step's time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Longer side of the grey thumbnails the flows are computed on. (160 px would cost a third, but
#: DIS's ultrafast preset estimates at a quarter of that: toon's flicker on the bundled clip went
#: from 0.86 to 1.06, and ghosts appeared beside a moving object: docs/quality.md.)
FLOW_SIDE = 256
#: Longer side of the change test (the input's luma, the warped luma of the state, the trust):
#: a style that mixes larger pictures (sketch draws at 960x540 for 720p) gets the weight scaled up.
TEST_SIDE = 640
#: The flow is trusted where the previous thumbnail, moved along it, is within this many grey
#: levels of this one (5x5 mean), one thumbnail pixel in from where it is not.
TRUST_LEVELS = 11
#: Forward-backward consistency (Sundaram et al.; the quality metric's occlusion mask):
#: |f + b|^2 < A * (|f|^2 + |b|^2) + B, in pixels.
FB_ALPHA = 0.01
FB_BETA = 0.5
#: A pair is a scene cut when fewer than this share of thumbnail pixels have a trusted flow…
CUT_CONSISTENT = 0.35
#: …or when the input, moved along the flow, still differs by this many grey levels on average.
CUT_ERROR = 28.0
#: Flow is set to zero where not moving explains the frame as well, within this (grey levels).
SNAP_LEVELS = 1.0
#: …but not on featureless areas (grey range under FLAT_RANGE levels within FLAT_REACH thumbnail
#: pixels), where both explain the frame equally: there a flow of more than KEEP_PX thumbnail
#: pixels is DIS's propagation from the edges of a large, plain object that moves (the white
#: roof crossing *bikes*), and is kept.
FLAT_RANGE = 10
FLAT_REACH = 2
KEEP_PX = 2.0
#: Texture anchors start afresh where the frame differs from the moved one by this (grey levels).
ANCHOR_RESET = 12.0
#: A flow carried on to the next frame (``Stabilizer(carry=True)``) is estimated afresh instead
#: when it explains the next pair worse than its own: a share of trusted pixels this much lower…
CARRY_SHARE = 0.03
#: …or a mean grey error this many times higher (plus half a level): the motion changed (an object
#: started or stopped, the camera turned, a cut).
CARRY_ERROR = 1.25
#: Modes of mixing the previous output in.
MODES = ("blend", "hold")


@dataclass(frozen=True)
class Steadiness:
    """How a style is steadied: ``strength`` in [0, 1) is the weight of the previous output where
    the motion is trusted (0 = off); ``threshold`` is the input change in grey levels at which the
    previous output stops counting (blend: the end of a linear ramp that starts at a third of it;
    hold: the hysteresis band); ``reach`` (pixels at the mix size) is how far the style's marks
    reach from the picture feature that makes them (a pencil line drawn beside an edge): a change
    of the input counts that far around it, so a line does not outlive the edge it was drawn for
    (at a disocclusion the flow can be wrong and the input still match, the mark would be moved
    along with it); ``hold`` (grey levels, 0 = off): where the scene stands still (no motion
    found) and the input is within this of what the previous picture stands for, the previous
    picture is kept whole (hysteresis), for styles that repaint differently at every frame
    however little the input changed (the neural networks)."""

    strength: float = 0.0
    mode: str = "blend"
    threshold: float = 24.0
    reach: int = 0
    hold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"steadiness strength must be in [0, 1), got {self.strength!r}")
        if self.mode not in MODES:
            raise ValueError(f"steadiness mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.threshold > 0:
            raise ValueError(f"steadiness threshold must be > 0, got {self.threshold!r}")
        if not (isinstance(self.reach, int) and 0 <= self.reach <= 16):
            raise ValueError(f"steadiness reach must be a whole number of pixels from 0 to 16, got {self.reach!r}")
        if not 0.0 <= self.hold <= 32.0:
            raise ValueError(f"steadiness hold must be from 0 to 32 grey levels, got {self.hold!r}")

    @property
    def on(self) -> bool:
        return self.strength > 0.0


@dataclass
class View:
    """What :meth:`Stabilizer.look` keeps of one input frame."""

    size: tuple[int, int]   # (w, h) of the frame
    mix: tuple[int, int]    # (w, h) of the pictures that will be mixed
    luma: np.ndarray        # the frame's luma at the test size (test_size(mix)), uint8
    thumb: np.ndarray       # grey thumbnail (longer side <= FLOW_SIDE), uint8
    #: the motion that led to this frame, once :meth:`Stabilizer.motion` has measured it (the next
    #: frame may carry its flow on)
    motion: Motion | None = field(default=None, repr=False)
    #: the frame's place in its stream, for a backend that carries flows on at fixed places
    index: int = 0

    @property
    def test(self) -> tuple[int, int]:
        return self.luma.shape[1], self.luma.shape[0]


@dataclass
class Motion:
    """What :meth:`Stabilizer.motion` found between two input frames."""

    view: View                       # this frame's
    cut: bool                        # a scene cut (or no previous frame): start afresh
    maps: tuple | None = None        # cv2.remap maps (backward flow) at the mix size, fixed point (_fixed);
    #                                  None where nothing moved (the identity: the state is read in place)
    maps_test: tuple | None = None   # the same at the test size (the same arrays where equal)
    box: tuple | None = None         # (x0, y0, x1, y1) at the mix size: outside it the flow is zero
    box_test: tuple | None = None    # the same at the test size
    trust: np.ndarray | None = None  # flow consistency at the test size, uint8 (255 = consistent)
    still: np.ndarray | None = None  # no motion found, at the test size, uint8 (255); only for ``hold``
    flow: np.ndarray | None = None   # the backward flow itself, thumbnail pixels
    fresh: np.ndarray | None = None  # bool, thumbnail: nothing continues here (texture anchors reset)
    consistent: float = 0.0          # share of thumbnail pixels with a consistent flow
    error: float = 0.0               # mean grey error of the warped previous thumbnail
    carried: bool = False            # the flow is the frame before's, carried on (no DIS run)

    @property
    def size(self) -> tuple[int, int]:
        return self.view.size


def thumb_size(w: int, h: int, side: int = FLOW_SIDE) -> tuple[int, int]:
    s = min(1.0, side / max(w, h))
    return max(8, round(w * s)), max(8, round(h * s))


def test_size(w: int, h: int, side: int = TEST_SIDE) -> tuple[int, int]:
    s = min(1.0, side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _thumb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` shrunk to ``size``: halved by area while still twice as large (OpenCV's fast path
    for exact factors), then one linear step of less than 2 (INTER_AREA by a factor like 2.5
    costs ten times as much, 0.2 ms from 640x360 to 256x144)."""
    while img.shape[1] >= 2 * size[0] and img.shape[0] >= 2 * size[1]:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)


def flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(backward, forward) DIS flows between grey images ``a`` (earlier) and ``b`` (later):
    ``backward[y, x]`` is where pixel (x, y) of ``b`` was in ``a``; ``forward`` the reverse."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    # calc(I0, I1) gives I0(x) ~ I1(x + flow(x)).
    return dis.calc(b, a, None), dis.calc(a, b, None)


def grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs, ys


_GRIDS: dict[tuple[int, int, int, int], np.ndarray] = {}


def _grid2(w: int, h: int, x0: int = 0, y0: int = 0) -> np.ndarray:
    """The identity remap (plus ``(x0, y0)``), float32 (h, w, 2), cached per size (read-only)."""
    g = _GRIDS.get((w, h, x0, y0))
    if g is None:
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        xs, ys = grid(w, h)
        g = np.dstack((xs + x0, ys + y0))
        g.setflags(write=False)
        _GRIDS[(w, h, x0, y0)] = g
    return g


def _along(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` read at each pixel's position plus ``flow`` (same size), edges replicated."""
    h, w = flow.shape[:2]
    return cv2.remap(img, cv2.add(_grid2(w, h), flow), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


_SUM2 = np.ones((1, 2), np.float32)


def consistency(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """bool mask of pixels whose backward flow, followed by the forward flow from where it lands,
    comes back to the start (Sundaram et al. 2010)."""
    fw = _along(forward, backward)
    s = cv2.add(fw, backward)
    err = cv2.transform(cv2.multiply(s, s), _SUM2)
    mag = cv2.transform(cv2.add(cv2.multiply(fw, fw), cv2.multiply(backward, backward)), _SUM2)
    return err < cv2.addWeighted(mag, FB_ALPHA, mag, 0.0, FB_BETA)


def warp_maps(flow: np.ndarray, w: int, h: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """cv2.remap map (float32 (h, w, 2)) for pictures of (w, h) from a thumbnail backward flow
    (upsampled, rescaled to the picture's pixels); ``origin``: where the picture's (0, 0) is in
    the image read (a padded texture)."""
    fh, fw_ = flow.shape[:2]
    if (fw_, fh) != (w, h):
        # Rescaled on the thumbnail (few pixels), then upsampled.
        flow = cv2.resize(cv2.multiply(flow, (w / fw_, h / fh, 0.0, 0.0)), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.add(_grid2(w, h, *origin), flow)


def _fixed(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float remap maps as OpenCV's fixed-point pair (CV_16SC2 + interpolation table indices):
    made once where a frame's maps are read by several remaps, and 6 bytes a pixel to read
    instead of 8 (a 640x360 RGBA remap 0.69 -> 0.41 ms with a cold cache, 1/32 px steps)."""
    return cv2.convertMaps(maps, None, cv2.CV_16SC2)


def _trust(ok: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The trust mask (bool, thumbnail) at ``size``, uint8 (255 = trusted), with soft edges: a
    hard mask upsampled draws seams."""
    trust = cv2.multiply(ok.view(np.uint8), 255)
    if (trust.shape[1], trust.shape[0]) != size:
        trust = cv2.resize(trust, size, interpolation=cv2.INTER_LINEAR)
    return cv2.erode(trust, _K3)


def _box(flow: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels of a picture of ``size`` whose warp along ``flow`` (a
    thumbnail flow, upsampled linearly) may differ from the identity: the nonzero flow's bounding
    box, one thumbnail pixel wider on each side (linear upsampling reads the next one)."""
    fh, fw = flow.shape[:2]
    x, y, w, h = cv2.boundingRect(cv2.compare(cv2.transform(cv2.absdiff(flow, 0.0), _SUM2), 0.0, cv2.CMP_GT))
    sx, sy = size[0] / fw, size[1] / fh
    return (max(0, int((x - 1) * sx)), max(0, int((y - 1) * sy)),
            min(size[0], int(np.ceil((x + w + 1) * sx))), min(size[1], int(np.ceil((y + h + 1) * sy))))


def _warp(img: np.ndarray, maps: tuple | None, box: tuple | None, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``img`` warped along ``maps``: remapped inside ``box`` only, the rest
    (zero flow: the identity, which a fixed-point remap reproduces exactly) read in place."""
    if maps is None or box is None:
        return img[r0:r1]
    x0, y0, x1, y1 = box
    y0, y1 = max(r0, y0), min(r1, y1)
    if y0 >= y1 or x0 >= x1:
        return img[r0:r1]
    if (x0, y0, x1, y1) == (0, r0, img.shape[1], r1):
        return cv2.remap(img, maps[0][r0:r1], maps[1][r0:r1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = img[r0:r1].copy()
    out[y0 - r0:y1 - r0, x0:x1] = cv2.remap(img, maps[0][y0:y1, x0:x1], maps[1][y0:y1, x0:x1], cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
    return out


def _snap_still(a: np.ndarray, b: np.ndarray, back: np.ndarray,
                moved: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward flow with the sub-pixel jitter of still areas removed, and where textures
    must be laid anew (``moved``: ``a`` warped along ``back``).

    DIS on a still, noisy area (water, sensor noise, compression blocks) returns small random
    vectors, and next to a moving object it smears the object's motion over the still scene;
    warping along them moves fine lines by a fraction of a pixel every frame, which is
    itself shimmer, and the texture anchor would wander. Where the unmoved previous thumbnail
    matches this one as well as the moved one does, the area is still: its flow becomes zero.
    """
    e_still = cv2.blur(cv2.absdiff(a, b), (5, 5))
    e_moved = cv2.blur(cv2.absdiff(moved, b), (5, 5))
    # (uint8 box blurs round to whole levels; SNAP_LEVELS = 1 keeps the test as it was in float.)
    # No limit on the flow's size: DIS smears a moving object's motion over the still background
    # behind it, and warping that background along it would drag its texture (a ghost).
    moving = cv2.compare(e_still, cv2.add(e_moved, SNAP_LEVELS), cv2.CMP_GT)
    # Where the area is featureless the test cannot tell still from moved; a large flow there is
    # propagated from a moving object's edges and kept (snapped, a plain moving object keeps its
    # painting on the screen while it moves away under it: confetti on bikes 2.19 -> 1.39).
    k = _square(FLAT_REACH)
    flat = cv2.compare(cv2.subtract(cv2.dilate(b, k), cv2.erode(b, k)), FLAT_RANGE, cv2.CMP_LT)
    fast = cv2.compare(cv2.transform(cv2.multiply(back, back), _SUM2), KEEP_PX * KEEP_PX, cv2.CMP_GT)
    moving = cv2.bitwise_or(moving, cv2.bitwise_and(flat, fast))
    out = cv2.bitwise_and(back, back, mask=moving)  # (zero where still)
    # Where even the moved frame does not match (an object arrived or left), nothing on the
    # picture continues: textures are laid anew there.
    return out, cv2.min(e_still, e_moved) > ANCHOR_RESET, e_moved, moving


def scene_cut(prev: np.ndarray, image: np.ndarray) -> tuple[bool, float, float]:
    """(cut?, share of consistent flow, mean grey error after the flow) for two RGB frames."""
    h, w = image.shape[:2]
    ts = thumb_size(w, h)
    a, b = _resize(grey(prev), ts), _resize(grey(image), ts)
    back, fwd = flows(a, b)
    ok = consistency(back, fwd)
    share, err = float(ok.mean()), float(cv2.mean(cv2.absdiff(_along(a, back), b))[0])
    return (share < CUT_CONSISTENT or err > CUT_ERROR), share, err


class Anchor:
    """Where a picture-bound texture (hatching, paper, canvas, brush strokes) is read for each
    pixel of one frame, so that the texture moves with the picture instead of staying on the
    screen. ``offset`` is the accumulated backward flow (thumbnail pixels) from the frame at which
    the texture was laid down; ``sample`` reads a texture of any size through it, wrapping at the
    edges (the textures are noise: a wrap seam does not show). The maps are built once per
    texture size and frame.

    Speed: OpenCV's remap takes a slow path for every pixel it has to wrap, and once the camera
    has panned most of them would be. So a texture is read from a copy of itself padded by half a
    period on each side (two periods in all, cached), and the stabilizer keeps the offset's mean
    within half a period (a whole period less changes nothing on a periodic texture): only
    pixels that moved half a frame away from the rest still wrap (oil's stroke texture at 640x360
    after a 300-px pan: 2.2 ms -> 0.4 ms)."""

    def __init__(self, offset: np.ndarray):
        self.offset = offset
        # Nothing moved since the textures were laid (a still camera): read them where they are.
        # (Snapped flows are exact zeros, and so is everything accumulated from them.)
        self.still = not np.any(offset)
        self._maps: dict[tuple[int, int], tuple] = {}
        self._boxes: dict[tuple[int, int], tuple] = {}

    def maps(self, w: int, h: int) -> tuple:
        """remap maps (fixed point) into the padded (2w x 2h) copy of a (w, h) texture."""
        m = self._maps.get((w, h))
        if m is None:
            m = self._maps[(w, h)] = _fixed(warp_maps(self.offset, w, h, origin=(w // 2, h // 2)))
        return m

    def sample(self, texture: np.ndarray) -> np.ndarray:
        """``texture`` read through the anchor: remapped inside the box around the moved
        pixels, read in place elsewhere (where nothing has moved since the texture was laid:
        a still room around the person of a video call)."""
        if self.still:
            return texture
        h, w = texture.shape[:2]
        box = self._boxes.get((w, h))
        if box is None:
            box = self._boxes[(w, h)] = _box(self.offset, (w, h))
        x0, y0, x1, y1 = box
        maps = self.maps(w, h)
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return cv2.remap(_padded(texture), *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        out = texture.copy()
        out[y0:y1, x0:x1] = cv2.remap(_padded(texture), maps[0][y0:y1, x0:x1], maps[1][y0:y1, x0:x1],
                                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return out


_PADDED: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_PADDED_LOCK = threading.Lock()


def _padded(texture: np.ndarray) -> np.ndarray:
    """``texture`` tiled to twice its size, starting half a period in (cached per texture: the
    styles' textures are cached read-only arrays)."""
    with _PADDED_LOCK:
        hit = _PADDED.get(id(texture))
        if hit is not None and hit[0] is texture:
            return hit[1]
        h, w = texture.shape[:2]
        padded = cv2.copyMakeBorder(texture, h // 2, h - h // 2, w // 2, w - w // 2, cv2.BORDER_WRAP)
        padded.setflags(write=False)
        if len(_PADDED) >= 16:
            _PADDED.clear()
        _PADDED[id(texture)] = (texture, padded)  # (the texture itself kept: its id stays its own)
        return padded


class Stabilizer:
    """Steadies one stream of stylized frames (see the module docstring for the contract)."""

    def __init__(self, steadiness: Steadiness | None = None, flow_side: int = FLOW_SIDE,
                 flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, carry: bool = False) -> None:
        """``flow_side`` and ``flow_preset``: the thumbnails' longer side and the DIS preset (a
        backend that spends far more per frame than the flow costs may ask for a finer one).
        ``carry``: every other frame at most, the frame before's flow (and its warp maps)
        carried on instead of a new one where it still explains the pair (camera motion is
        smooth at 30 fps); :meth:`motion` then reads the previous view's motion, so call it
        once that one has returned, or pass ``carry=False``."""
        self.steadiness = steadiness or Steadiness()
        self.carry = carry
        self.flow_side = flow_side
        self.flow_preset = flow_preset
        self.trust_levels = TRUST_LEVELS
        self._state: list[np.ndarray] | None = None  # the last picture's planes + the luma it stands for
        self._offset: np.ndarray | None = None       # texture anchor of the last frame (thumbnail px)
        self.cuts = 0

    def set_steadiness(self, steadiness: Steadiness) -> None:
        if steadiness != self.steadiness:
            self.steadiness = steadiness
            self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame comes out as painted."""
        self._state = None
        self._offset = None

    # ----------------------------------------------------------------------------------------
    # Looking and motion: inputs only (thread-safe, no state)

    def look(self, image: np.ndarray, mix: tuple[int, int] | None = None) -> View:
        """The :class:`View` of one RGB input frame; ``mix`` = (w, h) of the pictures that will be
        mixed (default: the frame's size)."""
        h, w = image.shape[:2]
        mix = mix or (w, h)
        luma = grey(image)
        ts = thumb_size(w, h, self.flow_side)
        small = _resize(luma, test_size(*mix))
        # The thumbnail from the smaller image that is still at least its size (cheaper).
        source = small if small.shape[0] >= ts[1] and small.shape[1] >= ts[0] else luma
        return View((w, h), mix, small, _thumb(source, ts))

    def motion(self, prev: View | None, view: View, carry: bool = True) -> Motion:
        """How ``view``'s frame moved from ``prev``'s (None: there is none, start afresh).
        ``carry=False``: never carry the flow before on (a caller that cannot wait for ``prev``'s
        motion)."""
        m = view.motion = self._motion(prev, view, carry and self.carry)
        return m

    def _motion(self, prev: View | None, view: View, carry: bool) -> Motion:
        if prev is None or prev.size != view.size or prev.mix != view.mix or not self.steadiness.on:
            return Motion(view, cut=True)
        before = prev.motion
        if carry and before is not None and before.view is prev and not before.cut and not before.carried \
                and before.flow is not None and not self.steadiness.hold:
            m = self._carry(prev, view, before)
            if m is not None:
                return m
        a, b = prev.thumb, view.thumb
        # One flow; the photometric test stands for the forward-backward one (Sundaram et al.
        # 2010), at half the cost: where the previous thumbnail moved along the flow does not
        # match this one (occlusion, disocclusion, a flow gone wrong), the flow is not trusted.
        back = cv2.DISOpticalFlow_create(self.flow_preset).calc(b, a, None)
        moved = _along(a, back)
        err = float(cv2.mean(cv2.absdiff(moved, b))[0])
        snapped, fresh, e_moved, moving = _snap_still(a, b, back, moved)
        ok = cv2.erode(cv2.compare(e_moved, self.trust_levels, cv2.CMP_LE), _K3) > 0
        share = float(cv2.countNonZero(ok.view(np.uint8))) / ok.size
        if share < CUT_CONSISTENT or err > CUT_ERROR:
            return Motion(view, cut=True, consistent=share, error=err, flow=back)
        back = snapped
        fresh |= ~ok
        mw, mh = view.mix
        tw, th = view.test
        trust = _trust(ok, (tw, th))
        # Where the flow is zero the warp is the identity (a still camera: most of a webcam's
        # picture): only the box around the moving pixels is remapped, the rest read in place.
        box = box_test = maps = maps_test = None
        if cv2.countNonZero(moving) and back.any():
            box, box_test = _box(back, (mw, mh)), _box(back, (tw, th))
            maps = _fixed(warp_maps(back, mw, mh))
            maps_test = maps if (tw, th) == (mw, mh) else _fixed(warp_maps(back, tw, th))
        still = None
        if self.steadiness.hold:  # (255 where no motion was found, one thumbnail pixel in from any)
            still = cv2.resize(cv2.erode(cv2.bitwise_not(moving), _K3), (tw, th), interpolation=cv2.INTER_NEAREST)
        return Motion(view, cut=False, maps=maps, maps_test=maps_test, box=box, box_test=box_test, trust=trust,
                      still=still, consistent=share, error=err, flow=back, fresh=fresh)

    def _carry(self, prev: View, view: View, before: Motion) -> Motion | None:
        """``before``'s flow (and its maps) carried on to the next pair, with this pair's own
        trust test; None where it explains this pair worse than its own (estimate afresh)."""
        a, b = prev.thumb, view.thumb
        moved = a if before.maps is None else _along(a, before.flow)  # (zero flow: the identity)
        diff = cv2.absdiff(moved, b)
        err = float(cv2.mean(diff)[0])
        e_moved = cv2.blur(diff, (5, 5))
        ok = cv2.erode(cv2.compare(e_moved, self.trust_levels, cv2.CMP_LE), _K3) > 0
        share = float(cv2.countNonZero(ok.view(np.uint8))) / ok.size
        if share < before.consistent - CARRY_SHARE or err > CARRY_ERROR * before.error + 0.5:
            return None
        fresh = (cv2.min(cv2.blur(cv2.absdiff(a, b), (5, 5)), e_moved) > ANCHOR_RESET) | ~ok
        return Motion(view, cut=False, maps=before.maps, maps_test=before.maps_test, box=before.box,
                      box_test=before.box_test, trust=_trust(ok, view.test), still=before.still, consistent=share,
                      error=err, flow=before.flow, fresh=fresh, carried=True)

    def prepare(self, prev_input: np.ndarray | None, image: np.ndarray,
                mix: tuple[int, int] | None = None) -> Motion:
        """:meth:`look` at both frames and :meth:`motion` between them, in one call."""
        prev = None if prev_input is None or prev_input.shape != image.shape else self.look(prev_input, mix)
        return self.motion(prev, self.look(image, mix))

    def anchor(self, motion: Motion) -> Anchor | None:
        """The texture anchor of the frame ``motion`` was made for (call in frame order, before
        painting it); None where textures should sit where they are (the first frame, a cut)."""
        if not self.steadiness.on or motion.cut or motion.flow is None or self._offset is None \
                or self._offset.shape != motion.flow.shape:
            self._offset = None if motion.flow is None else np.zeros_like(motion.flow)
            return None
        offset = cv2.add(_along(self._offset, motion.flow), motion.flow)
        if motion.fresh is not None:  # (zero where fresh)
            offset = cv2.bitwise_and(offset, offset, mask=cv2.bitwise_not(motion.fresh.view(np.uint8) * np.uint8(255)))
        # A whole period (the thumbnail's size: textures span the frame) less, where the mean
        # has drifted past half of one: the same texture, read from the fast part of its copy.
        fh, fw = offset.shape[:2]
        mx, my = cv2.mean(offset)[:2]
        kx, ky = round(mx / fw), round(my / fh)
        if kx or ky:
            offset = cv2.subtract(offset, (kx * fw, ky * fh, 0.0, 0.0))
        self._offset = offset
        return Anchor(offset)

    # ----------------------------------------------------------------------------------------
    # Mixing: in frame order

    def apply(self, picture: np.ndarray, motion: Motion) -> np.ndarray:
        """The stabilized picture for ``picture`` (painted from the input ``motion`` was made for,
        at its mix size)."""
        mixing = self.begin(picture, motion)
        mixing.help()
        return mixing.result()

    def begin(self, picture: np.ndarray, motion: Motion, parts: int = 1) -> Mixing:
        """:meth:`apply` cut into ``parts`` bands of rows that any threads may run
        (:meth:`Mixing.help`), so that the one step that must wait for the frame before is
        shared by the workers instead of leaving all but one idle. Call in frame order, each
        once the previous frame's :class:`Mixing` is done."""
        return Mixing(self, picture, motion, parts)

    def _weight(self, ref: np.ndarray, luma: np.ndarray, trust: np.ndarray, mix_w: int,
                still: np.ndarray | None = None) -> np.ndarray:
        """uint8 weight of the past (255 = all of it) from the warped luma of the state, this
        frame's and the flow's trust: the change's ramp times the trust."""
        s = self.steadiness
        change = cv2.absdiff(ref, luma)
        if s.reach:  # (the reach is in mix pixels; the test may be smaller)
            r = max(1, round(s.reach * ref.shape[1] / mix_w))
            change = cv2.dilate(change, _square(r))
        weight = cv2.multiply(cv2.LUT(change, _weight_lut(s.strength, s.mode, s.threshold)), trust, scale=1.0 / 255.0)
        if s.hold and still is not None:  # the past kept whole where still and hardly changed
            weight = cv2.max(weight, cv2.bitwise_and(cv2.compare(change, s.hold, cv2.CMP_LT), still))
        return weight


class Mixing:
    """One frame's mix with the stabilizer's state, in bands of rows (:meth:`Stabilizer.begin`).

    The state's warp and the blend are per pixel, so bands are independent: each reads the whole
    previous state and writes its own rows of the new one. Where the state is one packed RGBA
    plane (RGB + the luma it stands for) a band also does its own change test; otherwise the
    luma plane and the weight are mixed whole when the mixing begins (at the test size: small),
    and the bands share the picture. Thread-safe: ``help`` claims bands until none is left; the
    thread that ends the last one stores the new state. ``result`` waits for every band."""

    def __init__(self, stab: Stabilizer, picture: np.ndarray, motion: Motion, parts: int = 1):
        mw, mh = motion.view.mix
        if picture.shape[:2] != (mh, mw):
            raise ValueError(f"the picture to steady is {picture.shape[1]}x{picture.shape[0]}, "
                             f"not the {mw}x{mh} its motion was measured for")
        self._stab, self._picture, self._motion = stab, picture, motion
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._next = 0
        self._error: BaseException | None = None
        new = _planes(picture, motion.view.luma)
        state = stab._state
        if motion.cut or state is None or not stab.steadiness.on or [p.shape for p in state] != [p.shape for p in new]:
            if motion.cut and state is not None:
                stab.cuts += 1
            stab._state = new
            self._out = None
            self._bands: list[tuple[int, int]] = []
            self._left = 0
            self._done.set()
            return
        self._new = new
        self._out = [np.empty_like(p) for p in new]
        self._packed = len(new) == 1  # RGB + luma in one plane, all at the mix (= test) size
        self._weight = None
        if not self._packed:
            ref = _warp(state[1], motion.maps_test, motion.box_test, 0, state[1].shape[0])
            weight = stab._weight(ref, motion.view.luma, motion.trust, mw, motion.still)
            self._out[1] = _blend(ref, new[1], weight)
            if weight.shape != (mh, mw):
                weight = cv2.resize(weight, (mw, mh), interpolation=cv2.INTER_LINEAR)
            self._weight = weight
        parts = max(1, min(int(parts), mh))
        self._bands = [(mh * k // parts, mh * (k + 1) // parts) for k in range(parts)]
        self._left = parts

    def _run(self, band: tuple[int, int]) -> None:
        r0, r1 = band
        stab, motion = self._stab, self._motion
        if self._packed:
            # The change test's reach looks that many rows past the band: warped with it, cut after.
            h = stab._state[0].shape[0]
            a0, a1 = max(0, r0 - stab.steadiness.reach), min(h, r1 + stab.steadiness.reach)
            warped = _warp(stab._state[0], motion.maps, motion.box, a0, a1)
            still = None if motion.still is None else motion.still[a0:a1]
            weight = stab._weight(cv2.extractChannel(warped, 3), motion.view.luma[a0:a1], motion.trust[a0:a1],
                                  motion.view.mix[0], still)[r0 - a0:r1 - a0]
            warped = warped[r0 - a0:r1 - a0]
        else:
            warped = _warp(stab._state[0], motion.maps, motion.box, r0, r1)
            weight = self._weight[r0:r1]
        self._out[0][r0:r1] = _blend(warped, self._new[0][r0:r1], weight)

    def help(self) -> None:
        """Run bands of this mix until none is left unclaimed (from any thread)."""
        while True:
            with self._lock:
                if self._next >= len(self._bands) or self._error is not None:
                    return
                band = self._bands[self._next]
                self._next += 1
            try:
                self._run(band)
            except BaseException as e:
                with self._lock:
                    self._error = e
                self._done.set()
                raise
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self._stab._state = self._out
                self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise RuntimeError("a band of this frame's mix failed") from self._error

    def result(self) -> np.ndarray:
        """The stabilized picture (waits for every band)."""
        self.wait()
        return self._picture if self._out is None else _picture(self._out, self._picture)


_K3 = np.ones((3, 3), np.uint8)


def _blend(past: np.ndarray, new: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``past * w + new * (1 - w)`` per pixel, w = ``weight`` / 255, all uint8: three saturating
    uint8 passes (each term rounded, so within one level of the exact blend) cost less than
    half of cv2.blendLinear's float weights on a 4-channel picture."""
    if past.ndim == 3:
        weight = cv2.merge([weight] * past.shape[2])
    inv = cv2.bitwise_not(weight)  # 255 - w (one merge, not two)
    return cv2.add(cv2.multiply(past, weight, scale=1.0 / 255.0), cv2.multiply(new, inv, scale=1.0 / 255.0))




def _square(r: int) -> np.ndarray:
    return np.ones((2 * r + 1, 2 * r + 1), np.uint8)


def _planes(picture: np.ndarray, luma: np.ndarray) -> list[np.ndarray]:
    """The state's planes for a picture and its input luma: RGB + luma packed as one RGBA plane
    (one remap and one blend for four channels); any other picture (grey, RGBA) and the luma as
    two planes (OpenCV's two-channel remap is slower than two one-channel ones)."""
    if picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[:2] == luma.shape:
        return [cv2.insertChannel(luma, cv2.cvtColor(picture, cv2.COLOR_RGB2RGBA), 3)]
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[..., 0]
    if picture.ndim == 2 or (picture.ndim == 3 and picture.shape[2] in (3, 4)):
        return [picture, luma]
    raise ValueError(f"the stabilizer steadies (h, w) or (h, w, 1 / 3 / 4) pictures, got {picture.shape}")


def _picture(planes: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    if len(planes) == 1:
        return cv2.cvtColor(planes[0], cv2.COLOR_RGBA2RGB)
    return planes[0].reshape(like.shape)


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


__all__ = ["FLOW_SIDE", "MODES", "Anchor", "Mixing", "Motion", "Stabilizer", "Steadiness", "View", "consistency",
           "flows", "grid", "scene_cut", "thumb_size", "warp_maps"]
