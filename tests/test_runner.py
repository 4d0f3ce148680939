"""The runner: order, counts, drops, style switching, pause, clean stop, latency metrics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stylecam.core.frames import Frame
from stylecam.core.runner import Handoff, Runner, RunnerError
from stylecam.core.sinks import FileSink, NullSink, Sink
from stylecam.core.sources import FileSource, PatternSource, Source, SourceError
from stylecam.core.styles import Style
from stylecam.core.stylize.base import Backend


class NumberedSource(Source):
    """Frames whose pixels encode their index, so order and loss are visible in the output."""

    def __init__(self, count, live=False, size=(32, 24), delay=0.0):
        self.count, self.live, self.size, self.delay = count, live, size, delay
        self.fps = 30.0
        self.i = 0
        self.closed = False

    def read(self):
        if self.i >= self.count:
            return None
        if self.delay:
            time.sleep(self.delay)
        img = np.full((self.size[1], self.size[0], 3), self.i % 256, np.uint8)
        img[0, 0, 0] = self.i // 256
        self.i += 1
        return img

    def close(self):
        self.closed = True


class OffsetBackend(Backend):
    """Adds the style's ``offset`` to every pixel; records batch sizes."""

    name = "offset"

    def __init__(self, batch_size=1, delay=0.0):
        self.batch_size = batch_size
        self.delay = delay
        self.offset = 0
        self.batches = []

    def set_style(self, style):
        self.offset = style.params["offset"]

    def process(self, images):
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(len(images))
        return [(img.astype(np.int16) + self.offset).clip(0, 255).astype(np.uint8) for img in images]


class ListSink(Sink):
    name = "list"

    def __init__(self):
        self.frames = []
        self.opened = None

    def open(self, size, fps):
        self.opened = (size, fps)

    def write(self, frame):
        self.frames.append(frame)


def _style(offset):
    return Style(name=f"o{offset}", backend="offset", params={"offset": offset})


def _index(img):
    return int(img[0, 0, 0]) * 256 + int(img[1, 1, 1])


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_file_like_source_keeps_every_frame_in_order(batch):
    backend = OffsetBackend(batch_size=batch)
    backend.set_style(_style(0))
    sink = ListSink()
    summary = Runner(NumberedSource(50), backend, [sink], batch_size=batch).run()
    assert [f.index for f in sink.frames] == list(range(50))
    assert [_index(f.image) for f in sink.frames] == list(range(50))
    assert summary["frames_in"] == summary["frames_out"] == 50 and summary["dropped"] == 0
    assert max(backend.batches) <= batch
    assert sink.opened == ((32, 24), 30.0)


def test_max_frames_and_size_conversion():
    sink = ListSink()
    backend = OffsetBackend()
    backend.set_style(_style(0))
    Runner(NumberedSource(100, size=(33, 25)), backend, [sink], size=(16, 12), max_frames=7).run()
    assert len(sink.frames) == 7
    assert all(f.image.shape == (12, 16, 3) for f in sink.frames)


def test_odd_native_size_rounds_down_to_even():
    sink = ListSink()
    backend = OffsetBackend()
    backend.set_style(_style(0))
    Runner(NumberedSource(3, size=(33, 25)), backend, [sink]).run()
    assert sink.frames[0].image.shape == (24, 32, 3)


def test_live_source_drops_oldest_when_stylizer_is_slow():
    backend = OffsetBackend(delay=0.05)
    backend.set_style(_style(0))
    sink = ListSink()
    summary = Runner(NumberedSource(60, live=True, delay=0.002), backend, [sink]).run()
    indices = [f.index for f in sink.frames]
    assert summary["dropped"] > 0
    assert len(indices) + summary["dropped"] == 60
    assert indices == sorted(indices) and indices[-1] == 59  # the newest frame always gets out


def test_style_switch_applies_from_next_batch():
    backend = OffsetBackend(batch_size=2)
    backend.set_style(_style(0))
    sink = ListSink()
    runner = Runner(NumberedSource(40, delay=0.002), backend, [sink])

    class Switcher(ListSink):
        def write(self, frame):
            if frame.index == 9:
                runner.set_style(_style(100))

    runner.sinks.append(Switcher())
    runner.run()
    shifts = [int(f.image[1, 1, 1]) - f.index for f in sink.frames]
    first = shifts.index(100)
    assert set(shifts[:first]) == {0} and set(shifts[first:]) == {100}
    assert 10 <= first <= 12  # at a batch boundary after the request, never before it


def test_pause_passes_frames_through():
    backend = OffsetBackend()
    backend.set_style(_style(50))
    sink = ListSink()
    runner = Runner(NumberedSource(5), backend, [sink])
    runner.set_paused(True)
    runner.run()
    assert [int(f.image[1, 1, 1]) for f in sink.frames] == [0, 1, 2, 3, 4]
    assert backend.batches == []


def test_stop_from_another_thread_is_prompt_and_closes_everything():
    backend = OffsetBackend()
    backend.set_style(_style(0))
    source = PatternSource(size=(64, 48), fps=30, realtime=True)
    sink = NullSink()
    runner = Runner(source, backend, [sink])
    t = threading.Thread(target=runner.run)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    runner.stop()
    t.join(3)
    assert not t.is_alive() and time.perf_counter() - t0 < 2.0
    assert sink.count > 5
    summary = runner.metrics.summary()
    assert summary["latency_p50_ms"] is not None and summary["latency_p50_ms"] >= 0


def test_latency_counts_from_capture():
    backend = OffsetBackend(delay=0.03)
    backend.set_style(_style(0))
    summary = Runner(NumberedSource(5), backend, [ListSink()]).run()
    assert summary["latency_p50_ms"] >= 30


def test_source_error_surfaces_as_runner_error(tmp_path):
    backend = OffsetBackend()
    backend.set_style(_style(0))
    with pytest.raises(RunnerError, match="not found"):
        Runner(FileSource(str(tmp_path / "missing.mp4")), backend, [ListSink()]).run()


def test_handoff_lossless_blocks_and_lossy_drops():
    lossy = Handoff(2, lossy=True)
    for i in range(5):
        lossy.put(i)
    assert lossy.get_batch(10) == [3, 4] and lossy.dropped == 3
    lossless = Handoff(1, lossy=False)
    lossless.put(0)
    done = threading.Event()
    threading.Thread(target=lambda: (lossless.put(1), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # waits for room
    assert lossless.get_batch(1) == [0]
    assert done.wait(1) and lossless.get_batch(1) == [1]


def test_file_sink_writes_mp4_and_png_folder(tmp_path):
    frames = [Frame(np.full((24, 32, 3), i * 20, np.uint8), i) for i in range(6)]
    mp4 = FileSink(str(tmp_path / "o.mp4"))
    mp4.open((32, 24), 10)
    for f in frames:
        mp4.write(f)
    mp4.close()
    back = FileSource(str(tmp_path / "o.mp4"))
    back.open()
    got = []
    while (img := back.read()) is not None:
        got.append(img)
    assert len(got) == 6 and abs(int(got[3].mean()) - 60) <= 4
    folder = FileSink(str(tmp_path / "frames") + "/")
    folder.open((32, 24), 10)
    for f in frames:
        folder.write(f)
    import cv2

    png = cv2.imread(str(tmp_path / "frames" / "frame_000004.png"))
    assert png is not None and int(png[0, 0, 0]) == 80  # lossless


def test_file_source_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot read|no readable"):
        FileSource(str(bad)).open()
    with pytest.raises(SourceError, match="folder"):
        FileSource(str(tmp_path)).open()


class PipelinedBackend(OffsetBackend):
    """Overlaps batches like the diffusion engine: ``submit`` queues, ``collect`` finishes.

    Records the order of calls so the test can see that batch k+1 was submitted before batch k
    was collected.
    """

    max_inflight = 2

    def __init__(self, batch_size=2):
        super().__init__(batch_size=batch_size)
        self.calls = []
        self.inflight = 0
        self.max_seen = 0

    def submit(self, images):
        self.inflight += 1
        self.max_seen = max(self.max_seen, self.inflight)
        self.calls.append(("submit", len(self.calls)))
        return self.process(images)

    def collect(self, ticket):
        self.inflight -= 1
        self.calls.append(("collect", len(self.calls)))
        return ticket


@pytest.mark.parametrize("batch", [1, 3])
def test_pipelined_backend_overlaps_batches_and_keeps_order(batch):
    backend = PipelinedBackend(batch_size=batch)
    backend.set_style(_style(0))
    sink = ListSink()
    summary = Runner(NumberedSource(20), backend, [sink]).run()
    assert [f.index for f in sink.frames] == list(range(20))
    assert [_index(f.image) for f in sink.frames] == list(range(20))
    assert summary["frames_out"] == 20 and backend.inflight == 0
    # A second batch was submitted before the first was collected (the source, a fast
    # non-live one, always had frames waiting after the first batch).
    assert backend.max_seen == 2


def test_pipelined_backend_adds_no_latency_when_the_source_is_slower():
    # Frames come every 40 ms and the stylizer takes ~0: the batch in flight must be collected
    # at once, not held until the next frame arrives.
    backend = PipelinedBackend(batch_size=1)
    backend.set_style(_style(0))
    summary = Runner(NumberedSource(8, live=True, delay=0.04), backend, [ListSink()]).run()
    assert summary["frames_out"] == 8
    assert summary["latency_p50_ms"] < 25


def test_pause_with_batches_in_flight_keeps_order():
    backend = PipelinedBackend(batch_size=2)
    backend.set_style(_style(100))
    sink = ListSink()
    runner = Runner(NumberedSource(30, delay=0.001), backend, [sink])

    class Pauser(ListSink):
        def write(self, frame):
            if frame.index == 6:
                runner.set_paused(True)

    runner.sinks.append(Pauser())
    runner.run()
    assert [f.index for f in sink.frames] == list(range(30))
    values = [int(f.image[1, 1, 1]) - f.index for f in sink.frames]
    assert values[0] == 100 and values[-1] == 0  # stylized first, passed through once paused


def test_a_clip_played_live_at_a_lower_rate_keeps_its_own_speed(tmp_path):
    """`run --source file:… --fps 10 --sink mjpeg`: a third of a 30 fps clip's frames are sent,
    evenly (the clip does not slow down, as a camera set to 10 fps would not)."""
    from stylecam.core.realtime import RealtimeSource
    from stylecam.core.sources import open_source

    from clips import colour_index, write_colour_clip

    clip = write_colour_clip(tmp_path / "colours.avi")
    source = RealtimeSource(open_source(f"file:{clip}"), rate=10.0)
    source.open()
    try:
        assert source.fps == 10.0 and source.live
        sent = [colour_index(source.read()) for _ in range(4)]
    finally:
        source.close()
    assert sent == [0, 3, 6, 9]
    own = RealtimeSource(open_source(f"file:{clip}"))
    own.open()
    try:
        assert [colour_index(own.read()) for _ in range(3)] == [0, 1, 2]
    finally:
        own.close()
