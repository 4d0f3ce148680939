"""The server's hub keeps a backend's ``max_inflight`` batches in flight, with real aiortc
peers on loopback: a ``StylecamServer`` and its :class:`Hub` in this process (so the test can
give it a backend and read what the backend saw), :class:`RemoteBackend` clients talking to it
over WebRTC.

The backend is the real classic stylizer behind an asynchronous ``submit`` — a worker thread
paints while the hub goes on, as the diffusion engine's GPU streams do — with ``max_inflight``
2. Every frame carries its session and number in black and white blocks, which the painting
and the codec both keep, so each frame that comes back says whose it is and which it is.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("aiortc")

from remote_helpers import demo_frames, mad, saturation  # noqa: E402

from stylecam.core.remote.hub import Hub  # noqa: E402
from stylecam.core.remote.server import ServeConfig, StylecamServer  # noqa: E402
from stylecam.core.styles import Style, load_styles  # noqa: E402
from stylecam.core.stylize.base import Backend, BackendError, create_backend  # noqa: E402
from stylecam.core.stylize.classic import ClassicBackend  # noqa: E402

STYLES, _ = load_styles()
BLOCK = 40  # side of one stamp block, in pixels
BITS = 8  # 1 bit of session, 7 of frame number


class PipelinedClassic(Backend):
    """The classic stylizer with the submit/collect shape of a GPU backend: ``submit`` hands
    the batch to a worker thread and returns at once, ``collect`` waits for it. Each batch
    takes at least ``min_batch_s`` (a GPU batch's time), so frames queue up behind it.
    ``log`` records ("submit" | "collect", batch number, batches in flight afterwards)."""

    name = "pipelined-classic"
    max_inflight = 2

    def __init__(self, style: Style, batch_size: int = 2, min_batch_s: float = 0.05, steady: bool = True):
        self.inner = ClassicBackend(workers=1, steady=steady)
        self.inner.set_style(style)
        self.batch_size = batch_size
        self.min_batch_s = min_batch_s
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-gpu")
        self._count = 0
        self.inflight = 0
        self.log: list[tuple[str, int, int]] = []
        self.styles_at_submit: list[str] = []
        self._style = style.name

    def set_style(self, style: Style) -> None:
        if style.backend != "classic":
            raise BackendError(f"style {style.name!r} is not a classic style")
        self._style = style.name
        self._worker.submit(self.inner.set_style, style)  # in turn: applies from the next batch

    def temporal(self, style: Style) -> bool:
        return self.inner.temporal(style)

    def detach_temporal(self):
        return self._worker.submit(self.inner.detach_temporal)  # in turn: resolved before a later attach

    def attach_temporal(self, state) -> None:
        self._worker.submit(lambda: self.inner.attach_temporal(None if state is None else state.result()))

    def reset_temporal(self) -> None:
        self._worker.submit(self.inner.reset_temporal)

    def _paint(self, images):
        t0 = time.perf_counter()
        out = self.inner.process(images)
        time.sleep(max(0.0, self.min_batch_s - (time.perf_counter() - t0)))
        return out

    def submit(self, images):
        n = self._count
        self._count += 1
        future = self._worker.submit(self._paint, list(images))
        self.inflight += 1
        assert self.inflight <= self.max_inflight, "the hub went over max_inflight"
        self.log.append(("submit", n, self.inflight))
        self.styles_at_submit.append(self._style)
        return n, future

    def collect(self, ticket):
        n, future = ticket
        out = future.result()
        self.inflight -= 1
        self.log.append(("collect", n, self.inflight))
        return out

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.inner.close()


class InProcessServer:
    """A ``StylecamServer`` on 127.0.0.1 in a thread of its own, its hub painting with the
    backend ``factory(style)`` makes."""

    def __init__(self, factory, style: Style, *, gather: float = 0.01):
        self.backends: list[Backend] = []

        def make(s):
            backend = factory(s)
            self.backends.append(backend)
            return backend

        self.hub = Hub(make, gather=gather)
        self.hub.start(style, timeout=60)
        config = ServeConfig(port=0, style=style, styles=STYLES, max_sessions=8)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = StylecamServer(config, self.hub, "test")
        self.url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.hub.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stamp(frame: np.ndarray, session: int, index: int) -> np.ndarray:
    """``frame`` with its session and number as a row of black (0) and white (1) blocks."""
    out = frame.copy()
    value = (session << (BITS - 1)) | index
    for b in range(BITS):
        out[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if value >> b & 1 else 0
    return out


def read_stamp(frame: np.ndarray) -> tuple[int, int]:
    m = BLOCK // 4
    value = 0
    for b in range(BITS):
        if frame[m:BLOCK - m, b * BLOCK + m:(b + 1) * BLOCK - m].mean() > 128:
            value |= 1 << b
    return value >> (BITS - 1), value & ((1 << (BITS - 1)) - 1)


def client(url: str, style: str):
    return create_backend(STYLES[style], server=url, exact=True, frame_timeout=60.0, stall_timeout=30.0)


def stream(backend, frames, fps: float = 30.0, ahead: int = 4, at=None):
    """Send ``frames`` at ``fps`` as a camera would, ``ahead`` frames in flight (each waited
    for in order); ``at[i]()`` runs just before frame i is sent. Returns the painted frames."""
    tickets: collections.deque = collections.deque()
    outputs = []
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        delay = t0 + i / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if at and i in at:
            at[i]()
        tickets.append(backend.submit([frame]))
        if len(tickets) >= ahead:
            outputs += backend.collect(tickets.popleft())
    while tickets:
        outputs += backend.collect(tickets.popleft())
    return outputs


def test_two_batches_in_flight_each_frame_back_to_its_own_session_in_order():
    count = 40
    clip = demo_frames(count)
    frames = [[stamp(f if s == 0 else f[::-1].copy(), s, i) for i, f in enumerate(clip)] for s in (0, 1)]
    # The stabilizer off: a style without temporal state, whose sessions share batches (with it
    # on they never do: test_two_sessions_with_a_steadied_style_never_see_each_others_pictures).
    with InProcessServer(lambda s: PipelinedClassic(s, steady=False), STYLES["toon-comic"]) as server:
        a, b = client(server.url, "toon-comic"), client(server.url, "toon-comic")
        results: dict[int, list] = {}
        try:
            threads = [threading.Thread(target=lambda s=s, be=be: results.__setitem__(s, stream(be, frames[s])))
                       for s, be in ((0, a), (1, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=180)
            stats = [a.stats(), b.stats()]
        finally:
            a.close()
            b.close()
        hub = server.hub.stats()
        backend = server.backends[0]
    log = backend.log
    # The hub submitted the next batch before collecting the one in flight, over and over,
    # and never had more than the backend's two out.
    assert max(n for _, _, n in log) == 2
    overlapped = [i for i, (kind, _, n) in enumerate(log) if kind == "submit" and n == 2]
    assert len(overlapped) >= 10, log
    assert hub["max_inflight"] == 2
    submitted = [k for kind, k, _ in log if kind == "submit"]
    collected = [k for kind, k, _ in log if kind == "collect"]
    assert collected == submitted  # collected in the order submitted, every one
    assert hub["shared_batches"] >= 5, hub  # and the two sessions still share batches
    assert sum(int(size) * n for size, n in hub["batch_sizes"].items()) == 2 * count
    for s in (0, 1):
        st = stats[s]
        assert st["frames_local"] == 0 and st["frames_lost"] == 0 and st["out_of_order"] == 0, st
        outs = results[s]
        assert [read_stamp(o) for o in outs] == [(s, i) for i in range(count)]
        # Painted, not passed through: a comic is far from the input, the codec is not.
        reference = ClassicBackend(workers=1, steady=False)
        reference.set_style(STYLES["toon-comic"])
        try:
            painted = reference.process(frames[s])
        finally:
            reference.close()
        for i in range(4, count):
            assert mad(outs[i], painted[i]) < 0.6 * mad(frames[s][i], painted[i]), i


def test_pause_while_batches_are_in_flight_keeps_the_order():
    count = 45
    frames = [stamp(f, 0, i) for i, f in enumerate(demo_frames(count))]
    with InProcessServer(lambda s: PipelinedClassic(s, batch_size=1, min_batch_s=0.06),
                         STYLES["toon-comic"]) as server:
        session = client(server.url, "toon-comic")
        try:
            outs = stream(session, frames, at={12: lambda: session.set_paused(True),
                                               28: lambda: session.set_paused(False)})
            st = session.stats()
        finally:
            session.close()
        backend = server.backends[0]
    assert st["frames_local"] == 0 and st["frames_lost"] == 0 and st["out_of_order"] == 0, st
    assert [read_stamp(o) for o in outs] == [(0, i) for i in range(count)]
    assert max(n for _, _, n in backend.log) == 2
    unpainted = [mad(o, f) < 8 for o, f in zip(outs, frames)]
    assert not any(unpainted[2:10]), [round(mad(o, f), 1) for o, f in zip(outs, frames)]
    assert all(unpainted[18:24]), [round(mad(o, f), 1) for o, f in zip(outs, frames)]
    assert not any(unpainted[36:]), [round(mad(o, f), 1) for o, f in zip(outs, frames)]


def test_a_style_switch_with_batches_in_flight_applies_within_two_frames():
    count = 40
    switch = 16
    frames = demo_frames(count)
    with InProcessServer(lambda s: PipelinedClassic(s, batch_size=1), STYLES["toon-comic"]) as server:
        session = client(server.url, "toon-comic")
        try:
            outs = stream(session, frames, at={switch: lambda: session.set_style(STYLES["sketch"])})
            st = session.stats()
        finally:
            session.close()
        backend = server.backends[0]
    assert st["frames_local"] == 0 and st["frames_lost"] == 0 and st["out_of_order"] == 0, st
    assert max(n for _, _, n in backend.log) == 2
    assert "sketch" in backend.styles_at_submit
    colour = min(saturation(o) for o in outs[:switch - 4])
    grey = [saturation(o) < 0.5 * colour for o in outs]  # pencil on paper is nearly grey
    first = grey.index(True)
    assert switch - 4 <= first <= switch + 1, [round(saturation(o), 1) for o in outs]
    assert all(grey[first:]), [round(saturation(o), 1) for o in outs]


def test_two_sessions_with_a_steadied_style_never_see_each_others_pictures():
    """Real peers, the stabilizer on, two batches in flight: session A sends a red texture,
    session B the same texture in green at the same luma (the stabilizer's change test sees no
    difference between them). Each gets back what it gets when it is the server's only session
    (the codec aside), and B's pictures never turn red, nor A's green."""
    from test_remote_streams import GREEN, RED, red_minus_green, tinted

    count = 24
    size = (320, 176)
    frames = {"a": tinted(RED, count, seed=1, size=size), "b": tinted(GREEN, count, seed=2, size=size)}
    with InProcessServer(lambda s: PipelinedClassic(s, min_batch_s=0.03), STYLES["oil"]) as server:
        alone = {}
        for sid in frames:  # one after the other: each the only session
            session = client(server.url, "oil")
            try:
                alone[sid] = stream(session, frames[sid])
            finally:
                session.close()
        both: dict[str, list] = {}
        sessions = {sid: client(server.url, "oil") for sid in frames}
        try:
            threads = [threading.Thread(target=lambda sid=sid: both.__setitem__(sid, stream(sessions[sid],
                                                                                          frames[sid])))
                       for sid in frames]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=180)
            stats = {sid: s.stats() for sid, s in sessions.items()}
        finally:
            for s in sessions.values():
                s.close()
        hub = server.hub.stats()
        backend = server.backends[0]
    assert backend.log and max(n for _, _, n in backend.log) == 2, "no batch was ever in flight beside another"
    for sid in frames:
        st = stats[sid]
        assert st["frames_local"] == 0 and st["frames_lost"] == 0 and st["out_of_order"] == 0, st
    colour = {sid: [red_minus_green(o) for o in outs] for sid, outs in alone.items()}
    assert min(colour["a"]) > 50 and max(colour["b"]) < -30, colour
    for sid in frames:
        got = [red_minus_green(o) for o in both[sid]]
        lo, hi = min(colour[sid]) - 6, max(colour[sid]) + 6  # the codec's margin
        assert all(lo <= c <= hi for c in got), (sid, got, colour[sid])
        diffs = [round(mad(o, ref), 2) for o, ref in zip(both[sid], alone[sid])]
        assert max(diffs) < 6, (sid, diffs)
    assert hub["shared_batches"] == 0, hub
