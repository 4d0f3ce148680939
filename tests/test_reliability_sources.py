"""Source faults: a camera path that vanishes and comes back, a source that stalls, a read that
never returns while stopping, and frames of every odd layout and size. Each test checks that
frames kept reaching the sinks and what the user was told (the runner's events)."""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
import pytest

from stylecam.core.frames import as_rgb, fit
from stylecam.core.runner import Runner, RunnerError, engine_size
from stylecam.core.sinks import VirtualCameraSink
from stylecam.core.sources import CameraSource, Source, open_source
from stylecam.core.styles import load_styles
from stylecam.core.stylize.base import create_backend

from clips import colour_index, write_colour_clip
from reliability_helpers import (FLAKY_BACKEND, Background, EventLog, Identity, Recorder,  # noqa: F401
                                 figures, flaky_camera, wait_until)

colour_of = colour_index


@pytest.fixture
def webcam_clip(tmp_path):
    return write_colour_clip(tmp_path / "webcam.avi")


def test_camera_that_vanishes_and_returns_keeps_frames_flowing_and_says_so(webcam_clip, figures):
    source = open_source(f"camera:{webcam_clip}")
    assert isinstance(source, CameraSource)
    sink, log = Recorder(), EventLog()
    runner = Runner(source, Identity(), [sink], on_event=log)
    with Background(runner) as bg:
        assert wait_until(lambda: sink.count >= 10, 5)
        hidden = webcam_clip.with_name("unplugged.avi")
        t_unplug = time.monotonic()
        os.rename(webcam_clip, hidden)  # unplugged: the open handle plays out, then reads fail
        lost = log.wait("source-lost", 3)
        assert lost is not None, log.kinds()
        assert lost.message == f"camera:{webcam_clip} was lost; showing its last picture while it reconnects"
        time.sleep(1.0)
        t_plug = time.monotonic()
        os.rename(hidden, webcam_clip)
        back = log.wait("source-back", 5)
        assert back is not None and back.message == f"camera:{webcam_clip} is back" and back.level == "info"
        t_back = back.t
        assert wait_until(lambda: sink.count_between(t_back + 0.1, float("inf")) >= 10, 3)
        elapsed = bg.stop()
    assert bg.error is None and elapsed < 2.0
    # The stream never paused: frames kept coming at about the camera's rate the whole time,
    # the lost stretch showing one frozen picture, live colours again afterwards.
    gap = sink.max_gap(t_unplug, t_back)
    assert gap < 0.2, gap
    during = [img for t, img in zip(sink.times, sink.images) if lost.t + 0.05 < t < t_plug]
    assert len(during) >= 0.6 * 30 * (t_plug - lost.t - 0.05)
    assert len({colour_of(img) for img in during}) == 1
    after = [colour_of(img) for t, img in zip(sink.times, sink.images) if t > t_back + 0.1]
    assert len(set(after)) >= 3
    figures.update(outage_s=round(t_plug - t_unplug, 2), max_gap_s=round(gap, 3),
                   detect_s=round(lost.t - t_unplug, 2), recovery_s=round(t_back - t_plug, 2),
                   frames_repeated=source.repeated, output_frames_lost=0)


class StallingSource(Source):
    """A live 64x48 source at ``fps`` whose read blocks for ``stall`` seconds at frame ``at``,
    as a USB camera whose driver hangs for a moment."""

    live = True
    name = "stalling"

    def __init__(self, fps=60.0, at=20, stall=1.2):
        self.fps, self.at, self.stall = fps, at, stall
        self.n = 0
        self.t_stall: tuple[float, float] | None = None

    def read(self):
        if self.n == self.at:
            t0 = time.monotonic()
            time.sleep(self.stall)
            self.t_stall = (t0, time.monotonic())
        else:
            time.sleep(1.0 / self.fps)
        img = np.full((48, 64, 3), self.n % 200, np.uint8)
        self.n += 1
        return img


def test_stalled_source_is_reported_and_the_virtual_camera_keeps_its_rate(flaky_camera, figures):
    source = StallingSource()
    sink, log = Recorder(), EventLog()
    camera = VirtualCameraSink((64, 48), fps=30, backend=FLAKY_BACKEND)
    runner = Runner(source, Identity(), [sink, camera], on_event=log, stall_timeout=0.4)
    with Background(runner) as bg:
        stalled = log.wait("source-stalled", 3)
        resumed = log.wait("source-resumed", 3)
        assert wait_until(lambda: sink.count >= source.at + 10, 3)
        bg.stop()
    assert bg.error is None
    t0, t1 = source.t_stall
    assert stalled.message == "no frames from stalling for 0.4 s; the outputs keep showing the last picture"
    assert 0.3 <= stalled.t - t0 <= 0.8
    assert resumed.level == "info" and resumed.message.startswith("stalling sends frames again after a ")
    assert abs(float(resumed.message.split("after a ")[1].split(" s")[0]) - 1.2) <= 0.3
    assert runner.metrics.stalls == 1
    # Nothing was lost (the source produced nothing meanwhile) and the frames came back.
    assert sink.indices == list(range(len(sink.indices))) and sink.indices[-1] > source.at
    # The camera kept its 30 fps through the stall, re-sending the last picture.
    cam = flaky_camera.instances[-1]
    sent = [(t, f) for t, f in zip(cam.times, cam.frames) if t0 + 0.1 < t < t1 - 0.1]
    assert len(sent) >= 0.7 * 30 * (t1 - t0 - 0.2)
    assert all(np.array_equal(f, sent[0][1]) for _, f in sent)
    assert int(sent[0][1][0, 0, 0]) == source.at - 1  # the last frame before the stall
    cam_gaps = np.diff([t for t, _ in sent])
    figures.update(stall_s=round(t1 - t0, 2), reported_after_s=round(stalled.t - t0, 2),
                   camera_max_gap_s=round(float(cam_gaps.max()), 3), frames_lost=0)


def test_a_slow_start_is_not_a_stall():
    class SlowToOpen(StallingSource):
        name = "slow-camera"

        def open(self):
            time.sleep(0.6)  # some cameras take seconds to open

    sink, log = Recorder(), EventLog()
    runner = Runner(SlowToOpen(at=-1), Identity(), [sink], on_event=log, stall_timeout=0.3, max_frames=10)
    summary = runner.run()
    assert summary["frames_out"] == 10 and log.events == [] and summary["stalls"] == 0


class BlockingSource(Source):
    """Gives three frames, then blocks in ``read`` until ``release`` is set (a hung driver)."""

    live = False
    name = "hung"

    def __init__(self):
        self.release = threading.Event()
        self.n = 0
        self.closed = threading.Event()

    def read(self):
        if self.n >= 3:
            self.release.wait()
            return None
        self.n += 1
        return np.zeros((48, 64, 3), np.uint8)

    def close(self):
        self.closed.set()


def test_stop_while_the_source_hangs_returns_within_two_seconds():
    source, sink, log = BlockingSource(), Recorder(), EventLog()
    runner = Runner(source, Identity(), [sink], on_event=log)
    with Background(runner) as bg:
        assert wait_until(lambda: sink.count == 3, 3)
        elapsed = bg.stop()
    try:
        assert not bg.thread.is_alive() and elapsed < 2.0, elapsed
        assert sink.closed and bg.error is None
        stuck = log.of("capture-stuck")
        assert [e.message for e in stuck] == ["hung did not return a frame while stopping; it is released when it does"]
        assert not source.closed.is_set()  # never closed under a read that is still running
    finally:
        source.release.set()
    # Once the read returns, the capture thread closes the source and ends: nothing is left over.
    assert source.closed.wait(2)
    assert wait_until(lambda: "stylecam-capture" not in [t.name for t in threading.enumerate()], 2)


def _odd_frames():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    return [
        ("grey", np.full((37, 23), 90, np.uint8)),
        ("grey-1ch", np.full((30, 40, 1), 200, np.uint8)),
        ("rgba", rgba),
        ("odd", rgb),
        ("float", rgb.astype(np.float32) / 255.0),
        ("uint16", rgb.astype(np.uint16) * 257),
        ("non-contiguous", rgb[:, ::-1]),
        ("tiny", np.array([[[10, 200, 30]]], np.uint8)),
        ("4k", np.tile(rgb[:1, :1], (2160, 3840, 1))),
    ]


class ListSource(Source):
    live = False

    def __init__(self, frames):
        self.frames = list(frames)
        self.name = "odd-frames"

    def read(self):
        return self.frames.pop(0) if self.frames else None


def test_frames_of_every_layout_and_size_reach_the_sink_at_the_engine_size():
    frames = _odd_frames()
    sink, log = Recorder(), EventLog()
    summary = Runner(ListSource([f for _, f in frames]), Identity(), [sink], size=(64, 48), on_event=log).run()
    assert summary["frames_out"] == len(frames) and log.events == []
    for (kind, raw), got in zip(frames, sink.images):
        assert got.shape == (48, 64, 3), kind
        assert np.array_equal(got, fit(as_rgb(raw), (64, 48))), kind
    assert (sink.images[0] == 90).all() and (sink.images[1] == 200).all()  # grey stays grey
    assert np.array_equal(sink.images[2], sink.images[3])  # alpha dropped, colour untouched
    assert (sink.images[7] == (10, 200, 30)).all() and (sink.images[8] == sink.images[8][0, 0]).all()
    # BGRA, as mss hands the screen over: the screen source's conversion gives the same picture.
    rgb = frames[3][1]
    bgra = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
    assert np.array_equal(as_rgb(bgra, order="bgr"), rgb)


@pytest.mark.parametrize("first, engine", [((1, 1), (16, 16)), ((3840, 2160), (3840, 2160)),
                                           ((33, 25), (32, 24)), ((7, 500), (16, 1142))])
def test_the_first_frame_sets_a_usable_engine_size(first, engine):
    w, h = first
    frames = [np.full((h, w, 3), 77, np.uint8), np.full((20, 30), 5, np.uint8)]
    sink = Recorder()
    Runner(ListSource(frames), Identity(), [sink]).run()
    assert engine_size(w, h) == engine
    assert [img.shape[:2] for img in sink.images] == [engine[::-1]] * 2
    assert (sink.images[0] == 77).all() and (sink.images[1] == 5).all()


def test_odd_frames_through_the_classic_stylizer():
    """The real stylizer on grey, 1x1-derived and odd-sized frames: every frame comes out painted."""
    styles, _ = load_styles()
    backend = create_backend(styles["toon"])
    frames = [f for kind, f in _odd_frames() if kind != "4k"]
    for size in (None, (64, 48)):
        sink = Recorder()
        tiny_first = [np.array([[[10, 200, 30]]], np.uint8)] + frames
        summary = Runner(ListSource(tiny_first), backend, [sink], size=size).run()
        assert summary["frames_out"] == len(tiny_first) and summary["passthrough"] == 0
        want = (16, 16) if size is None else size
        assert all(img.shape == (want[1], want[0], 3) for img in sink.images)
    # A 4K frame at its own size: the slowest case, one frame.
    sink = Recorder(keep_images=False)
    summary = Runner(ListSource([_odd_frames()[-1][1]]), backend, [sink]).run()
    assert summary["frames_out"] == 1 and summary["passthrough"] == 0


class BadThenGood(Source):
    live = False
    name = "glitchy"

    def __init__(self):
        self.items = [np.zeros((24, 32, 3), np.uint8), np.zeros((0, 0, 3), np.uint8),
                      np.zeros((24, 32, 5), np.uint8), "not a picture", np.ones((24, 32, 3), np.uint8),
                      np.zeros((2, 2, 2, 2), np.uint8), np.full((24, 32, 3), 2, np.uint8)]

    def read(self):
        return self.items.pop(0) if self.items else None


def test_frames_that_are_not_pictures_are_skipped_and_reported():
    sink, log = Recorder(), EventLog()
    summary = Runner(BadThenGood(), Identity(), [sink], on_event=log).run()
    assert [int(img.max()) for img in sink.images] == [0, 1, 2]
    assert summary["bad_frames"] == 4
    bad = log.of("bad-frame")
    assert len(bad) == 2  # once per run of bad frames, not once per frame
    assert bad[0].message.startswith("glitchy sent a frame that is not a picture (empty image")
    assert bad[0].message.endswith("; skipping such frames")


def test_a_source_that_sends_only_garbage_stops_with_one_message():
    class Garbage(Source):
        live, name = False, "garbage"

        def read(self):
            return np.zeros((4, 4, 7), np.uint8)

    sink = Recorder()
    with pytest.raises(RunnerError, match=r"^garbage sent 100 unusable frames in a row \(last: expected an image"):
        Runner(Garbage(), Identity(), [sink]).run()
    assert sink.count == 0 and sink.closed
