"""The emit work-around: a stream's worth of signals leaves True's reference count intact."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from stylecam.desktop.qtcompat import EMIT_DROPS_TRUE, emit


class Emitter(QObject):
    ticked = Signal(dict)


def test_many_emits_keep_true_alive(qapp):
    source = Emitter()
    got = []
    source.ticked.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(2000):  # about 80 s of frames at 24 fps
        emit(source.ticked, {"i": i, "paused": False})
    assert len(got) == 2000
    del got
    assert abs(sys.getrefcount(True) - before) < 50, (EMIT_DROPS_TRUE, before, sys.getrefcount(True))
