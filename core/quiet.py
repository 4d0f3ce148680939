"""Keep decoders' own log lines off the user's terminal.

FFmpeg (inside OpenCV, and PyAV where it is used) prints its own diagnostics straight to stderr,
e.g. ``[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found`` before stylecam's own message
for the same corrupt file. Our messages already say what went wrong in the user's terms, so the
entry points (``stylecam``, ``stylecam-tray``) silence the decoders' logs with
:func:`quiet_decoder_logs`. A user who wants them back sets ``OPENCV_FFMPEG_LOGLEVEL`` or
``OPENCV_LOG_LEVEL`` themselves: those win.
"""

from __future__ import annotations

import os
import sys

#: FFmpeg's AV_LOG_QUIET.
_AV_LOG_QUIET = -8


def quiet_decoder_logs() -> None:
    """Silence FFmpeg's and OpenCV's own log output (call before the first file is opened)."""
    # OpenCV's FFmpeg backend reads this when it first opens a file or stream.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(_AV_LOG_QUIET))
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "ERROR":
        try:  # cv2 already imported read the variable then: tell it directly
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
    av = sys.modules.get("av")
    if av is not None:  # PyAV loaded by a sink: its FFmpeg has its own log switch
        try:
            av.logging.set_level(None)
        except (AttributeError, TypeError):
            pass
