"""Just-in-time submits (core/stylize/pacing.py, the runner's hold, the engine's ``pace``).

The pacer is checked against a model of the engine's two streams driven the way the runner
drives them (two batches in flight, a source that always has a frame): with the learned holds a
frame's latency falls from about two periods to one pass through the pipeline, and the frame
rate stays. The runner is checked with a real file source and a backend that asks to pace.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from stylecam.core.runner import Handoff, Runner
from stylecam.core.stylize.base import Backend
from stylecam.core.stylize.engine import EngineSettings, StreamEngine
from stylecam.core.stylize.pacing import MAX_DELAY_S, SLACK_MS, SubmitPacer, cycle_position
from tiny import tiny_bundle


def simulate(pacer: SubmitPacer | None, batches: int = 200, side=(2.0, 2.0, 2.0, 9.0), main=6.0, host=0.3,
             key_of=None, skip: int = 50):
    """Two streams as the engine runs them: batch k's side work (``side[k % 4]`` ms: every
    fourth one runs the conditioning encoder) starts when it is submitted (after the previous
    side work); its main work (``main`` ms) when both its side work and the previous main work
    are done. The host submits batch k+1 right after collecting batch k-1 (two in flight),
    ``host`` ms later, after the pacer's hold. ``key_of(position)``: the pacer's key for a place
    in the cycle (default: the position). Returns (latencies ms, main-stream end times ms) after
    the first ``skip`` batches."""
    t_host = side_free = main_free = 0.0
    ends, latencies, inflight = [], [], []
    for k in range(batches):
        position = k % len(side)
        key = key_of(position) if key_of is not None else position
        if len(inflight) >= 2:
            done = inflight.pop(0)  # collect the oldest: the host waits for it
            t_host = max(t_host, done["end"]) + host
            if pacer is not None:
                pacer.observe(done["key"], done["queued"], done["idle"])
        if pacer is not None and inflight:
            t_host += pacer.delay(key) * 1000.0
        t_submit = t_host
        side_end = max(t_submit, side_free) + side[position]
        side_free = side_end
        begin = max(side_end, main_free)
        idle = begin - main_free if k else 0.0
        end = begin + main
        main_free = end
        inflight.append({"key": key, "end": end, "queued": begin - side_end, "idle": idle})
        ends.append(end)
        latencies.append(end - t_submit)
    return np.array(latencies[skip:]), np.array(ends[skip:])


def test_pacer_halves_latency_at_the_same_frame_rate():
    lat_free, ends_free = simulate(None)
    lat_paced, ends_paced = simulate(SubmitPacer())
    period_free = np.diff(ends_free).mean()
    period_paced = np.diff(ends_paced).mean()
    # Unpaced, a frame waits behind the batch in flight: about two main-stream periods.
    assert np.median(lat_free) > 10.0
    # Paced: one pass (side 2 + main 6 ms) plus the slack it keeps, for the three ordinary
    # positions; the rate is the main stream's, give or take the encoder batch's bubble.
    assert np.median(lat_paced) <= 2.0 + 6.0 + SLACK_MS + 0.5
    assert period_paced <= period_free * 1.05


def test_pacer_keeps_each_cycle_position_apart():
    pacer = SubmitPacer()
    simulate(pacer)
    delays = {k: pacer.delay(k) * 1000.0 for k in range(4)}
    # The encoder's batch (9 ms of side work) needs an earlier start than the others (2 ms).
    assert delays[3] < delays[0] - 3.0
    assert all(0.0 <= d <= MAX_DELAY_S * 1000.0 for d in delays.values())


def test_a_long_refresh_cycle_shares_its_delays_and_settles_within_a_benchmark():
    # The vision refresh every 64 frames at B=1: the refreshing batch's side work is 9 ms, the
    # 63 others 2 ms. A delay per position is learned once per 64 batches: over 480 batches (a
    # benchmark row, a call's first seconds) its first cycles still queue for two periods. The
    # positions that do the same work share a delay (cycle_position) and settle in a few batches.
    side = (9.0,) + (2.0,) * 63
    keep = lambda pos: cycle_position(pos == 0, pos)  # noqa: E731  position 0 refreshes
    assert [keep(p) for p in (0, 1, 2, 3, 63)] == ["due", 1, 2, 2, 2]
    lat_shared, ends_shared = simulate(SubmitPacer(), batches=480, side=side, key_of=keep, skip=16)
    lat_apart, _ = simulate(SubmitPacer(), batches=480, side=side, skip=16)
    lat_free, ends_free = simulate(None, batches=480, side=side, skip=16)
    one_pass = 2.0 + 6.0 + SLACK_MS + 0.5
    assert np.percentile(lat_shared, 90) <= one_pass  # one pass, from the first dozen batches on
    assert np.percentile(lat_apart, 90) > 10.0  # a tenth of the frames or more still two periods
    assert lat_shared.mean() < lat_apart.mean() - 0.5
    assert np.diff(ends_shared).mean() <= np.diff(ends_free).mean() * 1.05  # the same rate


def test_engine_keys_collapse_the_cycle_to_the_work_each_batch_does():
    bundle = tiny_bundle("mllm-edit")
    engine = StreamEngine(bundle, EngineSettings(batch_size=1, mode="eager", lllite_refresh=8),
                          style={"instruction": "make it an oil painting", "seed": 1})
    try:
        frame = np.zeros((*engine.size[::-1], 3), np.uint8)
        keys = []
        for _ in range(66):
            keys.append(engine._cycle_key())
            engine.collect(engine.submit([frame]))
    finally:
        engine.close()
    assert engine.settings.refresh_batches == 64
    assert [k[0] for k in keys[:4]] == ["due", 1, 2, 2] and keys[64][0] == "due" and keys[65][0] == 1
    assert len(set(keys)) <= 9  # not one per position of a 64-batch cycle


def test_pacer_backs_off_when_the_main_stream_waits_and_resets():
    pacer = SubmitPacer()
    for _ in range(20):
        pacer.observe("k", queued_ms=5.0, idle_ms=0.0)
    high = pacer.delay("k")
    assert high > 0.003
    pacer.observe("k", queued_ms=0.0, idle_ms=3.0)
    assert pacer.delay("k") < high - 0.001  # the batch came too late: start the next one sooner
    for _ in range(200):
        pacer.observe("k", queued_ms=500.0, idle_ms=0.0)  # a hiccup never holds longer than the cap
    assert pacer.delay("k") == pytest.approx(MAX_DELAY_S)
    pacer.reset()
    assert pacer.delay("k") == 0.0 and pacer.as_dict() == {}


def test_pace_setting_is_checked_and_the_cpu_engine_never_holds():
    with pytest.raises(ValueError, match="pace must be one of auto, on, off"):
        EngineSettings(pace="sometimes")
    engine = StreamEngine(tiny_bundle("sd-turbo"), EngineSettings(batch_size=1, mode="eager", pace="on"),
                          style={"prompt": "oil painting", "seed": 1})
    try:
        frame = np.zeros((*engine.size[::-1], 3), np.uint8)
        ticket = engine.submit([frame])
        assert engine.pacer is None and engine.pace() == 0.0  # CUDA's events are what it learns from
        engine.collect(ticket)
    finally:
        engine.close()


def test_handoff_newest_drops_the_older_frames_when_lossy():
    h = Handoff(4, lossy=True)
    for i in range(4):
        h.put(i)
    assert h.waiting() == 4
    assert h.get_batch(1, timeout=0, newest=True) == [3]
    assert h.dropped == 3 and h.waiting() == 0
    kept = Handoff(4, lossy=False)  # a file that must keep every frame never drops
    for i in range(3):
        kept.put(i)
    assert kept.get_batch(1, timeout=0, newest=True) == [0]


class _PacedBackend(Backend):
    """Overlaps two batches (outputs ready ``work`` s after submit) and asks for a ``hold``."""

    name = "paced"
    batch_size = 1
    max_inflight = 2

    def __init__(self, hold: float, work: float = 0.01):
        self.hold, self.work = hold, work
        self.asked = 0

    def set_style(self, style):
        pass

    def pace(self) -> float:
        self.asked += 1
        return self.hold

    def submit(self, images):
        return [img.copy() for img in images], time.perf_counter() + self.work

    def collect(self, ticket):
        frames, ready = ticket
        time.sleep(max(0.0, ready - time.perf_counter()))
        return frames


class _FastLive:
    """A live source that always has a new frame (a camera faster than the stylizer)."""

    live = True
    name = "fast live"
    fps = None

    def __init__(self, frames: int):
        self.left = frames

    def open(self):
        pass

    def read(self):
        if self.left <= 0:
            return None
        self.left -= 1
        time.sleep(0.001)
        return np.full((48, 64, 3), self.left % 251, np.uint8)

    def close(self):
        pass


class _Count:
    name = "count"

    def __init__(self):
        self.frames = []

    def open(self, size, fps):
        pass

    def write(self, frame):
        self.frames.append(frame)

    def close(self):
        pass


def test_runner_holds_waiting_frames_for_the_backends_pace_and_takes_the_newest():
    backend = _PacedBackend(hold=0.004)
    sink = _Count()
    summary = Runner(_FastLive(300), backend, [sink], size=(64, 48)).run()
    assert backend.asked > 10
    assert summary["frames_out"] == len(sink.frames) > 10
    # Frames go out in capture order, and the hold dropped the stale ones in between.
    indices = [f.index for f in sink.frames]
    assert indices == sorted(indices) and summary["dropped"] > 0


def test_runner_never_holds_when_the_source_is_the_slower_side():
    """A 30 fps camera: the batch in flight is collected at once, nothing waits, no hold asked."""
    backend = _PacedBackend(hold=0.5, work=0.002)

    class Slow(_FastLive):
        def read(self):
            time.sleep(0.03)
            return super().read()

    t0 = time.perf_counter()
    summary = Runner(Slow(15), backend, [_Count()], size=(64, 48)).run()
    assert summary["frames_out"] == 15
    assert backend.asked <= 2  # at most a frame that happened to be waiting
    assert time.perf_counter() - t0 < 15 * 0.03 + 1.5  # a 0.5 s hold per frame would take 7.5 s


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_engine_learns_its_holds_and_paints_what_an_unpaced_engine_paints():
    """On CUDA at B=1 the engine paces by default: the hold comes from its own events, stays
    within bounds, and pacing changes when frames go in, never what comes out."""
    bundle = tiny_bundle("sd-turbo").to("cuda")
    style = {"prompt": "oil painting", "seed": 1}
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(24)]
    outs = {}
    for pace in ("auto", "off"):
        engine = StreamEngine(bundle, EngineSettings(batch_size=1, mode="graphs", pace=pace), style=style)
        try:
            outs[pace] = engine.process(frames)
            if pace == "auto":
                assert engine.pacer is not None and engine.pacer.observed >= len(frames) - 2
                assert all(0.0 <= d <= MAX_DELAY_S * 1000.0 for d in engine.pacer.as_dict().values())
            else:
                assert engine.pacer is None and engine.pace() == 0.0
        finally:
            engine.close()
    for a, b in zip(outs["auto"], outs["off"]):  # two captures of the same steps: equal, or a level apart
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1
