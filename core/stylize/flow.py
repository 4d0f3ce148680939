"""Optical flow for the engine's temporal feedback: where each pixel of a frame was a frame ago.

Feedback blends every output with the previous one, which steadies a still scene but drags a
ghost behind anything that moves. With ``feedback_warp`` the previous output is first moved along
the optical flow between the two *input* frames, so the blend lines up with the scene.

The flow is computed on the host, on grey thumbnails (longer side :data:`FLOW_SIDE`), with
OpenCV's DIS optical flow at its ultrafast preset — about a millisecond a frame, and the host is
idle while the GPU works. The flow is *backward*: ``flow[y, x]`` is where the pixel ``(x, y)`` of
the current frame was in the previous frame, so the warped previous output is
``prev[y + fy, x + fx]`` — one bilinear :func:`torch.nn.functional.grid_sample` per frame on the
device, inside the engine's decode step (and its CUDA graph).
"""

from __future__ import annotations

import numpy as np
import torch

#: Longer side of the thumbnails the flow is computed on.
FLOW_SIDE = 128


def flow_size(size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of the flow field for frames of ``size`` = (W, H)."""
    W, H = size
    scale = min(1.0, FLOW_SIDE / max(W, H))
    return max(8, round(W * scale)), max(8, round(H * scale))


class FlowEstimator:
    """Backward flow of each frame to the one before it, frame after frame across calls."""

    def __init__(self, size: tuple[int, int]):
        import cv2

        self.size = tuple(size)
        self.thumb = flow_size(self.size)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame (the next frame gets zero flow)."""
        self._prev = None

    def backward(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(n, h, w, 2)`` float32 flows, in thumbnail pixels, for RGB uint8 ``(n, H, W, 3)``
        frames; frame 0 is matched to the last frame of the previous call (zero for the first)."""
        import cv2

        w, h = self.thumb
        if out is None:
            out = np.zeros((len(frames), h, w, 2), np.float32)
        for i, frame in enumerate(frames):
            grey = cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            if self._prev is None:
                out[i] = 0.0
            else:
                # calc(I0, I1) gives I0(x) ≈ I1(x + flow(x)): current -> previous.
                out[i] = self._dis.calc(grey, self._prev, None)
            self._prev = grey
        return out


def flow_grids(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grids ``(B, H, W, 2)`` for thumbnail flows ``(B, h, w, 2)``, frames (W, H).

    The flow is upsampled bilinearly (pixel centres, as ``cv2.resize``), scaled to full-size
    pixels, added to the pixel centres and normalised for ``align_corners=False``.
    """
    W, H = size
    B, h, w, _ = flow.shape
    f = torch.nn.functional.interpolate(flow.permute(0, 3, 1, 2).float(), size=(H, W), mode="bilinear",
                                        align_corners=False)
    xs = torch.arange(W, device=flow.device, dtype=torch.float32)
    ys = torch.arange(H, device=flow.device, dtype=torch.float32)
    gx = (2.0 * (xs[None, None, :] + f[:, 0] * (W / w)) + 1.0) / W - 1.0
    gy = (2.0 * (ys[None, :, None] + f[:, 1] * (H / h)) + 1.0) / H - 1.0
    return torch.stack([gx, gy], dim=-1)


def warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``image`` (H, W, C) float sampled at ``grid`` (H, W, 2); edges repeat (as BORDER_REPLICATE)."""
    x = image.permute(2, 0, 1)[None]
    y = torch.nn.functional.grid_sample(x, grid[None].to(x.dtype), mode="bilinear", padding_mode="border",
                                        align_corners=False)
    return y[0].permute(1, 2, 0)


__all__ = ["FLOW_SIDE", "FlowEstimator", "flow_grids", "flow_size", "warp"]
