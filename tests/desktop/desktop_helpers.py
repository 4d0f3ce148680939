"""Helpers shared by the desktop tests (imported by name: tests/desktop is on sys.path)."""

from __future__ import annotations

import numpy as np

from stylecam.core.frames import fit
from stylecam.core.sources import PatternSource

#: Small frames keep the classic filters fast on two cores.
SIZE = (160, 120)


def next_pair(qtbot, app, predicate=lambda p: True, timeout=5000):
    """Wait for a frame pair the app shows that satisfies ``predicate``; return it."""
    found = []

    def check(pair):
        if predicate(pair):
            found.append(pair)
            return True
        return False

    with qtbot.waitSignal(app.frame_shown, timeout=timeout, check_params_cb=check):
        pass
    return found[0]


def pattern_frame(index: int, size=SIZE) -> np.ndarray:
    """The pattern source's frame ``index`` as the stylizer sees it."""
    source = PatternSource(size=size, realtime=False)
    for _ in range(index):
        source.read()
    return fit(source.read(), size)
