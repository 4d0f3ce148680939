"""Camera sources: a camera that vanishes mid-run keeps the stream going and comes back; a
missing or unusable camera at start is one clear error.

No webcam exists on the build machines, so ``camera:PATH`` on a video file stands in for one:
it goes through the same OpenCV capture, loss detection and reconnect code as ``/dev/videoN``.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from stylecam.core.runner import Runner
from clips import colour_index, write_colour_clip
from reliability_helpers import Identity
from stylecam.core.sinks import Sink
from stylecam.core.sources import CameraSource, SourceError, open_source

@pytest.fixture
def clip(tmp_path):
    return write_colour_clip(tmp_path / "webcam.avi")


class TimedSink(Sink):
    def __init__(self):
        self.frames: list[tuple[float, np.ndarray]] = []
        self.lock = threading.Lock()

    def write(self, frame):
        with self.lock:
            self.frames.append((time.monotonic(), frame.image))

    def since(self, t):
        with self.lock:
            return [img for ts, img in self.frames if ts >= t]


def _wait(predicate, limit):
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_a_camera_that_vanishes_keeps_the_stream_going_and_reconnects(clip):
    source = open_source(f"camera:{clip}")
    assert isinstance(source, CameraSource)
    sink = TimedSink()
    runner = Runner(source, Identity(), [sink])
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("summary", runner.run()), daemon=True)
    thread.start()
    try:
        assert _wait(lambda: len(sink.frames) >= 5, 5)
        live = [colour_index(img) for img in sink.since(0)]
        assert len(set(live)) >= 4  # a live picture: the colours change

        hidden = clip.with_name("unplugged.avi")
        os.rename(clip, hidden)  # unplug: the open handle plays to its end, then reads fail
        assert _wait(lambda: not source.connected, 3)
        t_lost = time.monotonic()
        time.sleep(1.0)
        during = sink.since(t_lost + 0.1)
        # The stream goes on at the clip's rate, showing the last good frame.
        assert len(during) >= 15, len(during)
        assert all(np.array_equal(img, during[0]) for img in during)
        assert source.repeated >= 15 and runner.metrics.frames_out > len(live)

        reconnects = source.reconnects
        os.rename(hidden, clip)  # plug back in
        t_back = time.monotonic()
        assert _wait(lambda: source.reconnects > reconnects, 4)
        assert time.monotonic() - t_back < CameraSource.BACKOFF[1] + 1.0  # backoff is capped
        time.sleep(0.3)
        after = [colour_index(img) for img in sink.since(time.monotonic() - 0.25)]
        assert len(set(after)) >= 3  # live frames again, not the frozen one
        assert thread.is_alive()  # the run never stopped
    finally:
        runner.stop()
        thread.join(3)
    assert not thread.is_alive() and "summary" in result


def test_file_as_camera_plays_in_real_time_and_loops(clip):
    source = CameraSource(str(clip))
    with source:
        assert source.fps == pytest.approx(30, abs=0.5) and source.live
        t0 = time.monotonic()
        seen = [colour_index(source.read()) for _ in range(18)]
        elapsed = time.monotonic() - t0
    assert seen == [i % 12 for i in range(18)]  # in order, and round again after the end
    assert 0.5 <= elapsed < 1.0, elapsed  # 18 frames at 30 fps, not as fast as decoding goes


def test_missing_or_unusable_camera_at_start_is_one_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no such file or device.*stylecam doctor"):
        open_source(f"camera:{tmp_path / 'nope.mp4'}").open()
    not_video = tmp_path / "notes.txt"
    not_video.write_text("not a video")
    with pytest.raises(SourceError, match="OpenCV cannot read it as video"):
        open_source(f"camera:{not_video}").open()
    if sys.platform.startswith("linux"):
        with pytest.raises(SourceError, match=r"camera 7: no such camera.*camera:/dev/video2.*stylecam doctor"):
            open_source("camera:7").open()
        # A device node that is no camera: opened by nobody, like a camera held by another app.
        with pytest.raises(SourceError, match="busy or not accessible; close other apps"):
            open_source("camera:/dev/null").open()


def test_camera_grammar(tmp_path):
    assert open_source("camera").device == 0
    assert open_source("camera:3").device == 3
    assert open_source("camera:/dev/video2").device == "/dev/video2"
    assert open_source("camera:~/clip.mp4").device == os.path.expanduser("~/clip.mp4")
    source = open_source("camera:1", size=(1280, 720), fps=24)
    assert (source.request_size, source.request_fps) == ((1280, 720), 24)
