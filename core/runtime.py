"""Process-wide settings, applied once by the entry points (``stylecam``, ``stylecam-tray``).

Nothing here runs at import: a library user who imports stylecam keeps their own settings.
"""

from __future__ import annotations

import sys

import cv2

#: glibc mallopt parameters, and the values configure_runtime sets (see keep_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def configure_runtime() -> None:
    # OpenCV's own worker threads cost more than they give on our frame sizes with few cores
    # (oil at 720p on 2 cores: 35 fps with 2 OpenCV threads, 41 with 1), and they fight the
    # classic backend's one-frame-per-core workers (2 workers: 63 fps with OpenCV threads, 130
    # without). Capture, MJPEG encoding and resizing run in their own threads anyway.
    cv2.setNumThreads(1)
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse instead of returning them to the
    kernel. Every CPU style makes and drops dozens of frame-sized arrays per frame; by default
    glibc maps each one fresh from the kernel and pays a page fault per 4 KiB page on first
    touch (oil at 1280x720: 19.7 ms of CPU per frame, 8.2 ms with this; docs/quality.md). The
    cost is that up to 256 MiB of freed memory may stay with the process. False where there is
    no glibc (macOS, Windows, musl): nothing changes there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError, TypeError):
        return False
