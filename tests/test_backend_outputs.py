"""A backend never writes into an output it returned (``core.stylize.base.Backend``'s contract).

The sinks rely on it: the virtual camera's pacer sends the newest frame later from its own
thread without copying it, and the preview, MJPEG and recording keep references. A backend
that blended the next frame into the last output in place, or handed out a buffer it reuses,
would change pictures already sent. Each kind of backend runs a short stream here, with batches
in flight where it keeps them, and every output must still hold what it held when it came back.
Real parts: the classic styles with their stabilizer, a neural style from the package's network,
the diffusion engine on a tiny random-weight bundle, and the strength blend around one.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from stylecam.core.styles import Style, load_styles
from stylecam.core.stylize.classic import ClassicBackend
from stylecam.core.stylize.diffusion import DiffusionBackend
from stylecam.core.stylize.neural import NeuralBackend
from stylecam.core.stylize.strength import StrengthBackend
from tiny import tiny_bundle

STYLES, _ = load_styles()
DIFFUSION = {"prompt": "an oil painting", "instruction": "turn it into an oil painting", "seed": 3,
             "feedback": 0.35, "feedback_warp": True}

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_frames(count: int = 7, size=(64, 48)) -> list[np.ndarray]:
    """A textured picture sliding one pixel a frame (so stabilizers and feedback have work)."""
    w, h = size
    rng = np.random.default_rng(5)
    wide = rng.integers(0, 256, (h, w + count, 3), dtype=np.uint8)
    return [np.ascontiguousarray(wide[:, i:i + w]) for i in range(count)]


def outputs_stay_as_returned(backend, frames, batch: int, inflight: int | None = None) -> int:
    """Run ``frames`` through ``backend`` in batches of ``batch`` with up to ``inflight`` (default
    its ``max_inflight``) out at once; assert that no output changed after it came back. Returns
    how many outputs."""
    kept = []  # (output as returned, a copy made when it came back)
    pending = collections.deque()
    inflight = inflight or max(1, getattr(backend, "max_inflight", 1))
    for start in range(0, len(frames), batch):
        pending.append(backend.submit(frames[start:start + batch]))
        while len(pending) >= inflight:
            kept += [(o, o.copy()) for o in backend.collect(pending.popleft())]
    while pending:
        kept += [(o, o.copy()) for o in backend.collect(pending.popleft())]
    changed = [i for i, (o, snap) in enumerate(kept) if not np.array_equal(o, snap)]
    assert not changed, f"{backend.name} wrote into outputs {changed} after returning them"
    return len(kept)


@pytest.mark.parametrize("name", [n for n, s in STYLES.items() if s.backend == "classic"])
def test_classic_styles_leave_their_outputs_alone(name):
    backend = ClassicBackend(workers=1)
    backend.set_style(STYLES[name])
    try:
        assert outputs_stay_as_returned(backend, moving_frames(), batch=2) == 7
    finally:
        backend.close()


def test_a_neural_style_leaves_its_outputs_alone():
    backend = NeuralBackend(device="cpu")
    backend.set_style(STYLES["neural-starry-blue"])
    try:
        assert outputs_stay_as_returned(backend, moving_frames(), batch=2) == 7
    finally:
        backend.close()


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_the_diffusion_engine_with_two_batches_in_flight_leaves_its_outputs_alone(strength):
    # Feedback keeps the last output to blend with: it must keep its own copy, on the device.
    # Two in flight as on CUDA (the engine keeps two slots on any device; the backend asks for
    # one on the CPU, where nothing overlaps).
    inner = DiffusionBackend(tiny_bundle("sd-turbo"), "cpu", batch_size=2)
    backend = StrengthBackend(inner, lambda name: strength)
    backend.set_style(Style("ai-test", "diffusion", params=DIFFUSION))
    try:
        assert outputs_stay_as_returned(backend, moving_frames(), batch=2, inflight=2) == 7
    finally:
        backend.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_outputs_are_lent_pinned_views_that_stay_as_returned():
    # On CUDA the frames are views of the engine's pinned buffers (no copy on the runner's
    # thread): a buffer must never be written while a frame of it is still held.
    frames = moving_frames(count=15, size=(96, 64))
    for keep_all in (True, False):
        backend = DiffusionBackend(tiny_bundle("sd-turbo"), "cuda", batch_size=2)
        backend.set_style(Style("ai-test", "diffusion", params=DIFFUSION))
        try:
            assert backend.max_inflight == 2
            if keep_all:  # past the pool's limit the batches are copied out, still unchanged
                assert outputs_stay_as_returned(backend, frames * 2, batch=2) == 30
                continue
            # As a virtual camera keeps them (the newest only): the pool never grows, and the
            # frames are views of its pinned buffers.
            pending, newest = collections.deque(), None
            for start in range(0, len(frames) * 2, 2):
                pending.append(backend.submit((frames * 2)[start:start + 2]))
                while len(pending) >= 2:
                    for out in backend.collect(pending.popleft()):
                        newest = out
            pool = backend._engine._host_out  # made for the frames' size at the first batch
            assert len(pool) == backend._engine.SLOTS + 1
            assert any(np.shares_memory(newest, b.tensor.numpy()) for b in pool._buffers)
            assert newest.base is not None  # a view, not a copy
        finally:
            backend.close()
