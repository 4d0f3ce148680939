"""Process-wide settings, applied once by the entry points (``stylecam``, ``stylecam-tray``).

Nothing here runs at import: a library user who imports stylecam keeps their own settings.
"""

from __future__ import annotations

import cv2


def configure_runtime() -> None:
    # OpenCV's own worker threads cost more than they give on our frame sizes with few cores
    # (oil at 720p on 2 cores: 35 fps with 2 OpenCV threads, 41 with 1), and they fight the
    # classic backend's one-frame-per-core workers (2 workers: 63 fps with OpenCV threads, 130
    # without). Capture, MJPEG encoding and resizing run in their own threads anyway.
    cv2.setNumThreads(1)
