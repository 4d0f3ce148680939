"""A wrapper around a backend hides nothing of it (``core.stylize.base.BackendWrapper``).

The tray app paints through two wrappers (the strength blend, the worker's failure tracking);
whatever the backend under them can do must pass through: two batches in flight, just-in-time
submits, and its temporal state moving between streams. Real parts: the classic stylizer with
its stabilizer on.
"""

from __future__ import annotations

import cv2
import numpy as np

from stylecam.core.styles import load_styles
from stylecam.core.stylize.base import Backend, BackendWrapper
from stylecam.core.stylize.classic import ClassicBackend
from stylecam.core.stylize.strength import StrengthBackend

STYLES, _ = load_styles()


def frames(seed: int, count: int = 6, size=(96, 64)) -> list[np.ndarray]:
    """A static texture with a little camera noise per frame (what the stabilizer steadies)."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((h, w, 3), dtype=np.float32), (0, 0), 2.0)
    base = cv2.normalize(base, None, 40.0, 220.0, cv2.NORM_MINMAX)
    return [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def test_the_wrapper_passes_every_part_of_the_backend_contract_through():
    # A method added to Backend and not here would silently take Backend's default in the tray.
    public = {n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")}
    assert public, "Backend has no public methods?"
    missing = sorted(n for n in public if n not in vars(BackendWrapper))
    assert not missing, f"BackendWrapper does not pass through: {missing}"
    assert issubclass(StrengthBackend, BackendWrapper)


def test_a_stream_moved_through_the_strength_wrapper_continues_from_its_own_frames():
    style = STYLES["oil"]
    a, b = frames(1), frames(2)

    alone = ClassicBackend(workers=1)
    alone.set_style(style)
    assert alone.temporal(style)
    ref = [alone.process([f])[0] for f in a]

    wrapped = StrengthBackend(ClassicBackend(workers=1), lambda name: 1.0)
    wrapped.set_style(style)
    assert wrapped.temporal(style)
    out = [wrapped.process([f])[0] for f in a[:3]]
    state_a = wrapped.detach_temporal()
    assert state_a is not None  # the stabilizer's state, not a reset
    for f in b:  # another stream in between
        wrapped.process([f])
    wrapped.detach_temporal()
    wrapped.attach_temporal(state_a)
    out += [wrapped.process([f])[0] for f in a[3:]]
    for i, (o, r) in enumerate(zip(out, ref)):
        assert np.array_equal(o, r), (i, float(np.abs(o.astype(int) - r).mean()))
    # A fresh start (what detaching used to do through the wrapper) paints frame 3 differently.
    fresh = ClassicBackend(workers=1)
    fresh.set_style(style)
    assert not np.array_equal(fresh.process([a[3]])[0], ref[3])
    for be in (alone, wrapped, fresh):
        be.close()
