"""``stylecam serve``'s hub keeps each caller's temporal state to that caller.

Real backends (the classic stylizer with its stabilizer on, a tiny diffusion bundle whose style
has feedback on), the hub driven directly: two sessions send constant pictures that only a
leak would mix, and each session's frames must come back exactly as when it runs alone. Session
A's picture is a red texture, session B's the same texture in green at the same luma: the
classic stabilizer tests only the luma for change, so the old hub, which mixed the two
sessions' frames in one batch through one stabilizer, painted B's frames 70 % red. For the
diffusion feedback (which blends whatever came before) A is bright and B dark.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from stylecam.core.remote.hub import Hub
from stylecam.core.runner import start_backend
from stylecam.core.styles import Style, load_styles
from stylecam.core.stylize.base import Backend, BackendError
from stylecam.core.stylize.classic import ClassicBackend

STYLES, _ = load_styles()
SIZE = (160, 96)  # (W, H): a multiple of 16, so the hub's engine size keeps it as it is
COUNT = 12  # frames per session


def texture(size=SIZE, seed: int = 7) -> np.ndarray:
    """A static texture in [0.55, 1] (float32 (H, W)): something for the flow and the paint."""
    w, h = size
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w), dtype=np.float32), (0, 0), 3.0)
    noise = cv2.normalize(noise, None, 0.0, 1.0, cv2.NORM_MINMAX)
    return 0.55 + 0.45 * noise


def tinted(rgb: tuple[int, int, int], count: int = COUNT, seed: int = 0, size=SIZE) -> list[np.ndarray]:
    """``count`` frames of the texture in colour ``rgb``, each with a little noise of its own (a
    camera's), so that a steadied frame differs from the frame painted as it is."""
    base = texture(size)[..., None] * np.array(rgb, np.float32)
    rng = np.random.default_rng(seed)
    return [np.clip(np.round(base + rng.normal(0, 4, base.shape[:2])[..., None]), 0, 255).astype(np.uint8)
            for _ in range(count)]


def constant(level: int, count: int) -> list[np.ndarray]:
    return [np.full((SIZE[1], SIZE[0], 3), level, np.uint8)] * count


def luma(rgb) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


RED, GREEN = (200, 110, 110), (95, 160, 140)  # luma 136.9 and 138.3: one level and a half apart


def red_minus_green(img: np.ndarray) -> float:
    return float(img[..., 0].astype(np.float32).mean() - img[..., 1].astype(np.float32).mean())


def share_of(out: np.ndarray, own: np.ndarray, other: np.ndarray) -> float:
    """How much of ``other`` shows in ``out`` over ``own``: the least-squares weight ``w`` in
    ``out ~ own + w * (other - own)`` (0: none of it, 0.5: a half-and-half blend)."""
    d = other.astype(np.float64) - own
    return float(((out.astype(np.float64) - own) * d).sum() / max(1e-9, (d * d).sum()))


class Collector:
    """Each session's outputs in arrival order; ``wait`` until every session has ``n``."""

    def __init__(self):
        self.out: dict[str, list[np.ndarray]] = {}
        self.tags: dict[str, list] = {}
        self.cond = threading.Condition()

    def deliver(self, sid: str):
        def fn(image, tag):
            with self.cond:
                self.out.setdefault(sid, []).append(image.copy())
                self.tags.setdefault(sid, []).append(tag)
                self.cond.notify_all()
        return fn

    def wait(self, sids, n: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while any(len(self.out.get(s, [])) < n for s in sids):
                left = deadline - time.monotonic()
                assert left > 0, {s: len(self.out.get(s, [])) for s in sids}
                self.cond.wait(left)


def run_hub(factory, style: Style, pictures: dict[str, list[np.ndarray]]) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Sessions ``pictures`` (sid -> its frames) on one hub, taking turns frame by frame (their
    frames wait together in the hub, so a hub that mixed them would); returns each session's
    outputs and the hub's counters."""
    count = len(next(iter(pictures.values())))
    hub = Hub(factory, gather=0.05)
    hub.start(style, timeout=300)
    got = Collector()
    try:
        for sid in pictures:
            hub.add(sid, style, got.deliver(sid), depth=16)  # the largest slot: nothing dropped
        for i in range(count):
            for sid, frames in pictures.items():
                hub.put(sid, frames[i], i)
        got.wait(list(pictures), count)
        stats = hub.stats()
    finally:
        hub.close()
    for sid in pictures:
        assert got.tags[sid] == list(range(count)), got.tags[sid]  # all back, in order
    return got.out, stats


def assert_sessions_paint_as_alone(factory, style, pictures: dict) -> None:
    """Sessions served together through one hub get exactly what each gets served alone, and a
    temporal style never shares a batch between them."""
    alone = {sid: run_hub(factory, style, {sid: frames})[0][sid] for sid, frames in pictures.items()}
    both, stats = run_hub(factory, style, pictures)
    for sid in pictures:
        for i, (o, ref) in enumerate(zip(both[sid], alone[sid])):
            diff = np.abs(o.astype(np.int16) - ref)
            assert np.array_equal(o, ref), (sid, i, int(diff.max()), float(diff.mean()))
    assert stats["shared_batches"] == 0, stats


# --------------------------------------------------------------------------------------------
# The classic stylizer, its stabilizer on


def classic_factory(style: Style) -> Backend:
    return start_backend(style, 2)


def test_classic_stabilizer_state_stays_with_its_own_session():
    style = STYLES["oil"]  # steady 0.7
    assert abs(luma(RED) - luma(GREEN)) < 2
    pictures = {"a": tinted(RED, seed=1), "b": tinted(GREEN, seed=2)}
    alone = {sid: run_hub(classic_factory, style, {sid: pic})[0][sid] for sid, pic in pictures.items()}
    both, stats = run_hub(classic_factory, style, pictures)
    # The colour each session gets alone; with the two streams through one stabilizer, B's
    # green frames came back red where A's came first (and A's green after B's).
    ra = [red_minus_green(o) for o in alone["a"]]
    rb = [red_minus_green(o) for o in alone["b"]]
    assert min(ra) > 60 and max(rb) < -40, (ra, rb)
    for o in both["b"]:
        assert min(rb) - 1 <= red_minus_green(o) <= max(rb) + 1, ([red_minus_green(x) for x in both["b"]], rb)
    for o in both["a"]:
        assert min(ra) - 1 <= red_minus_green(o) <= max(ra) + 1, ([red_minus_green(x) for x in both["a"]], ra)
    # Not only the colour: every frame is the very frame the session gets alone.
    for sid in pictures:
        for i, (o, ref) in enumerate(zip(both[sid], alone[sid])):
            assert np.array_equal(o, ref), (sid, i, float(np.abs(o.astype(int) - ref).mean()))
    assert stats["shared_batches"] == 0, stats  # a temporal style: each batch is one session's
    assert stats["max_batch"] == 2, stats  # and a session's waiting frames still share one


class PipelinedClassic(Backend):
    """The classic stylizer behind an asynchronous ``submit`` (a worker thread paints while the
    hub goes on, as a GPU does), two batches in flight. Its temporal state moves in turn on the
    worker: ``detach_temporal`` returns a future of it, which the worker has resolved by the
    time a later ``attach_temporal`` runs there, so the swap follows submit order."""

    name = "pipelined-classic"
    max_inflight = 2

    def __init__(self, style: Style):
        self.inner = ClassicBackend(workers=1)
        self.inner.set_style(style)
        self.batch_size = 2
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-gpu")
        self.inflight = 0
        self.max_seen = 0

    def temporal(self, style):
        return self.inner.temporal(style)

    def set_style(self, style):
        if style.backend != "classic":
            raise BackendError(f"style {style.name!r} is not a classic style")
        self._worker.submit(self.inner.set_style, style)

    def detach_temporal(self):
        return self._worker.submit(self.inner.detach_temporal)

    def attach_temporal(self, state):
        self._worker.submit(lambda: self.inner.attach_temporal(None if state is None else state.result()))

    def reset_temporal(self):
        self._worker.submit(self.inner.reset_temporal)

    def _paint(self, images):
        time.sleep(0.02)  # a batch takes a while: the next one is submitted before it is back
        return self.inner.process(images)

    def submit(self, images):
        self.inflight += 1
        self.max_seen = max(self.max_seen, self.inflight)
        return self._worker.submit(self._paint, list(images))

    def collect(self, ticket):
        out = ticket.result()
        self.inflight -= 1
        return out

    def close(self):
        self._worker.shutdown(wait=True)
        self.inner.close()


def test_state_swaps_follow_submit_order_with_batches_in_flight():
    style = STYLES["toon"]  # steady 0.95
    pictures = {"a": tinted(RED, seed=1), "b": tinted(GREEN, seed=2)}
    made: list[PipelinedClassic] = []

    def factory(s):
        made.append(PipelinedClassic(s))
        return made[-1]

    alone = {sid: run_hub(factory, style, {sid: pic})[0][sid] for sid, pic in pictures.items()}
    both, stats = run_hub(factory, style, pictures)
    assert made[-1].max_seen == 2 and stats["max_inflight"] == 2, stats  # swaps with a batch out
    assert stats["shared_batches"] == 0, stats
    for sid in pictures:
        for i, (o, ref) in enumerate(zip(both[sid], alone[sid])):
            assert np.array_equal(o, ref), (sid, i, float(np.abs(o.astype(int) - ref).mean()))


def test_a_session_that_pauses_starts_its_steadying_afresh_and_another_keeps_its_own():
    """A pause is a break in the stream: the session's state starts afresh (as ``stylecam run``
    resets it), while the other session's stream goes on untouched."""
    style = STYLES["oil"]
    a, b = tinted(RED, 8, seed=1), tinted(GREEN, 4, seed=2)
    # B alone: its first frame is painted as is, the following ones are steadied.
    alone_b = run_hub(classic_factory, style, {"b": b})[0]["b"]
    unsteady = ClassicBackend(workers=1, steady=False)
    unsteady.set_style(style)
    try:
        assert np.array_equal(alone_b[0], unsteady.process([b[0]])[0])
        assert not np.array_equal(alone_b[3], unsteady.process([b[3]])[0])
    finally:
        unsteady.close()
    hub = Hub(classic_factory, gather=0.0)
    hub.start(style, timeout=120)
    got = Collector()
    try:
        hub.add("a", style, got.deliver("a"), depth=16)
        hub.add("b", style, got.deliver("b"), depth=16)
        for i in range(4):
            hub.put("b", b[i], i)
            hub.put("a", a[i], i)
        got.wait(["a", "b"], 4)
        hub.set_paused("b", True)
        hub.set_paused("b", False)
        for i in range(4, 8):  # B sends its four frames again
            hub.put("b", b[i - 4], i)
            hub.put("a", a[i], i)
        got.wait(["a", "b"], 8)
    finally:
        hub.close()
    # B after the pause: the same four frames as B's first four (a fresh stream).
    for i in range(4):
        assert np.array_equal(got.out["b"][4 + i], alone_b[i]), i
    # A never paused: its eight frames are A's stream alone.
    alone_a = run_hub(classic_factory, style, {"a": a})[0]["a"]
    for i in range(8):
        assert np.array_equal(got.out["a"][i], alone_a[i]), i


def test_styles_without_temporal_state_still_share_batches():
    flat = Style("oil-flat", "classic", {**STYLES["oil"].params, "steady": 0.0})
    assert not ClassicBackend().temporal(flat) and ClassicBackend().temporal(STYLES["oil"])
    assert not ClassicBackend(steady=False).temporal(STYLES["oil"])
    pictures = {"a": tinted(RED, seed=1), "b": tinted(GREEN, seed=2)}
    both, stats = run_hub(classic_factory, flat, pictures)
    assert stats["shared_batches"] >= 3, stats
    reference = ClassicBackend(workers=1)
    reference.set_style(flat)
    try:
        for sid, frames in pictures.items():
            assert all(np.array_equal(o, reference.process([f])[0]) for o, f in zip(both[sid], frames)), sid
    finally:
        reference.close()


# --------------------------------------------------------------------------------------------
# The diffusion engine's feedback


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from stylecam.core.stylize import bundle as B

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return B.write_tiny_bundle("sd-turbo", tmp_path_factory.mktemp("tiny") / "sd-turbo")


def feedback_style(warp: bool) -> Style:
    params = {**STYLES["ai-oil"].params, "feedback": 0.5, "feedback_warp": warp}
    return Style("ai-oil-test-steady", "diffusion", params)


def diffusion_factory(folder, inflight: int):
    def make(style):
        backend = start_backend(style, 2, bundle=str(folder))
        # Two batches in flight, as on a GPU (the CPU engine runs each at submit, in turn).
        backend.max_inflight = inflight
        return backend
    return make


@pytest.mark.parametrize("warp", [False, True], ids=["feedback", "feedback-warp"])
def test_diffusion_feedback_stays_with_its_own_session(tiny_bundle, monkeypatch, warp):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    style = feedback_style(warp)
    factory = diffusion_factory(tiny_bundle, 2)
    pictures = {"a": constant(225, 8), "b": constant(25, 8)}
    alone = {sid: run_hub(factory, style, {sid: pic})[0][sid] for sid, pic in pictures.items()}
    both, stats = run_hub(factory, style, pictures)
    # The tiny random model paints the bright and the dark picture apart (its own noise over
    # both): a leaked previous output would put some of the other's painting into each frame.
    assert float(np.abs(alone["a"][0].astype(np.int16) - alone["b"][0]).mean()) > 5
    for sid, other in (("a", "b"), ("b", "a")):
        shares = [share_of(o, alone[sid][i], alone[other][i]) for i, o in enumerate(both[sid])]
        assert all(abs(x) < 0.02 for x in shares), (sid, shares)
        for i, (o, ref) in enumerate(zip(both[sid], alone[sid])):
            assert np.abs(o.astype(np.int16) - ref).max() <= 1, (sid, i)
    assert stats["shared_batches"] == 0 and stats["max_inflight"] == 2, stats


def test_the_diffusion_engine_says_which_styles_keep_state(tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = start_backend(STYLES["ai-oil"], 2, bundle=str(tiny_bundle))
    try:
        assert not backend.temporal(STYLES["ai-oil"])  # CLIP text once per prompt, no feedback
        assert backend.temporal(feedback_style(False))
        assert backend.temporal(STYLES["ai-oil-steady"])
        skip = Style("ai-oil-skip", "diffusion", {**STYLES["ai-oil"].params, "skip_threshold": 2.0})
        assert backend.temporal(skip)  # a skipped batch repeats the last output
    finally:
        backend.close()


def test_a_non_temporal_diffusion_style_still_shares_batches(tiny_bundle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    factory = diffusion_factory(tiny_bundle, 2)
    _, stats = run_hub(factory, STYLES["ai-oil"], {"a": constant(225, 6), "b": constant(25, 6)})
    assert stats["shared_batches"] >= 2, stats


def test_a_reused_vision_and_lllite_conditioning_stays_with_its_own_session():
    """The paper's regime: Qwen3-VL looks at the frames and LLLite's control CNNs read them,
    each refreshed every second batch and reused in between. The reused conditioning is made
    from a session's own frames only: each session's frames come back exactly as alone (the hub
    before the swap painted B's frames with A's conditioning, 15 levels off from the first)."""
    from stylecam.core.stylize import bundle as B

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        tiny = B.build_tiny_bundle("mllm-edit", lllite=True)
    style = Style("ai-edit-refresh", "diffusion", {**STYLES["ai-edit-oil"].params, "refresh": 2, "lllite_refresh": 2})
    # One frame a batch: a refresh every second batch is then every second frame of a session,
    # alone or not (with larger batches the grouping, not only the session, would decide it).
    factory = lambda s: start_backend(s, 1, bundle=tiny)  # noqa: E731
    w, h = tiny.manifest.size
    rng = np.random.default_rng(3)
    pictures = {"a": [rng.integers(150, 256, (h, w, 3), dtype=np.uint8) for _ in range(6)],
                "b": [rng.integers(0, 100, (h, w, 3), dtype=np.uint8) for _ in range(6)]}
    assert_sessions_paint_as_alone(factory, style, pictures)


def test_neural_stabilizer_state_stays_with_its_own_session():
    style = STYLES["neural-pastel-wash"]  # steady 0.9

    def factory(s):
        return start_backend(s, 1, device="cpu")

    pictures = {"a": tinted(RED, 6, seed=1), "b": tinted(GREEN, 6, seed=2)}
    assert_sessions_paint_as_alone(factory, style, pictures)
