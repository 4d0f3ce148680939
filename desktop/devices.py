"""What the Source menu offers: the monitors mss sees and the cameras that can be opened.

Both are looked up quickly and never raise: a desktop without a display or a machine without
cameras simply offers fewer entries.
"""

from __future__ import annotations

import glob
import logging
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    spec: str
    label: str


def monitors() -> list[Choice]:
    """One entry per monitor (``screen:N``, mss numbering from 1), plus all together when several."""
    try:
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss
        with factory() as sct:
            found = list(sct.monitors)
    except Exception as e:  # no display, no X server, a Wayland session without XWayland…
        log.info("no monitors to capture: %s", e)
        return []
    choices = [Choice(f"screen:{i}", f"Screen {i} ({m['width']}×{m['height']})")
               for i, m in enumerate(found) if i > 0]
    if len(choices) > 1:
        m = found[0]
        choices.append(Choice("screen:0", f"All screens ({m['width']}×{m['height']})"))
    return choices


def cameras() -> list[Choice]:
    """Cameras to offer. On Linux the doctor's list of /dev/video* nodes (read from sysfs without
    opening them), leaving out v4l2loopback devices: those are virtual cameras, stylecam's own
    output among them. Elsewhere finding cameras means opening each (seconds per index on
    Windows), so the first two indices are offered and a missing one says so when picked."""
    if not sys.platform.startswith("linux"):
        return [Choice("camera:0", "Camera 0"), Choice("camera:1", "Camera 1")]
    try:
        from stylecam.core.doctor import find_cameras
    except ImportError:
        return [Choice(f"camera:{path}", f"Camera {path}") for path in sorted(glob.glob("/dev/video*"))]
    try:
        found = find_cameras()
    except Exception as e:
        log.warning("listing cameras failed: %s", e)
        return []
    return [Choice(f"camera:{c['device']}", f"{c.get('name') or 'Camera'} ({c['device']})")
            for c in found if not c.get("loopback")]
