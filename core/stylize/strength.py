"""Strength: a style blended with the original picture.

:class:`StrengthBackend` wraps any backend and mixes each output with the frame it was made
from, ``strength * styled + (1 - strength) * original``: 1 is the style alone, 0 the original.
The strength is looked up per style each batch (``strength_of(style_name)``), so a caller that
keeps one value per style (the tray app's slider) can change it at any time from another
thread; the style itself changes only between batches (the runner calls ``set_style``), so a
batch is never painted with one style's strength and blended with another's.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ..frames import fit
from ..styles import Style
from .base import Backend, BackendWrapper


def blend(styled: np.ndarray, original: np.ndarray, strength: float) -> np.ndarray:
    """``strength`` of ``styled`` over ``original`` (same size, uint8); 1 returns ``styled`` as is."""
    if strength >= 1.0:
        return styled
    if strength <= 0.0:
        return original.copy()
    return cv2.addWeighted(styled, float(strength), original, 1.0 - float(strength), 0.0)


def clamp(strength: float) -> float:
    return min(1.0, max(0.0, float(strength)))


class StrengthBackend(BackendWrapper):
    """``inner`` with each output blended with its input by the current style's strength."""

    def __init__(self, inner: Backend, strength_of: Callable[[str], float]):
        super().__init__(inner)
        self.strength_of = strength_of
        self.style_name: str | None = None

    def set_style(self, style: Style) -> None:
        self.inner.set_style(style)
        self.style_name = style.name

    def _strength(self) -> float:
        if self.style_name is None:
            return 1.0
        try:
            return clamp(self.strength_of(self.style_name))
        except Exception:  # a broken lookup must not stop the stream: full strength
            return 1.0

    def submit(self, images):
        # The strength is read when the batch starts: a batch is blended as it was asked for.
        return list(images), self._strength(), self.inner.submit(images)

    def collect(self, ticket):
        images, strength, inner_ticket = ticket
        outputs = self.inner.collect(inner_ticket)
        if strength >= 1.0:
            return outputs
        # A backend that resizes returns frames at the output size: the original is fitted to
        # it as the runner fits frames for the others (cover), only when a blend is asked for.
        return [blend(out, img if out.shape == img.shape else fit(img, (out.shape[1], out.shape[0])), strength)
                for out, img in zip(outputs, images)]
