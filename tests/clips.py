"""Reading the real test clips (tests import this; conftest files cannot be imported by name
once there are several)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_clip(path: Path, count: int | None = None) -> list[np.ndarray]:
    """RGB frames of a clip (all, or the first ``count``)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while count is None or len(frames) < count:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    cap.release()
    assert frames, f"could not read {path}"
    return frames
