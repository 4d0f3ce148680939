"""Frames at the boundary: one RGB uint8 layout inside, conversions at the edges.

Every source hands the runner RGB ``uint8`` arrays of shape ``(H, W, 3)`` at its native size;
:func:`as_rgb` is where odd layouts (grey, BGRA, float, non-contiguous) become that, and
:func:`fit` is the one place a frame is resized/cropped to the engine size.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

#: The smallest and largest engine sizes we accept; outside them something is wrong with the input.
MIN_SIDE = 16
MAX_SIDE = 7680


@dataclass(slots=True)
class Frame:
    """One frame on its way through the pipeline.

    ``t_capture`` is ``time.perf_counter()`` when the source produced the pixels; the runner
    measures capture→output latency against it. On the way out the runner also says what made
    the picture, for a preview that shows both: ``source``, the input frame the stylizer was
    given (None when the frame passed through unstyled, e.g. paused), and ``style``, the name of
    the style that painted it.
    """

    image: np.ndarray
    index: int
    t_capture: float = field(default_factory=time.perf_counter)
    source: np.ndarray | None = None
    style: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` into ``(W, H)``; raise ``ValueError`` with a message a user can act on."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m:
        raise ValueError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    for side in (w, h):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"bad size {text!r}: each side must be between {MIN_SIDE} and {MAX_SIDE}")
    return w, h


def as_rgb(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """Return ``image`` as a contiguous ``(H, W, 3)`` RGB uint8 array.

    Accepts grey ``(H, W)`` / ``(H, W, 1)``, 3-channel and 4-channel (alpha dropped) images in
    ``order`` ``"rgb"`` or ``"bgr"`` (BGRA counts as ``"bgr"``), and float images in [0, 1].
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if order not in ("rgb", "bgr"):
        raise ValueError(f"unknown channel order {order!r}")
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if order == "bgr" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    if order == "bgr":
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def fit(image: np.ndarray, size: tuple[int, int], mode: str = "cover") -> np.ndarray:
    """Resize ``image`` (RGB uint8) to ``size`` = (W, H), keeping its aspect ratio.

    ``cover`` scales to fill and centre-crops (no bars: what a camera feed expects);
    ``contain`` scales to fit and pads with black; ``stretch`` ignores the aspect ratio.
    """
    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    if mode == "stretch":
        return cv2.resize(image, (w, h), interpolation=_interp(iw * ih, w * h))
    scale = max(w / iw, h / ih) if mode == "cover" else min(w / iw, h / ih)
    if mode not in ("cover", "contain"):
        raise ValueError(f"unknown fit mode {mode!r}")
    sw, sh = max(1, round(iw * scale)), max(1, round(ih * scale))
    scaled = cv2.resize(image, (sw, sh), interpolation=_interp(iw * ih, sw * sh))
    if mode == "cover":
        x0, y0 = (sw - w) // 2, (sh - h) // 2
        return np.ascontiguousarray(scaled[y0:y0 + h, x0:x0 + w])
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    out[y0:y0 + sh, x0:x0 + sw] = scaled
    return out


def _interp(src_area: int, dst_area: int) -> int:
    # INTER_AREA avoids moiré when shrinking (screen captures are full of fine text);
    # INTER_LINEAR is cheaper and as good when enlarging.
    return cv2.INTER_AREA if dst_area < src_area else cv2.INTER_LINEAR
