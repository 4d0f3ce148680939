"""Frame geometry on the device: camera-sized uint8 in, model-sized pixels, sink-sized uint8 out.

The diffusion path never resizes on the host. The runner hands the backend frames at the
source's own size (a 1280x720 camera, a 1920x1080 screen) and says what size the sinks want;
the model runs at its bundle's size (512x512). This module holds the two maps, both pure tensor
work with shapes fixed per stream, so they run inside the engine's captured (or compiled) steps:

* **in**: :func:`crop_box` takes the centre of the input with the *output's* aspect ratio (what
  ``frames.fit(..., "cover")`` keeps, so a 4:3 camera on a 16:9 virtual camera gets no bars and
  no squeeze), and :func:`resize` stretches that crop to the model size;
* **out**: :func:`resize` stretches the model-size output to the sink size, so the aspect
  distortion of the way in is undone on the way out.

Downscaling uses bilinear with antialiasing (an area-like filter: no moire on screen text, as
``cv2.INTER_AREA`` on the host path), upscaling plain bilinear (as ``cv2.INTER_LINEAR``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_box(in_size: tuple[int, int], out_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, w, h): the centre region of a frame of ``in_size`` = (W, H) with the aspect
    ratio of ``out_size`` (the whole frame when the ratios match to within a pixel)."""
    iw, ih = in_size
    ow, oh = out_size
    scale = max(ow / iw, oh / ih)  # the cover scale of frames.fit
    w = min(iw, max(1, round(ow / scale)))
    h = min(ih, max(1, round(oh / scale)))
    return (iw - w) // 2, (ih - h) // 2, w, h


def resize(frames: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``frames`` (B, H, W, C), uint8 or float, cropped to ``box`` then resized to ``size`` =
    (W, H); returns float32 (B, H', W', C) in the input's value range (not rounded)."""
    if box is not None:
        x0, y0, w, h = box
        frames = frames[:, y0:y0 + h, x0:x0 + w]
    width, height = size
    b, h, w, c = frames.shape
    x = frames.permute(0, 3, 1, 2).float()
    if (w, h) != (width, height):
        down = width * height < w * h
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=down)
    return x.permute(0, 2, 3, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 255] to uint8, rounded (as OpenCV rounds)."""
    return x.round().clamp_(0, 255).to(torch.uint8)


__all__ = ["crop_box", "resize", "to_uint8"]
