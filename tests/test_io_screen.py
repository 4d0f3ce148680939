"""Screen capture on a real X screen (Xvfb): a window showing a known pattern comes back exactly."""

from __future__ import annotations

import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest

from stylecam.core.runner import Runner
from stylecam.core.sinks import Sink
from stylecam.core.sources import ScreenSource, SourceError, open_source
from reliability_helpers import Identity

#: Where the test window goes, and its size: odd numbers, so an off-by-one anywhere shows.
X, Y, PW, PH = 333, 211, 161, 97


class ListSink(Sink):
    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame.image)


def make_pattern() -> np.ndarray:
    """RGB: seeded noise (unique everywhere) with pure red, green and blue blocks (channel order)."""
    img = np.random.default_rng(7).integers(0, 256, (PH, PW, 3), dtype=np.uint8)
    img[:20, :20] = (255, 0, 0)
    img[:20, 20:40] = (0, 255, 0)
    img[:20, 40:60] = (0, 0, 255)
    return img


@pytest.fixture(scope="module")
def pattern_window(xvfb_display, tmp_path_factory):
    if shutil.which("display") is None:
        pytest.skip("imagemagick's display is not installed (apt-get install imagemagick)")
    pattern = make_pattern()
    path = tmp_path_factory.mktemp("screen") / "stylecam-pattern.png"
    cv2.imwrite(str(path), cv2.cvtColor(pattern, cv2.COLOR_RGB2BGR))
    # A plain X client window; with no window manager it lands exactly at the geometry asked.
    proc = subprocess.Popen(["display", "-borderwidth", "0", "-geometry", f"+{X}+{Y}", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if shutil.which("xdotool"):
            subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", "stylecam-pattern"],
                           capture_output=True, timeout=10)
        yield pattern
    finally:
        proc.terminate()
        proc.wait(5)


def _wait_for_pattern(source, check, limit=5.0):
    """Read frames until ``check(frame)`` holds (the window may still be painting); return the frame."""
    deadline = time.monotonic() + limit
    while True:
        frame = source.read()
        if check(frame) or time.monotonic() > deadline:
            return frame


def test_whole_screen_through_the_runner_contains_the_window(pattern_window):
    source = open_source("screen", fps=15)
    assert isinstance(source, ScreenSource)
    source.open()
    try:
        _wait_for_pattern(source, lambda f: np.array_equal(f[Y:Y + PH, X:X + PW], pattern_window))
    finally:
        source.close()
    sink = ListSink()
    Runner(open_source("screen", fps=15), Identity(), [sink], max_frames=4).run()
    assert len(sink.frames) >= 1
    for frame in sink.frames:
        assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
        # Exact: a 24-bit X screen and a lossless grab; RGB order (the red block reads red).
        np.testing.assert_array_equal(frame[Y:Y + PH, X:X + PW], pattern_window)
        assert frame[Y + 5, X + 5].tolist() == [255, 0, 0]
        assert frame[Y + 5, X + 45].tolist() == [0, 0, 255]


def test_region_is_exactly_the_window_and_offsets_are_right(pattern_window):
    source = open_source(f"screen:{X},{Y},{PW},{PH}", fps=30)
    with source:
        frame = _wait_for_pattern(source, lambda f: np.array_equal(f, pattern_window))
        np.testing.assert_array_equal(frame, pattern_window)
    shifted = open_source(f"screen:{X - 10},{Y - 7},{PW},{PH}", fps=30)
    with shifted:
        frame = shifted.read()
    assert frame.shape == (PH, PW, 3)
    np.testing.assert_array_equal(frame[7:, 10:], pattern_window[:-7, :-10])


def test_monitors_regions_and_pacing(pattern_window):
    with open_source("screen:0") as all_monitors:
        assert all_monitors.read().shape == (720, 1280, 3)
    with pytest.raises(SourceError, match=r"no monitor 2: this desktop has 1 .*1280x720"):
        with open_source("screen:2"):
            pass
    with pytest.raises(SourceError, match="reaches outside the desktop"):
        with open_source("screen:1200,700,200,100"):
            pass
    for bad in ("screen:left", "screen:1,2,3", "screen:1,2,3,4,5"):
        with pytest.raises(ValueError, match="screen:X,Y,W,H"):
            open_source(bad)
    with pytest.raises(ValueError, match="too small"):
        open_source("screen:0,0,8,8")
    source = open_source("screen:0,0,64,48", fps=20)
    with source:
        source.read()
        t0 = time.monotonic()
        for _ in range(8):
            source.read()
        elapsed = time.monotonic() - t0
    assert 0.35 <= elapsed < 0.8, elapsed  # 8 frames at 20 fps: 0.4 s, not as fast as possible


def test_no_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SourceError, match="no X display, DISPLAY is not set.*xvfb-run"):
        open_source("screen").open()
